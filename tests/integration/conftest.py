"""Fixtures for integration tests that run real tritonservers (see tritonscale_sandbox.triton)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonscale_sandbox.triton import (
    INSTANT_MODEL,
    IRIS_MODEL,
    SIMULATED_MODEL,
    TritonInstall,
    TritonPool,
    install_triton,
    model_repository,
)


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    """tritonserver 2.51 from the cache (scripts/install-triton.sh runs on first use)."""
    return install_triton()


@pytest.fixture(scope="session")
def triton_model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default test models: `simulated` (20 ms + 1 ms/item), `instant` (0 ms), `iris`."""
    return model_repository(tmp_path_factory.mktemp("triton-models"))


@pytest.fixture(scope="module")
def triton_pool(
    triton_install: TritonInstall, triton_model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonPool]:
    """Two ready tritonservers on a random free loopback block, shared by a test module.

    Tests that kill, slow down or add servers must leave two ready, normal-speed servers behind.
    """
    pool = TritonPool(
        2,
        triton_model_repository,
        install=triton_install,
        log_dir=tmp_path_factory.mktemp("triton-logs"),
        models=(SIMULATED_MODEL, INSTANT_MODEL, IRIS_MODEL),
    )
    with pool:
        yield pool
