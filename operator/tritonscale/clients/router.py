"""Reads a router pod's counters from HAProxy's stats page (the monitoring port Prometheus
scrapes), for the autoscaler's 2 s view of the load (policy.surge).

Per backend HAProxy reports `stot` (streams since the process started: one per HTTP request or
gRPC call), `scur` (streams at a server now) and `qcur` (waiting in HAProxy's own queue). The
router's two backends (HTTP and gRPC, render/router.py) are summed.

The page is asked for the two backends only (`scope`) and for servers that are UP only (`;up`):
1.8 KB instead of 17 KB with every server slot, read with http.client on a fresh connection
and only the BACKEND rows split: 0.6 ms of the operator's CPU a read, where `requests` and a
csv.DictReader over the whole page took 2.8 ms (benchmarks/router_reads.py).
"""

from __future__ import annotations

import http.client

from tritonscale.api.observation import RouterReading
from tritonscale.ports import ROUTER_CONTROL_PORT, ROUTER_METRICS_PORT
from tritonscale.render.router import BACKEND_SCOPE, GRPC_BACKEND, HTTP_BACKEND

BACKENDS = (HTTP_BACKEND, GRPC_BACKEND)
STATS_PATH = f"/stats;csv;up?scope={BACKEND_SCOPE}"
_FIELDS = ("pxname", "svname", "stot", "scur", "qcur", "hrsp_2xx")


def model_index(backend: str) -> int | None:
    """0 for the model's backends, k + 1 for variant k's (triton_http_v0 ...), None otherwise."""
    for base in BACKENDS:
        if backend == base:
            return 0
        suffix = backend.removeprefix(f"{base}_v")
        if suffix != backend and suffix.isdigit():
            return int(suffix) + 1
    return None


class RouterUnreadable(RuntimeError):
    """The stats page had no usable backend rows."""


def parse_stats(text: str) -> RouterReading:
    """The counters of the router's backends from HAProxy's CSV stats (only the BACKEND rows
    are split: there is one per backend, and a row per server besides)."""
    lines = text.splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    try:
        pxname, svname, stot, scur, qcur, answered = (header.index(field) for field in _FIELDS)
    except ValueError as error:
        raise RouterUnreadable(f"stats without the expected columns: {error}") from error
    routed = in_flight = 0.0
    served: dict[int, float] = {}
    found = 0
    for line in lines[1:]:
        if ",BACKEND," not in line:
            continue
        fields = line.split(",")
        if len(fields) <= max(pxname, svname, stot, scur, qcur, answered) or fields[svname] != "BACKEND":
            continue
        model = model_index(fields[pxname])  # the model's backends and its variants'
        if model is None:
            continue
        try:
            routed += float(fields[stot])
            in_flight += float(fields[scur] or 0) + float(fields[qcur] or 0)
            served[model] = served.get(model, 0.0) + float(fields[answered] or 0)
        except ValueError as error:
            raise RouterUnreadable(f"backend {fields[pxname]}: {error}") from error
        found += 1
    if not found:
        raise RouterUnreadable("no router backend in the stats")
    counts = tuple(served.get(model, 0.0) for model in range(max(served) + 1))
    return RouterReading(routed=routed, in_flight=in_flight, served=counts)


class HaproxyStats:
    """Reads one router pod by address; a short timeout, since it runs every 2 s. Says why in a
    string when the pod cannot be read (the autoscaler then does without it)."""

    def __init__(self, port: int = ROUTER_METRICS_PORT, timeout_s: float = 0.5) -> None:
        self.port = port
        self.timeout_s = timeout_s

    def __call__(self, address: str) -> RouterReading | str:
        # A fresh connection a read: no socket held per router between reads (hundreds of
        # services), for 0.1 ms more than keeping one alive.
        connection = http.client.HTTPConnection(address, self.port, timeout=self.timeout_s)
        try:
            connection.request("GET", STATS_PATH, headers={"Connection": "close"})
            reply = connection.getresponse()
            body = reply.read()
            if reply.status != 200:
                return f"HTTP {reply.status} from the stats page"
            return parse_stats(body.decode("utf-8", errors="replace"))
        except (OSError, http.client.HTTPException, RouterUnreadable) as error:
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()


class VariantSharesRefused(RuntimeError):
    """A router did not take the variants' shares."""


def set_variant_cuts(
    address: str, cuts: dict[str, int], port: int = ROUTER_CONTROL_PORT, timeout_s: float = 0.5
) -> dict[str, int]:
    """Set the variants' cumulative cuts on one router pod (render.router: frontend control) and
    return the cuts it holds afterwards, which must be the ones sent."""
    query = "&".join(f"{key}={value}" for key, value in cuts.items())
    connection = http.client.HTTPConnection(address, port, timeout=timeout_s)
    try:
        connection.request("POST", f"/variants?{query}", headers={"Connection": "close"})
        reply = connection.getresponse()
        body = reply.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as error:
        raise VariantSharesRefused(f"{type(error).__name__}: {error}") from error
    finally:
        connection.close()
    if reply.status != 200:
        raise VariantSharesRefused(f"HTTP {reply.status} from the control port: {body.strip()}")
    held = {key: int(value) for key, value in (line.split() for line in body.splitlines() if line.strip())}
    if any(held.get(key) != value for key, value in cuts.items()):
        raise VariantSharesRefused(f"sent {cuts}, the router holds {held}")
    return held
