"""Child processes of the sandbox (tritonserver, HAProxy, dnsmasq, Prometheus, the control
plane): each runs in its own session, so a signal to its group reaches its helpers too, with
its output appended to a log whose tail explains a failure."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read {path}: {error})"


# Every session spawn() started, in order: its first process's pid (the session's id) and start
# time (so that a pid the kernel has since given to another session is not taken for it). What
# a caller scans for processes left behind, grandchildren included: they stay in the session.
_sessions: list[tuple[int, int]] = []
_sessions_lock = threading.Lock()


def _stat(pid: int | str) -> tuple[str, str, int, int] | None:
    """(command, state, session id, start time in clock ticks) of a process, None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    command = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state) on
    return command, fields[0], int(fields[3]), int(fields[19])


def sessions_mark() -> int:
    """A mark for `left_in_sessions`: the sessions started from now on."""
    with _sessions_lock:
        return len(_sessions)


def left_in_sessions(mark: int, settle_s: float = 0.0) -> list[tuple[str, int]]:
    """(command, pid) of every live process (zombies aside) in a session spawn() started since
    `mark`, whether or not its caller still tracks it; waiting up to `settle_s` for the last
    ones to finish exiting."""
    with _sessions_lock:
        wanted = dict(_sessions[mark:])
    deadline = time.monotonic() + settle_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or (stat := _stat(entry.name)) is None:
                continue
            command, state, session, started = stat
            if session not in wanted or state == "Z" or started < wanted[session]:
                continue
            leader = _stat(session)
            if leader is not None and leader[3] != wanted[session]:
                continue  # the session's id is another process's now
            found.append((command, int(entry.name)))
        if not found or time.monotonic() >= deadline:
            return sorted(found, key=lambda item: item[1])
        time.sleep(0.2)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL the child when the thread that started it dies (a demo killed by a
    signal it cannot catch leaves no server behind)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    banner: str | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session with stdout and stderr appended to `log_path` (after
    `banner`, when given, so restarts are told apart in one log)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        if banner is not None:
            log.write(f"{banner}\n".encode())
            log.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only the parent-death signal, no locks taken
        )
    stat = _stat(process.pid)
    with _sessions_lock:
        _sessions.append((process.pid, stat[3] if stat is not None else 0))
    return process


def stop(process: subprocess.Popen[bytes], timeout_s: float, sig: signal.Signals = signal.SIGTERM) -> int:
    """Send `sig`, wait up to `timeout_s`, then SIGKILL; return the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
    return int(process.returncode)


def wait_until(
    ready: Callable[[], bool],
    *,
    process: subprocess.Popen[bytes],
    log_path: Path,
    what: str,
    timeout_s: float,
    error: type[Exception] = RuntimeError,
    interval_s: float = 0.05,
) -> float:
    """Poll `ready` until it holds; raise `error` with the log's tail when the process exits
    first or `timeout_s` passes. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise error(f"{what} exited with {code}; log {log_path}:\n{log_tail(log_path)}")
        with contextlib.suppress(OSError):
            if ready():
                return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise error(f"{what} not ready after {timeout_s:.0f}s; log {log_path}:\n{log_tail(log_path)}")
        time.sleep(interval_s)


class LocalProcess:
    """What every sandbox component that runs one child process shares: its state, its log,
    and use as a context manager (start on entry, stop on exit)."""

    log_path: Path
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id while it runs, else None."""
        return self._process.pid if self._process is not None and self.is_running else None

    def log_text(self) -> str:
        """The process's log so far (its stdout and stderr)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
