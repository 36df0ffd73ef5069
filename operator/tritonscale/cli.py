"""`tritonscale`: run the operator, render manifests, bench a Triton endpoint, simulate autoscalers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from tritonscale import __version__
from tritonscale.api.resource import API_VERSION, KIND, InvalidInferenceService, parse_inference_service
from tritonscale.bench.command import bench
from tritonscale.config import OperatorConfig
from tritonscale.policy.placement import split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.render.stack import RenderOptions, render_stack
from tritonscale.simulate import simulate
from tritonscale.yamlfmt import dump_all

EXIT_INVALID = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tritonscale")
def main() -> None:
    """Tritonscale: latency-autoscaled NVIDIA Triton serving on Kubernetes."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"tritonscale {__version__}")


@main.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Watch this namespace (repeat for several). Default: every namespace.",
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file; in-cluster credentials otherwise."
)
@click.option(
    "--prometheus-url",
    metavar="URL",
    help="Prometheus for InferenceServices whose spec names none (metrics.source auto/prometheus).",
)
@click.option(
    "--prometheus-window",
    default="1m",
    show_default=True,
    metavar="DURATION",
    help="PromQL range for rates; at least four scrape intervals.",
)
@click.option(
    "--cluster-domain", default="cluster.local", show_default=True, help="The cluster's DNS domain."
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"]),
    default="full",
    show_default=True,
    help="Log line format.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log more.")
@click.option(
    "--metrics-port", type=int, default=8080, show_default=True, help="Prometheus /metrics port (0: off)."
)
@click.option(
    "--health-port", type=int, default=8081, show_default=True, help="Liveness /healthz port (0: off)."
)
@click.option(
    "--read-triton-pods/--no-read-triton-pods",
    default=True,
    show_default=True,
    help="Let InferenceServices without Prometheus read statistics from each Triton pod directly "
    "(off where the operator cannot reach pod addresses).",
)
@click.option(
    "--reconcile-workers",
    type=click.IntRange(1, 256),
    default=OperatorConfig.reconcile_workers,
    show_default=True,
    help="Threads that apply stacks (kopf's executor).",
)
@click.option(
    "--autoscale-workers",
    type=click.IntRange(1, 256),
    default=OperatorConfig.autoscale_workers,
    show_default=True,
    help="Threads that run autoscaling ticks, whatever the number of InferenceServices.",
)
def run(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    prometheus_url: str | None,
    prometheus_window: str,
    cluster_domain: str,
    log_format: str,
    verbose: bool,
    metrics_port: int,
    health_port: int,
    read_triton_pods: bool,
    reconcile_workers: int,
    autoscale_workers: int,
) -> None:
    """Run the operator until interrupted."""
    if metrics_port and metrics_port == health_port:
        raise click.BadParameter(
            f"--metrics-port and --health-port must differ (both are {metrics_port})",
            param_hint="--health-port",
        )
    import kopf

    from tritonscale.app import run_operator

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()])
    if not verbose:
        # kopf logs every handler call at INFO: one line per watch event, thousands a minute
        # at a few hundred InferenceServices. Failures and retries still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    run_operator(
        OperatorConfig(
            namespaces=namespaces,
            kubeconfig=kubeconfig,
            prometheus_url=prometheus_url,
            prometheus_window=prometheus_window,
            cluster_domain=cluster_domain,
            metrics_port=metrics_port,
            health_port=health_port,
            read_triton_pods=read_triton_pods,
            reconcile_workers=reconcile_workers,
            autoscale_workers=autoscale_workers,
        )
    )


def _documents(paths: tuple[str, ...]) -> Iterator[tuple[str, int, Any]]:
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise click.ClickException(f"{path}: not valid YAML: {error}") from error
        for index, document in enumerate(documents, start=1):
            if document is not None:
                yield path, index, document


@main.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    metavar="FILE",
    help="File with InferenceService documents ('-' for stdin); repeat for several.",
)
@click.option(
    "--cluster-domain", default="cluster.local", show_default=True, help="The cluster's DNS domain."
)
def render(paths: tuple[str, ...], cluster_domain: str) -> None:
    """Print every object the operator would create, as YAML, without a cluster.

    Problems are printed one per line, each starting with the field's dotted path, and the
    exit status is 2. Documents of other kinds are skipped.
    """
    for path in paths:
        if path != "-" and not Path(path).exists():
            raise click.BadParameter(f"no such file: {path}", param_hint="-f")
    options = RenderOptions(cluster_domain=cluster_domain)
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    for path, index, document in _documents(paths):
        if isinstance(document, dict) and (document.get("kind"), document.get("apiVersion")) != (
            KIND,
            API_VERSION,
        ):
            click.echo(f"# skipped {document.get('kind')} in {path} (document {index})", err=True)
            continue
        try:
            service = parse_inference_service(document)
        except InvalidInferenceService as invalid:
            problems += [f"{problem} ({path}, document {index})" for problem in invalid.problems]
            continue
        placement = split_replicas(reconciled_replicas(service), service.spec.capacity)
        objects += render_stack(service, placement, options)
    if problems:
        for line in problems:
            click.echo(line, err=True)
        sys.exit(EXIT_INVALID)
    click.echo(dump_all(objects), nl=False)


main.add_command(bench)
main.add_command(simulate)


if __name__ == "__main__":
    main()
