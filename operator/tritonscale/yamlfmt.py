"""YAML output people read (no anchors, multi-line strings as literal blocks, keys in order), and
manifests read as kubectl reads them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _ReadableDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ReadableDumper.add_representer(str, _represent_str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_ReadableDumper, sort_keys=False, width=120)


def dump_all(objects: Iterable[Any]) -> str:
    return yaml.dump_all(list(objects), Dumper=_ReadableDumper, sort_keys=False, width=120)


class _ManifestLoader(yaml.SafeLoader):
    """YAML 1.1 as kubectl reads it (sigs.k8s.io/yaml): an unquoted `12:30` or `2024-01-01`
    stays the string it is written as. PyYAML alone reads the first as the base-60 number 750
    and the second as a date, so a manifest kubectl applies would render otherwise here."""


def _as_written(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


def _number_unless_base60(tag: str) -> Any:
    construct = yaml.SafeLoader.yaml_constructors[tag]

    def number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        if ":" in str(node.value):
            return _as_written(loader, node)
        return construct(loader, node)

    return number


_ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", _as_written)
for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    _ManifestLoader.add_constructor(_tag, _number_unless_base60(_tag))


def load_all_manifests(text: str) -> list[Any]:
    """Every document in `text`, read as kubectl reads a manifest."""
    return list(yaml.load_all(text, Loader=_ManifestLoader))
