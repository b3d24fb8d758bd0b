"""The processes a Triton server leaves behind, found and ended through Linux ``/proc``.

``tritonserver`` runs every Python-backend model instance in a stub process of its own
(``triton_python_backend_stub``), and PyTriton's stub starts two more (a shared-memory
tensor store and its resource tracker). When Triton is stopped while requests are in
flight, it gives up after its exit timeout, and the stub, reparented to PID 1, keeps
running: it ignores SIGINT and SIGTERM on purpose. So the tree under ``tritonserver`` is
recorded while it is intact, and whatever of it outlives Triton's stop is killed.

A process is named by ``(pid, start time)``: a pid reused by an unrelated process after
ours ended is never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot); '' when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def running(pid: int, started: str) -> bool:
    """``pid`` is the process that started at ``started`` and has not ended (zombies have)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == started


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(out))


def executable(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def running_binary(path: str | Path) -> list[int]:
    """Every process (this user can see) running the executable ``path``, whoever its parent
    is now; also when ``path`` has been deleted since it started."""
    path = str(path)
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        exe = executable(int(proc.name))
        if exe == path or exe == path + " (deleted)":
            out.append(int(proc.name))
    return out


def tree(root: int) -> list[tuple[int, str]]:
    """``root`` and every process below it, as ``(pid, start time)``."""
    out: list[tuple[int, str]] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        if started:
            out.append((pid, started))
            todo += children(pid)
    return out


def alive(procs: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(pid, started) for pid, started in procs if running(pid, started)]


def wait_gone(procs: Sequence[tuple[int, str]], timeout_s: float, poll_s: float = 0.05) -> list[tuple[int, str]]:
    """Wait up to ``timeout_s`` for ``procs`` to end; returns those still running."""
    deadline = time.monotonic() + timeout_s
    left = alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = alive(left)
    return left


def end(procs: Sequence[tuple[int, str]], grace_s: float, kill_wait_s: float = 5.0) -> list[tuple[int, str]]:
    """Give ``procs`` ``grace_s`` seconds to end, SIGKILL the ones still running, wait up to
    ``kill_wait_s`` for them; returns the processes that still run (normally none)."""
    left = wait_gone(procs, grace_s)
    for pid, started in left:
        if running(pid, started):  # checked right before the signal: never a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
    return wait_gone(left, kill_wait_s)


def describe(pid: int) -> str:
    """``pid`` and the start of its command line, for messages."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"{pid} {cmd[:100]}".strip()
