"""Serving faster model variants next to the model (spec.model.variants).

Every Triton replica runs one tritonserver per variant besides the model's own, in the same
container (so they share its accelerator: a device is given to one container only), each
serving its variant under the model's name on its own ports (ports.variant_ports). Clients
change nothing: the routers send a share of the requests to the variant processes (render.router)
and the operator sets the shares at runtime (policy.variants).

A variant from spec.model.repository is served from a view made at start: a directory named as
the model whose version folders and files link to the variant's, and whose config.pbtxt is the
variant's with its top-level `name` line (one starting at the line's start, as Triton writes
it) removed: Triton then takes the name from the directory. That needs a
local repository; a variant in an object store comes from its own `repository`, which holds it
under the model's name already.
"""

from __future__ import annotations

import shlex
from typing import Final

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import ModelVariant
from tritonscale.ports import variant_ports

VIEW_ROOT: Final = "/tmp/tritonscale-variants"  # on the model-download emptyDir


def served_variants(service: InferenceService) -> tuple[ModelVariant, ...]:
    """The variants the replicas serve: those declared, when an accuracy budget lets them serve
    (the autoscaler decides their shares: without it, none are served)."""
    spec = service.spec
    if spec.autoscaling is None or not spec.autoscaling.enabled or spec.autoscaling.accuracy is None:
        return ()
    return tuple(spec.model.variants)


def variant_annotation(index: int) -> str:
    """The Triton pods' annotation naming the variant whose process serves metrics on port
    `v{index}-metrics`: the chart's PodMonitor labels those series `variant` with it, so they are
    told from the model's (all serve under the model's name)."""
    return f"tritonscale.io/variant-v{index}"


def variant_annotations(service: InferenceService) -> dict[str, str]:
    return {variant_annotation(index): variant.name for index, variant in enumerate(served_variants(service))}


def variant_repository(service: InferenceService, index: int) -> str:
    variant = service.spec.model.variants[index]
    return variant.repository or f"{VIEW_ROOT}/{index}"


def _view_commands(service: InferenceService, index: int) -> list[str]:
    """Shell lines that make variant `index`'s view under the model's name."""
    variant = service.spec.model.variants[index]
    if variant.repository is not None:
        return []
    source = f"{service.spec.model.repository.rstrip('/')}/{variant.name}"
    target = f"{VIEW_ROOT}/{index}/{service.spec.model.names[0]}"
    q = shlex.quote
    return [
        f"mkdir -p {q(target)}",
        f"for item in {q(source)}/*; do "
        f'[ "$(basename "$item")" = config.pbtxt ] || ln -sfn "$item" {q(target)}/; done',
        # Only the top-level name (at the line's start): inputs' and outputs' names stay.
        f"sed '/^name[[:space:]]*:/d' {q(source)}/config.pbtxt > {q(target)}/config.pbtxt",
    ]


def launcher_script(service: InferenceService, primary_args: list[str], variant_args: list[list[str]]) -> str:
    """A bash script that starts the model's tritonserver and one per variant, forwards SIGTERM
    to all of them, and exits (so the container restarts) as soon as any one exits."""
    q = shlex.join
    lines = ["set -u"]
    for index in range(len(variant_args)):
        lines += _view_commands(service, index)
    lines += [f"{q(primary_args)} & pids=$!"]
    lines += [f'{q(args)} & pids="$pids $!"' for args in variant_args]
    lines += [
        "trap 'kill -TERM $pids 2>/dev/null; wait' TERM INT",
        "wait -n",
        "status=$?",
        "kill -TERM $pids 2>/dev/null",
        "wait",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def variant_args(service: InferenceService, index: int, common: list[str]) -> list[str]:
    """tritonserver's command line for variant `index`: the model's flags on its own ports and
    repository."""
    http, grpc, metrics = variant_ports(index)
    return [
        "tritonserver",
        f"--model-repository={variant_repository(service, index)}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        # The Python backend's shared-memory regions are per process name; the processes of one
        # pod share /dev/shm.
        f"--backend-config=python,shm-region-prefix-name=tritonscale_variant{index}_",
        *common,
    ]
