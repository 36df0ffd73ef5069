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

# The main job: renders every example into the manifests the operator would apply.
demo:
	scripts/bootstrap.sh
	.venv/bin/tritonscale render $(patsubst %,-f %,$(wildcard examples/*.yaml))
