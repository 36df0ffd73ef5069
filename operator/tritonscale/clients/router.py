"""Reads a router pod's counters from HAProxy's stats page (`/stats;csv` on the monitoring port
Prometheus scrapes), for the autoscaler's 2 s view of the load (policy.surge).

Per backend HAProxy reports `stot` (streams since the process started: one per HTTP request or
gRPC call), `scur` (streams at a server now) and `qcur` (waiting in HAProxy's own queue). The
router's two backends (HTTP and gRPC, render/router.py) are summed.
"""

from __future__ import annotations

import csv
import io
import threading

import requests

from tritonscale.api.observation import RouterReading
from tritonscale.ports import ROUTER_METRICS_PORT

BACKENDS = ("triton_http", "triton_grpc")


class RouterUnreadable(RuntimeError):
    """The stats page could not be fetched or had no backend rows."""


def parse_stats(text: str) -> RouterReading:
    """The counters of the router's backends from HAProxy's CSV stats."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    routed = in_flight = 0.0
    found = 0
    for row in rows:
        if row.get("svname") != "BACKEND" or row.get("pxname") not in BACKENDS:
            continue
        try:
            routed += float(row["stot"])
            in_flight += float(row["scur"] or 0) + float(row["qcur"] or 0)
        except (KeyError, ValueError) as error:
            raise RouterUnreadable(f"backend {row.get('pxname')}: {error}") from error
        found += 1
    if not found:
        raise RouterUnreadable("no router backend in the stats")
    return RouterReading(routed=routed, in_flight=in_flight)


class HaproxyStats:
    """Reads one router pod by address; short timeouts, since it runs every 2 s. Says why in a
    string when the pod cannot be read (the autoscaler then does without it)."""

    def __init__(self, port: int = ROUTER_METRICS_PORT, timeout_s: float = 0.5) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self._local = threading.local()  # a Session per worker thread: they are not thread-safe

    def __call__(self, address: str) -> RouterReading | str:
        host = f"[{address}]" if ":" in address else address
        try:
            if not hasattr(self._local, "session"):
                self._local.session = requests.Session()
            reply = self._local.session.get(f"http://{host}:{self.port}/stats;csv", timeout=self.timeout_s)
            reply.raise_for_status()
            return parse_stats(reply.text)
        except (requests.exceptions.RequestException, RouterUnreadable) as error:
            return f"{type(error).__name__}: {error}"
