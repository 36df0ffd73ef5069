"""An https Prometheus: its certificate is verified (it steers scaling), against the CA given
with --prometheus-ca-file; an untrusted one is reported in a few words, never queried blindly."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import PrometheusSource
from tritonscale_sandbox.net import free_port
from tritonscale_sandbox.prometheus import prometheus_binary

pytestmark = pytest.mark.integration

TARGET = ScalingTarget(
    namespace="t", name="svc", models=("m",), percentile=95.0, pod_prefixes=("svc-ondemand",),
    ready_replicas=1, pod_selector={"app.kubernetes.io/instance": "svc"},
)  # fmt: skip


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1."""
    ca_key, ca, key, request, certificate = (
        folder / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", "/CN=prometheus")  # fmt: skip
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(certificate), "-days", "1", "-extfile", str(extensions))  # fmt: skip
    return ca, certificate, key


@pytest.mark.timeout(120)
def test_an_https_prometheus_is_trusted_only_through_the_ca_given(tmp_path: Path) -> None:
    ca, certificate, key = _pki(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": str(certificate), "key_file": str(key)}})
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}}))
    port = free_port()
    binary = prometheus_binary()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/-/ready", verify=str(ca), timeout=1).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.2)
        trusted = PrometheusSource(url, ca_file=str(ca)).observe(TARGET)
        untrusted = PrometheusSource(url).observe(TARGET)
    finally:
        process.terminate()
        process.wait(10)
    # Asked and answered: no series for this service (so no rate), but no connection failure.
    assert trusted.missing == "no Triton request metrics in Prometheus", trusted.missing
    assert untrusted.missing == (
        f"Prometheus at {url} unreachable: its TLS certificate is not trusted (--prometheus-ca-file)"
    ), untrusted.missing
