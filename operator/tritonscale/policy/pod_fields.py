"""The fields of a pod the stack's status and the spot drain read (reconcilers.stack and
policy.interruption), so that the pod watch can keep a settling stack's pods without keeping
whole pods: its name, labels and deletion, its node, and the scheduler's verdict.

Pure: pods come in as the API's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def stack_pod_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    """`pod` cut to what the stack reads; a reader of any other field must add it here."""
    metadata = pod.get("metadata") or {}
    kept_metadata = {key: metadata[key] for key in ("name", "labels", "deletionTimestamp") if key in metadata}
    scheduled = [
        dict(condition)
        for condition in (pod.get("status") or {}).get("conditions") or []
        if condition.get("type") == "PodScheduled"
    ]
    node = (pod.get("spec") or {}).get("nodeName")
    return {
        "metadata": kept_metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"conditions": scheduled},
    }
