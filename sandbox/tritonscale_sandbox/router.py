"""The data plane's router as real local processes: HAProxy behind DNS discovery by dnsmasq.

In a cluster the router finds Triton pods through the headless Service's DNS name. Locally,
`DnsServer` plays the cluster DNS: a dnsmasq on a loopback address, answering A records for one
name from a file that `set_addresses` rewrites (dnsmasq re-reads it on SIGHUP), with a short TTL
and no upstream servers, no /etc/hosts and no /etc/resolv.conf. `LocalRouter` runs HAProxy from
exactly the haproxy.cfg that `tritonscale.render.router.render_router_config` renders for an
InferenceService, with `RouterOptions` pointing discovery at the `DnsServer`.

Typical use::

    service = parse_inference_service(make_inference_service(spec__replicas=4))
    with DnsServer("triton.test", pool.addresses) as dns, LocalRouter(service, dns) as router:
        router.wait_ready(servers_up=len(pool))
        url = router.http_endpoint                   # "127.0.0.1:<port>" for tritonclient.http
        dns.set_addresses([*pool.addresses, new])    # HAProxy picks the change up within ~2 s

Everything listens on loopback only. Triton replicas are expected on their own loopback
addresses with the standard ports (see `tritonscale_sandbox.triton.TritonPool`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonscale.api.resource import InferenceService
from tritonscale.render.names import StackNames
from tritonscale.render.router import (
    GRPC_BACKEND,
    HTTP_BACKEND,
    VARIANTS_MAP_FILE,
    RouterOptions,
    render_router_config,
    render_variants_map,
)
from tritonscale_sandbox.net import free_port, free_ports
from tritonscale_sandbox.process import LocalProcess, die_with_parent, log_tail, spawn, wait_until
from tritonscale_sandbox.process import stop as stop_process

DEFAULT_DISCOVERY_NAME = "triton.test"

_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$"
)
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class RouterError(RuntimeError):
    """A router process failed to start or answer; the message carries its log's tail."""


def _loopback(address: str, what: str) -> str:
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 address, got {address!r}") from None
    if parsed not in _LOOPBACK:
        raise ValueError(f"{what} must be in 127.0.0.0/8, got {address}")
    return str(parsed)


def _free_udp_and_tcp_port(host: str) -> int:
    """A port free for both TCP and UDP on `host` (DNS serves both)."""
    for _ in range(50):
        port = free_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                continue
        return port
    raise RouterError(f"found no port free for TCP and UDP on {host}")


# --------------------------------------------------------------------------------------------
# A minimal DNS client (A records over UDP), to check what the DNS server answers


def _dns_query(name: str, query_id: int) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # recursion desired, 1 question
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.split("."))
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)  # QTYPE A, QCLASS IN


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def _dns_answers(message: bytes, query_id: int) -> tuple[int, list[str]]:
    """(response code, IPv4 addresses in the answer section) of a DNS response."""
    answer_id, flags, questions, answers, _, _ = struct.unpack("!HHHHHH", message[:12])
    if answer_id != query_id:
        raise ValueError("DNS answer to another query")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    addresses = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        rtype, _, _, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(message[offset : offset + 4]))
        offset += length
    return flags & 0x000F, addresses


def resolve_a(nameserver: tuple[str, int], name: str, timeout_s: float = 1.0) -> list[str]:
    """The A records `nameserver` answers for `name`, sorted (empty for NXDOMAIN or no data).
    Raises OSError when the server does not answer, RuntimeError on another DNS error."""
    query_id = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(_dns_query(name, query_id), nameserver)
        while True:
            message, _ = sock.recvfrom(4096)
            with contextlib.suppress(ValueError):
                code, addresses = _dns_answers(message, query_id)
                break
    if code not in (0, 3):  # NOERROR, NXDOMAIN
        raise RuntimeError(f"DNS server {nameserver[0]}:{nameserver[1]} answered rcode {code} for {name}")
    return sorted(addresses, key=ipaddress.IPv4Address)


# --------------------------------------------------------------------------------------------
# DNS


