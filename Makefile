.PHONY: test unit demo crd golden

# Every tier, with all set-up on a fresh machine (what CI runs).
test:
	scripts/test.sh

# The fast tier only.
unit:
	TIERS=unit scripts/test.sh

# Regenerate the CRD from the models (and the chart's copy).
crd:
	.venv/bin/python -m tritonscale.api.crd > crds/inferenceservices.tritonscale.io.yaml
	mkdir -p charts/tritonscale/crds && cp crds/inferenceservices.tritonscale.io.yaml charts/tritonscale/crds/

# Rewrite the renderers' golden files after an intended change.
golden:
	UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py -q

# The main job: the whole product on this machine from real components (`tritonscale demo`).
# The first run builds the control plane (7-13 min on 2 cores) and downloads tritonserver; later
# runs reuse the cache. DEMO_FLAGS passes options, e.g. DEMO_FLAGS=--keep.
demo:
	scripts/bootstrap.sh
	.venv/bin/tritonscale demo --results demo-results $(DEMO_FLAGS)
