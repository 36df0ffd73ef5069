"""What an operator replica does while it stands by for the leader Lease (no cluster needed)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from tritonscale.app import default_identity, standby_health
from tritonscale.config import OperatorConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_standby_answers_liveness_and_frees_the_port_for_kopf() -> None:
    port = _free_port()
    config = OperatorConfig(listen_address="127.0.0.1", health_port=port)
    with standby_health(config):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
            assert b"standby" in response.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert missing.value.code == 404
    # Once leading, kopf's liveness endpoint binds the same port.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_the_identity_is_the_pod_name_and_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "tritonscale-7f9c-abcde")
    name, pid = default_identity().rsplit("_", 1)
    assert name == "tritonscale-7f9c-abcde" and int(pid) > 0