class DnsServer(LocalProcess):
    """dnsmasq answering A records for one name (the local stand-in for a headless Service).

    Listens on `host`:`port` (default 127.0.0.1 and a free port, UDP and TCP). It is
    authoritative for `name` only: no upstream servers, /etc/hosts and /etc/resolv.conf are not
    read, other names are refused. Answers carry a TTL of `ttl_s` seconds. `set_addresses`
    changes the answer while it runs. `set_records` serves more names under `name` (so
    `DnsServer("cluster.local")` can play a whole cluster domain).
    """

    def __init__(
        self,
        name: str = DEFAULT_DISCOVERY_NAME,
        addresses: Iterable[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ttl_s: int = 1,
        work_dir: Path | None = None,
        log_queries: bool = False,
        binary: str | None = None,
    ) -> None:
        if not _DNS_NAME.match(name):
            raise ValueError(f"not a fully qualified DNS name: {name!r}")
        self.name = name
        self.host = _loopback(host, "DNS listen address")
        self.port = port or _free_udp_and_tcp_port(self.host)
        self.ttl_s = ttl_s
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tritonscale-dns-"))
        self.hosts_path = self.work_dir / "discovery.hosts"
        self.log_path = self.work_dir / "dnsmasq.log"
        self.log_queries = log_queries
        self.binary = binary or shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self._addresses = [_loopback(a, "discovered address") for a in addresses]
        self._records: dict[str, list[str]] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """`host:port`, the form `RouterOptions.nameservers` takes."""
        return f"{self.host}:{self.port}"

    @property
    def addresses(self) -> list[str]:
        """The addresses the name resolves to (as last set)."""
        return list(self._addresses)

    def command(self) -> list[str]:
        """The dnsmasq command line."""
        args = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # not /etc/dnsmasq.conf
            "--no-resolv",  # no /etc/resolv.conf, no upstream servers
            "--no-hosts",  # no /etc/hosts
            "--no-poll",
            "--pid-file=",  # none
            f"--listen-address={self.host}",
            "--bind-interfaces",
            f"--port={self.port}",
            f"--addn-hosts={self.hosts_path}",
            f"--local=/{self.name}/",  # answered from local data only
            f"--local-ttl={self.ttl_s}",
            "--log-facility=-",
        ]
        if os.geteuid() == 0:
            # dnsmasq drops root to `nobody`, who could not read the hosts file in a private dir.
            args.append(f"--user={pwd.getpwuid(os.geteuid()).pw_name}")
        if self.log_queries:
            args.append("--log-queries")
        return args

    def _write_hosts(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{address} {self.name}\n" for address in self._addresses]
        lines += [
            f"{address} {name}\n"
            for name, addresses in sorted(self._records.items())
            for address in addresses
        ]
        text = "".join(lines)
        tmp = self.hosts_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.hosts_path)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start dnsmasq and wait until it answers for the name."""
        if self.is_running:
            raise RouterError("dnsmasq is running already")
        if not Path(self.binary).exists():
            raise RouterError(f"{self.binary} not found: run scripts/install-system-deps.sh")
        self._write_hosts()
        self._process = spawn(self.command(), self.log_path, preexec_fn=die_with_parent)
        try:
            self.wait_answer(self._addresses, timeout_s)
        except BaseException:
            self.stop()
            raise

    def resolve(self, timeout_s: float = 1.0) -> list[str]:
        """What the server answers for the name right now (sorted)."""
        return resolve_a((self.host, self.port), self.name, timeout_s)

    def wait_answer(self, addresses: Iterable[str], timeout_s: float = 10.0) -> None:
        """Block until the server answers exactly `addresses`."""
        wanted = sorted(set(addresses), key=ipaddress.IPv4Address)
        deadline = time.monotonic() + timeout_s
        seen: list[str] | str = "nothing"
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RouterError(
                    f"dnsmasq exited with {self._process.returncode}:\n{log_tail(self.log_path)}"
                )
            try:
                seen = self.resolve(0.5)
                if seen == wanted:
                    return
            except (OSError, RuntimeError) as error:
                seen = str(error)
            if time.monotonic() > deadline:
                raise RouterError(
                    f"dnsmasq on {self.nameserver} answered {seen} for {self.name}, wanted {wanted}:\n"
                    f"{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def set_addresses(self, addresses: Iterable[str], *, wait: bool = True) -> None:
        """Make the name resolve to `addresses` (loopback IPv4); with `wait`, return once the
        server answers the new set. Resolvers see it when their cached answer expires."""
        self._addresses = [_loopback(a, "discovered address") for a in dict.fromkeys(addresses)]
        self._write_hosts()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)  # re-reads --addn-hosts files
            if wait:
                self.wait_answer(self._addresses)

    def set_records(self, records: Mapping[str, Iterable[str]]) -> bool:
        """Serve A records for names under `name` (replacing the previous set); returns whether
        anything changed. Resolvers see a change when their cached answer expires."""
        suffix = f".{self.name}"
        wanted: dict[str, list[str]] = {}
        for record_name, addresses in records.items():
            if not record_name.endswith(suffix) or not _DNS_NAME.match(record_name):
                raise ValueError(f"{record_name!r} is not a DNS name under {self.name}")
            wanted[record_name] = sorted(set(addresses), key=ipaddress.IPv4Address)
        if wanted == self._records:
            return False
        self._records = wanted
        self._write_hosts()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)  # re-reads --addn-hosts files
        return True

    def resolve_name(self, name: str, timeout_s: float = 1.0) -> list[str]:
        """What the server answers for `name` right now (sorted)."""
        return resolve_a((self.host, self.port), name, timeout_s)

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL after 5 s); a work dir it made itself goes too."""
        if self._process is not None:
            stop_process(self._process, 5.0)
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"DnsServer({self.name!r} at {self.nameserver}, {self._addresses})"


