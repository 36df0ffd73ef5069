"""Manifests read as kubectl reads them (sigs.k8s.io/yaml: go-yaml v2 into JSON), and strings
written so that either reader takes them back as strings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tritonscale.yamlfmt import dump, load_all_manifests

# What go-yaml v2 makes of a plain scalar (resolve.go), as kubectl sends it on.
KUBECTL_READS: list[tuple[str, Any]] = [
    ("12:30", "12:30"),  # no base 60 (PyYAML: 750)
    ("2024-01-01", "2024-01-01"),  # a timestamp into JSON stays as written (PyYAML: a date)
    ("y", True),  # PyYAML: "y"
    ("N", False),
    ("on", True),
    ("1e3", 1000.0),  # PyYAML: "1e3"
    ("08", 8.0),  # not octal, so its float pattern (PyYAML: "08")
    ("0o17", 15),  # Go's ParseInt with base 0 (PyYAML: "0o17")
    ("017", 15),
    ("-017", -15),
    ("1_000", 1000),
    ("0x1F", 31),
    ("0b101", 5),
    ("+5", 5),
    (".5", 0.5),
    ("=", "="),  # PyYAML: refused (its `value` tag)
    ("~", None),
    ("", None),
    ("0b", "0b"),
    ("plain", "plain"),
]


@pytest.mark.parametrize(("written", "read"), KUBECTL_READS)
def test_a_plain_scalar_is_read_as_kubectl_reads_it(written: str, read: Any) -> None:
    (document,) = load_all_manifests(f"value: {written}\n")
    assert document["value"] == read and type(document["value"]) is type(read)


@pytest.mark.parametrize("written", [".inf", "-.Inf", "+.INF", ".nan", ".NaN"])
def test_infinity_and_nan_are_refused_as_kubectl_refuses_them(written: str) -> None:
    """go-yaml reads them as floats and JSON has none such, so kubectl fails on them; quoted,
    they are strings."""
    with pytest.raises(yaml.YAMLError, match=r"(?s)JSON cannot hold .*line 2, column 10"):
        load_all_manifests(f"spec:\n  value: {written}\n")
    assert load_all_manifests(f"value: '{written}'\n") == [{"value": written}]


def test_keys_are_strings_as_in_json_and_do_not_collide() -> None:
    """`yes:` and `1:` are two keys to kubectl ("true" and "1"); in a Python dict True and 1
    would be one."""
    (document,) = load_all_manifests("yes: a\n1: b\nn: c\nbase: &b {k: v}\nmerged: {<<: *b, j: 2}\n")
    assert document == {"true": "a", "1": "b", "false": "c", "base": {"k": "v"}, "merged": {"k": "v", "j": 2}}


@pytest.mark.parametrize("written", [w for w, _ in KUBECTL_READS if w])
def test_every_string_is_written_so_that_both_readers_read_it_back(written: str) -> None:
    """Quoted where kubectl or PyYAML would take it for another type (y, 1e3, 12:30, ...)."""
    text = dump({"value": written})
    assert load_all_manifests(text) == [{"value": written}]
    assert yaml.safe_load(text) == {"value": written}


def test_strings_both_readers_agree_on_stay_plain() -> None:
    assert dump({"value": "plain", "image": "nvcr.io/nvidia/tritonserver:24.08-py3"}) == (
        "value: plain\nimage: nvcr.io/nvidia/tritonserver:24.08-py3\n"
    )
