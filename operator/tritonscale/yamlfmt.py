"""YAML output people read: no anchors, multi-line strings as literal blocks, keys in order."""

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
