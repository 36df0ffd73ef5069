"""`tritonscale run`: the operator."""

from __future__ import annotations

import logging

import click

from tritonscale.cli.options import cluster_domain_option, dns_subdomain, network_policy_options
from tritonscale.clients.observations import prometheus_duration_s
from tritonscale.config import OperatorConfig
from tritonscale.render.network import NetworkPolicyOptions


def _duration(value: str) -> str:
    """A Prometheus duration, refused naming the option when it is not one."""
    try:
        prometheus_duration_s(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Watch this namespace (repeat for several). Default: every namespace.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True),
    help="Kubeconfig file. Default: in-cluster credentials in a pod, else $KUBECONFIG or ~/.kube/config.",
)
@click.option(
    "--prometheus-url",
    metavar="URL",
    help="Prometheus for InferenceServices whose spec names none (metrics.source auto/prometheus).",
)
@click.option(
    "--prometheus-ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="CA bundle (PEM) that an https Prometheus's certificate is verified against. Default: "
    "the system's CAs.",
)
@click.option(
    "--prometheus-window",
    default="1m",
    show_default=True,
    metavar="DURATION",
    callback=lambda context, parameter, value: _duration(value),
    help="PromQL range for rates; at least four scrape intervals.",
)
@cluster_domain_option
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"]),
    default="full",
    show_default=True,
    help="Log line format.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log more.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Prometheus /metrics port (0: off).",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Liveness /healthz port (0: off).",
)
@click.option(
    "--listen-address",
    default="0.0.0.0",
    show_default=True,
    help="Address the metrics and health servers bind: every IPv4 address by default; :: for IPv6.",
)
@click.option(
    "--read-triton-pods/--no-read-triton-pods",
    default=True,
    show_default=True,
    help="Let InferenceServices without Prometheus read statistics from each Triton pod directly "
    "(off where the operator cannot reach pod addresses).",
)
@click.option(
    "--read-routers/--no-read-routers",
    default=True,
    show_default=True,
    help="Read each autoscaled service's router pods (HAProxy's stats) every 2 s, so a surge is "
    "seen seconds after it starts rather than a metrics window later (off where the operator "
    "cannot reach pod addresses).",
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
@click.option(
    "--leader-election-namespace",
    metavar="NS",
    help="Run as one of several replicas: lead only while holding the leader Lease in this "
    "namespace, stand by otherwise. Default: no election (run one replica only).",
)
@click.option(
    "--leader-election-name",
    metavar="NAME",
    default=OperatorConfig.leader_election_name,
    show_default=True,
    callback=dns_subdomain,
    help="The leader Lease's name. Two operator deployments in one namespace need different "
    "names: on the same Lease only one of them would ever run.",
)
@network_policy_options
def run(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    prometheus_url: str | None,
    prometheus_ca_file: str | None,
    prometheus_window: str,
    cluster_domain: str,
    log_format: str,
    verbose: bool,
    metrics_port: int,
    health_port: int,
    listen_address: str,
    read_triton_pods: bool,
    read_routers: bool,
    reconcile_workers: int,
    autoscale_workers: int,
    leader_election_namespace: str | None,
    leader_election_name: str,
    network_options: NetworkPolicyOptions,
) -> None:
    """Run the operator until interrupted."""
    if metrics_port and metrics_port == health_port:
        raise click.BadParameter(
            f"--metrics-port and --health-port must differ (both are {metrics_port})",
            param_hint="--health-port",
        )
    import kopf

    from tritonscale.app import ListenError, run_operator
    from tritonscale.clients.kube import KubeconfigError

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()])
    if not verbose:
        # kopf logs every handler call at INFO: one line per watch event, thousands a minute
        # at a few hundred InferenceServices. Failures and retries still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        run_operator(
            OperatorConfig(
                namespaces=namespaces,
                kubeconfig=kubeconfig,
                prometheus_url=prometheus_url,
                prometheus_ca_file=prometheus_ca_file,
                prometheus_window=prometheus_window,
                cluster_domain=cluster_domain,
                metrics_port=metrics_port,
                health_port=health_port,
                listen_address=listen_address,
                read_triton_pods=read_triton_pods,
                read_routers=read_routers,
                reconcile_workers=reconcile_workers,
                autoscale_workers=autoscale_workers,
                leader_election_namespace=leader_election_namespace,
                leader_election_name=leader_election_name,
                network_policies=network_options,
            )
        )
    except ListenError as error:
        raise click.BadParameter(str(error), param_hint=error.flag) from None
    except KubeconfigError as error:
        raise click.ClickException(str(error)) from None
