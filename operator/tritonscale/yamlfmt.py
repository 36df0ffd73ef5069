"""YAML output people read (no anchors, multi-line strings as literal blocks, keys in order), and
manifests read as kubectl reads them.

kubectl reads YAML with sigs.k8s.io/yaml (go-yaml v2 into JSON), which differs from PyYAML's
YAML 1.1: `y`/`n` are booleans, `1e3` and `08` numbers, `0o17` an integer, and `12:30` and
`2024-01-01` stay strings (PyYAML reads them as a base-60 number and a date). Both sides here
follow kubectl: manifests are read with its rules, and a string either reader would take for
something else is written quoted, so `tritonscale render | kubectl apply -f -` sends what was
rendered."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_TRUE = ("y", "yes", "true", "on")
# go-yaml v2's plain scalars other than strings, in the order it tries them (resolve.go): its
# table of booleans and nulls, an integer as Go's ParseInt reads it (base prefixes, a leading 0
# for octal, underscores dropped), then its float pattern.
_GO_RESOLVERS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    (_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ("~", "n", "N", "")),
    (
        _BOOL,
        re.compile(
            r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
        ),
        tuple("yYnNtTfFoO"),
    ),
    (
        _INT,
        re.compile(
            r"^[-+]?(?:0[bB]_*[01][01_]*|0[oO]_*[0-7][0-7_]*|0[xX]_*[0-9a-fA-F][0-9a-fA-F_]*|0[0-7_]*|[1-9][0-9_]*)$"
        ),
        tuple("-+0123456789"),
    ),
    (
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        tuple("-+.0123456789"),
    ),
)


class _ReadableDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ReadableDumper.add_representer(str, _represent_str)
# A string PyYAML's or kubectl's reader would take for another type is quoted: the dumper quotes
# what its resolvers resolve to something else, so it gets kubectl's besides its own.
for _tag, _pattern, _first in _GO_RESOLVERS:
    _ReadableDumper.add_implicit_resolver(_tag, _pattern, list(_first))


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_ReadableDumper, sort_keys=False, width=120)


def dump_all(objects: Iterable[Any]) -> str:
    return yaml.dump_all(list(objects), Dumper=_ReadableDumper, sort_keys=False, width=120)


class _ManifestLoader(yaml.SafeLoader):
    """A manifest read with kubectl's rules (module docstring)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Keys as JSON has them, as kubectl turns YAML into JSON (`yes:` is "true", `1:` "1"),
        made before they go into the mapping: in Python True and 1 are one key."""
        self.flatten_mapping(node)  # merge keys (`<<`), which go-yaml takes too
        return {
            _key(self.construct_object(key, deep=deep)): self.construct_object(value, deep=deep)
            for key, value in node.value
        }


# Only go-yaml's resolvers (and merge keys, which it takes too): no timestamps, no base 60, no
# `=`.
_ManifestLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _GO_RESOLVERS:
    _ManifestLoader.add_implicit_resolver(_tag, _pattern, list(_first))
_ManifestLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _go_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() in _TRUE


def _go_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        return int(text, 8)  # Go's leading-zero octal, which Python's base 0 refuses
    return int(text, 0)


def _go_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.lower().lstrip("+-") in (".inf", ".nan"):
        # go-yaml reads them as numbers that JSON cannot hold, so kubectl refuses the manifest.
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{text} is a number JSON cannot hold (kubectl refuses it too); quote it if it is a string",
            node.start_mark,
        )
    return float(text)


_ManifestLoader.add_constructor(_BOOL, _go_bool)
_ManifestLoader.add_constructor(_INT, _go_int)
_ManifestLoader.add_constructor(_FLOAT, _go_float)


def _key(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if key is None:
        return "null"
    return key


def load_all_manifests(text: str) -> list[Any]:
    """Every document in `text`, read as kubectl reads a manifest."""
    return list(yaml.load_all(text, Loader=_ManifestLoader))
