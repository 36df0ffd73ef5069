"""`tritonscale render`: the objects the operator would create, without a cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from tritonscale.api.crd import spec_type_problems
from tritonscale.api.resource import (
    API_VERSION,
    GROUP,
    KIND,
    InvalidInferenceService,
    parse_inference_service,
)
from tritonscale.cli.options import cluster_domain_option, network_policy_options
from tritonscale.policy.placement import split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.render.network import NetworkPolicyOptions
from tritonscale.render.stack import RenderOptions, render_stack
from tritonscale.yamlfmt import dump_all, load_all_manifests

EXIT_INVALID = 2


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _files(paths: tuple[str, ...]) -> list[str]:
    """The files to read, a directory's manifests (*.yaml, *.yml, *.json) in name order, as
    `kubectl apply -f DIR` takes them."""
    files = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            found = sorted(
                str(f) for f in Path(path).iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file()
            )
            if not found:
                raise click.BadParameter(f"no .yaml, .yml or .json file in {path}", param_hint="-f")
            files += found
        elif path != "-" and not Path(path).exists():
            raise click.BadParameter(f"no such file: {path}", param_hint="-f")
        else:
            files.append(path)
    return files


def _documents(paths: list[str]) -> Iterator[tuple[str, str, Any]]:
    """(file, where in it: "3" or "3, item 2", document) for every document, a List's items each."""
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise click.BadParameter(f"cannot read {path}: {error}", param_hint="-f") from None
        try:
            documents = load_all_manifests(text)
        except yaml.YAMLError as error:
            raise click.ClickException(f"{path}: not valid YAML: {error}") from error
        for index, document in enumerate(documents, start=1):
            if (
                isinstance(document, dict)
                and document.get("kind") == "List"
                and document.get("apiVersion") == "v1"
            ):
                # What `kubectl get -o yaml` prints for several objects: each item in turn.
                for number, item in enumerate(document.get("items") or [], start=1):
                    if item is not None:
                        yield path, f"{index}, item {number}", item
            elif document is not None:
                yield path, str(index), document


def _without_nulls(value: Any) -> Any:
    """What the API server keeps of a manifest: a key set to null is left out (`kubectl apply`
    sends it as a removal), so its field takes the default."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _typed(wrong_types: list[tuple[str, str]]) -> list[str]:
    return [f"{field}: {message}" for field, message in wrong_types]


@click.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    metavar="FILE",
    help="File with InferenceService documents ('-' for stdin); repeat for several.",
)
@cluster_domain_option
@network_policy_options
def render(paths: tuple[str, ...], cluster_domain: str, network_options: NetworkPolicyOptions) -> None:
    """Print every object the operator would create, as YAML, without a cluster.

    The NetworkPolicy options are `tritonscale run`'s: give the chart's (its release namespace
    as --network-policy-operator-namespace) to see the policies its operator applies. The
    objects carry no owner references (the operator sets them to the InferenceService's uid).
    Problems are printed one per line, each starting with the field's dotted path, and the
    exit status is 2. A directory's .yaml, .yml and .json files are read in name order;
    documents of other kinds are skipped.
    """
    files = _files(paths)
    options = RenderOptions(cluster_domain=cluster_domain, network=network_options)
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    for path, index, document in _documents(files):
        if (
            isinstance(document, dict)
            and document.get("kind") == KIND
            and str(document.get("apiVersion")).startswith(f"{GROUP}/")
            and document.get("apiVersion") != API_VERSION
        ):
            # Ours, in a version the API server does not serve: kubectl would refuse it ("no
            # matches for kind"). Another group's InferenceService (KServe's) is not ours: skipped.
            problems.append(
                f"apiVersion: {document.get('apiVersion')!r} is not {API_VERSION} ({path}, document {index})"
            )
            continue
        if isinstance(document, dict) and (document.get("kind"), document.get("apiVersion")) != (
            KIND,
            API_VERSION,
        ):
            click.echo(
                f"# skipped {document.get('kind')} ({document.get('apiVersion')}) in {path} "
                f"(document {index}): not a {API_VERSION} {KIND}",
                err=True,
            )
            continue
        stored = _without_nulls(document)
        # The API server refuses a value of the wrong JSON type that the models would read
        # leniently ("3" for replicas): so does render, and says it once per field.
        wrong_types = spec_type_problems(stored) if isinstance(stored, dict) else []
        try:
            service = parse_inference_service(stored)
        except InvalidInferenceService as invalid:
            typed = {field for field, _ in wrong_types}
            found = [str(p) for p in invalid.problems if p.path not in typed]
            problems += [f"{line} ({path}, document {index})" for line in _typed(wrong_types) + found]
            continue
        if wrong_types:
            problems += [f"{line} ({path}, document {index})" for line in _typed(wrong_types)]
            continue
        placement = split_replicas(reconciled_replicas(service), service.spec.capacity)
        objects += render_stack(service, placement, options)
    if problems:
        for line in problems:
            click.echo(line, err=True)
        sys.exit(EXIT_INVALID)
    if not objects:
        raise click.ClickException(f"no {KIND} ({API_VERSION}) in {', '.join(files)}")
    click.echo(dump_all(objects), nl=False)