# --------------------------------------------------------------------------------------------
# HAProxy


@dataclass(frozen=True)
class RouterServer:
    """One server slot of a router backend, as HAProxy's `show stat` reports it."""

    backend: str
    name: str
    address: str
    """`ip:port`, empty while the slot has no address from DNS."""
    status: str
    """UP, DOWN, MAINT (no address), `UP 1/2` (going down) and the like."""
    active_sessions: int
    total_sessions: int
    responses_2xx: int
    connection_errors: int
    retries: int
    redispatches: int

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0] if self.address else ""

    @property
    def is_up(self) -> bool:
        return self.status == "UP"


def _int(value: str) -> int:
    return int(value) if value.strip() else 0


class LocalRouter(LocalProcess):
    """A real HAProxy running exactly the haproxy.cfg rendered for `service`.

    The config comes from `render_router_config(service, StackNames(...), options)` with
    options that point discovery at `dns` (`nameservers=(dns.nameserver,)`,
    `discovery_name=dns.name`) and bind the frontends to `bind_address` (loopback) on free
    ports. The file is written unmodified to `config_path`; HAProxy's log (stdout/stderr) goes
    to `log_path`; the runtime API socket lives in a short private directory.
    """

    def __init__(
        self,
        service: InferenceService,
        dns: DnsServer | str,
        *,
        discovery_name: str | None = None,
        bind_address: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        threads: int = 1,
        work_dir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.service = service
        self.bind_address = _loopback(bind_address, "router bind address")
        nameserver = dns.nameserver if isinstance(dns, DnsServer) else dns
        name = discovery_name or (dns.name if isinstance(dns, DnsServer) else DEFAULT_DISCOVERY_NAME)
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tritonscale-router-"))
        # Unix socket paths are limited to 107 bytes: keep the socket out of deep test dirs.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="tsr-"))
        self.runtime_socket = self._socket_dir / "admin.sock"
        taken = {port for port in (http_port, grpc_port, metrics_port) if port}
        spare = iter(port for port in free_ports(4 + len(taken), self.bind_address) if port not in taken)
        self.options = RouterOptions(
            nameservers=(nameserver,),
            discovery_name=name,
            bind_address=self.bind_address,
            http_port=http_port or next(spare),
            grpc_port=grpc_port or next(spare),
            metrics_port=metrics_port or next(spare),
            runtime_socket=str(self.runtime_socket),
            threads=threads,
            control_port=next(spare),
            config_dir=str(self.work_dir),
        )
        self.variants_map = render_variants_map(service)
        self.config = render_router_config(service, StackNames(service.name, service.namespace), self.options)
        self.config_path = self.work_dir / "haproxy.cfg"
        self.log_path = self.work_dir / "haproxy.log"
        self.binary = binary or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self._process: subprocess.Popen[bytes] | None = None

    # ---- addresses

    @property
    def http_endpoint(self) -> str:
        """`host:port` of the HTTP frontend (the form tritonclient.http takes)."""
        return f"{self.bind_address}:{self.options.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """`host:port` of the gRPC frontend (the form tritonclient.grpc takes)."""
        return f"{self.bind_address}:{self.options.grpc_port}"

    @property
    def control_address(self) -> tuple[str, int]:
        """Where the operator sets the variants' shares (with spec.model.variants)."""
        return self.bind_address, self.options.control_port

    @property
    def metrics_url(self) -> str:
        """The Prometheus exporter: `http://host:port/metrics`."""
        return f"http://{self.bind_address}:{self.options.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        """HAProxy's own liveness URI (the router pods' probe)."""
        return f"http://{self.bind_address}:{self.options.metrics_port}/healthz"

    # ---- process

    def check(self) -> None:
        """`haproxy -c` on the config file; raises RouterError with HAProxy's complaint."""
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise RouterError(f"haproxy -c rejected {self.config_path}:\n{result.stdout}{result.stderr}")

    def start(self, timeout_s: float = 10.0) -> None:
        """Write the config, validate it and start HAProxy in the foreground (`-db`); return once
        its health URI answers."""
        if self.is_running:
            raise RouterError("haproxy is running already")
        if not Path(self.binary).exists():
            raise RouterError(f"{self.binary} not found: run scripts/install-system-deps.sh")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.config_path.write_text(self.config, encoding="utf-8")
        if self.variants_map is not None:
            (self.work_dir / VARIANTS_MAP_FILE).write_text(self.variants_map, encoding="utf-8")
        self.check()
        self._process = spawn([self.binary, "-db", "-f", str(self.config_path)], self.log_path)
        try:
            self._wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout_s: float) -> None:
        def healthy() -> bool:
            with urllib.request.urlopen(self.health_url, timeout=1) as response:
                return bool(response.status == 200)

        assert self._process is not None
        wait_until(
            healthy,
            process=self._process,
            log_path=self.log_path,
            what="haproxy",
            timeout_s=timeout_s,
            error=RouterError,
            interval_s=0.02,
        )

    def _raise_if_exited(self) -> None:
        if self._process is None:
            raise RouterError("haproxy was not started")
        if self._process.poll() is not None:
            raise RouterError(f"haproxy exited with {self._process.returncode}:\n{log_tail(self.log_path)}")

    def wait_ready(
        self,
        servers_up: int | None = None,
        *,
        hosts: Iterable[str] | None = None,
        timeout_s: float = 20.0,
    ) -> None:
        """Block until HAProxy is healthy and, in both backends, exactly `hosts` are UP (given
        `hosts`), or `servers_up` servers are UP (given that), or else at least one server is UP."""
        wanted_hosts = None if hosts is None else set(hosts)
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_exited()
            try:
                servers = self.servers()
            except OSError:
                servers = []
            done = bool(servers)
            for backend in (HTTP_BACKEND, GRPC_BACKEND):
                up = {s.host for s in servers if s.backend == backend and s.is_up}
                if wanted_hosts is not None:
                    done = done and up == wanted_hosts
                elif servers_up is not None:
                    done = done and len(up) == servers_up
                else:
                    done = done and len(up) >= 1
            if done:
                return
            if time.monotonic() > deadline:
                states = ", ".join(f"{s.backend}/{s.name}={s.address or '-'} {s.status}" for s in servers)
                raise RouterError(
                    f"router not ready after {timeout_s:.0f}s (wanted {wanted_hosts or servers_up}): "
                    f"{states}\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM: hard stop, open connections close) and remove its socket dir
        (and its work dir when it made that itself)."""
        if self._process is not None:
            stop_process(self._process, 5.0)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ---- observation

    def runtime(self, command: str, timeout_s: float = 2.0) -> str:
        """Send one command to HAProxy's runtime API (admin level) and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(self.runtime_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def servers(self, backend: str | None = None) -> list[RouterServer]:
        """Every server slot of the Triton backends, the variants' included (or of one backend),
        from `show stat`."""
        text = self.runtime("show stat").lstrip("# ")
        rows = []
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("svname") in (None, "FRONTEND", "BACKEND"):
                continue
            # The model's backends and its variants' (triton_http_v0, ...).
            if not row["pxname"].startswith((HTTP_BACKEND, GRPC_BACKEND)) or backend not in (
                None,
                row["pxname"],
            ):
                continue
            rows.append(
                RouterServer(
                    backend=row["pxname"],
                    name=row["svname"],
                    address=row.get("addr", "") or "",
                    status=row["status"],
                    active_sessions=_int(row["scur"]),
                    total_sessions=_int(row["stot"]),
                    responses_2xx=_int(row.get("hrsp_2xx", "")),
                    connection_errors=_int(row["econ"]),
                    retries=_int(row["wretr"]),
                    redispatches=_int(row["wredis"]),
                )
            )
        return rows

    def up_hosts(self, backend: str = HTTP_BACKEND) -> set[str]:
        """Addresses of the servers of `backend` that are UP now."""
        return {s.host for s in self.servers(backend) if s.is_up}

    def metrics_text(self) -> str:
        """The Prometheus exporter's text."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                return bytes(response.read()).decode()
        except urllib.error.URLError as error:
            raise RouterError(f"{self.metrics_url}: {error}") from error

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"LocalRouter({self.service.name!r}, http {self.http_endpoint}, {state})"
