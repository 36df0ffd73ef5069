"""The sandbox's child processes: what is left behind is found, grandchildren included."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tritonscale_sandbox.process import left_in_sessions, sessions_mark, spawn


def test_a_grandchild_outliving_its_parent_is_found_until_it_is_gone(tmp_path: Path) -> None:
    mark = sessions_mark()
    assert left_in_sessions(mark) == []
    parent = spawn(["sh", "-c", "sleep 60 & echo $! > child.pid; wait"], tmp_path / "log", cwd=tmp_path)
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 10
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    parent.kill()  # the parent only: what a caller that tracks its child alone would stop
    parent.wait()
    deadline = time.monotonic() + 10
    while ("sleep", grandchild) not in left_in_sessions(mark):  # `sh` until it has exec'd
        assert time.monotonic() < deadline, left_in_sessions(mark)
        time.sleep(0.05)
    os.killpg(parent.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while left_in_sessions(mark):
        assert time.monotonic() < deadline, left_in_sessions(mark)
        time.sleep(0.05)
    # Sessions started before the mark are not this caller's.
    assert left_in_sessions(sessions_mark()) == []
