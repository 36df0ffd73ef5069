"""Where heavy, re-usable downloads and builds live (outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root: `$TRITONSCALE_CACHE`, else `~/.cache/tritonscale`.

    Subdirectories carry a version in their name so that a change of pinned
    version never reuses a stale build.
    """
    configured = os.environ.get("TRITONSCALE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "tritonscale"
