"""The options `run` and `render` share, so a rendered stack is the one the operator would
apply (in the same cluster domain, with the rules that let the operator's pods in)."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tritonscale.api.spec import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, LABEL_VALUE_PATTERN, is_label_key
from tritonscale.render.network import NetworkPolicyOptions

Command = TypeVar("Command", bound=Callable[..., Any])


def dns_subdomain(context: click.Context, parameter: click.Parameter, value: str) -> str:
    """A click callback: the value must be a DNS-1123 subdomain (a Kubernetes object name)."""
    if len(value) > 253 or not re.match(DNS_SUBDOMAIN_PATTERN, value):
        raise click.BadParameter(f"{value!r} is not a DNS name (lowercase letters, digits, '-' and '.')")
    return value


def _namespace(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is not None and (len(value) > 63 or not re.match(DNS_LABEL_PATTERN, value)):
        raise click.BadParameter(f"{value!r} is not a namespace name (a DNS label of at most 63 characters)")
    return value


def writable_output(context: click.Context, parameter: click.Parameter, value: Any) -> Any:
    """An output file's folder must exist and be writable before a long run, not after it
    ('-' is stdout where the option allows it). The path is taken as given, as it is written
    (no `~` expansion: the shell does that)."""
    if value is None or (str(value) == "-" and getattr(parameter.type, "allow_dash", False)):
        return value
    path = Path(value).absolute()
    if path.is_dir():
        raise click.BadParameter(f"{value} is a folder; give a file name")
    if not path.parent.is_dir():
        raise click.BadParameter(f"{value}: no folder {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise click.BadParameter(f"{value}: cannot write in {path.parent}")
    return value


cluster_domain_option = click.option(
    "--cluster-domain",
    default="cluster.local",
    show_default=True,
    callback=dns_subdomain,
    help="The cluster's DNS domain.",
)


def _labels(
    context: click.Context, parameter: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE options as (key, value) pairs, each a valid Kubernetes label."""
    pairs = []
    for value in values:
        key, equals, label = value.partition("=")
        if not equals or not is_label_key(key) or not re.match(LABEL_VALUE_PATTERN, label):
            raise click.BadParameter(f"{value!r} is not KEY=VALUE with a valid label key and value")
        pairs.append((key, label))
    return tuple(pairs)


def network_policy_options(command: Command) -> Command:
    """Adds --network-policies and where the operator's pods and the scrapers are; the command
    takes them as `network_options`, a `NetworkPolicyOptions`."""

    options = [
        click.option(
            "--network-policies",
            is_flag=True,
            help="Guard every InferenceService with NetworkPolicies: only its router reaches "
            "Triton, only the clients in spec.loadBalancing.router.clients (or its own namespace) "
            "reach the router. A service that declares clients is guarded either way; one serving "
            "variants always has its routers' control port guarded.",
        ),
        click.option(
            "--network-policy-operator-namespace",
            metavar="NS",
            callback=_namespace,
            help="Where the operator's pods run, so the policies let them read Triton pods and "
            "routers (the chart passes its release namespace). Unset: the operator runs outside "
            "the cluster.",
        ),
        click.option(
            "--network-policy-operator-label",
            "operator_labels",
            metavar="KEY=VALUE",
            multiple=True,
            callback=_labels,
            help="A label of the operator's pods (repeat for each).",
        ),
        click.option(
            "--network-policy-metrics-namespace-label",
            "metrics_namespace_labels",
            metavar="KEY=VALUE",
            multiple=True,
            callback=_labels,
            help="A label of the namespaces metrics may be scraped from (repeat; none: every namespace).",
        ),
    ]

    @functools.wraps(command)
    def wrapped(
        *args: Any,
        network_policies: bool,
        network_policy_operator_namespace: str | None,
        operator_labels: tuple[tuple[str, str], ...],
        metrics_namespace_labels: tuple[tuple[str, str], ...],
        **kwargs: Any,
    ) -> Any:
        network_options = NetworkPolicyOptions(
            enabled=network_policies,
            operator_namespace=network_policy_operator_namespace,
            operator_labels=operator_labels,
            metrics_namespace_labels=metrics_namespace_labels or None,
        )
        return command(*args, network_options=network_options, **kwargs)

    decorated: Any = wrapped
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
