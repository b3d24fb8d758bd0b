"""Helpers for the serving tests: free loopback ports and an `edgevit serve` subprocess that
never outlives its test. (A uniquely named module: every test folder has a `conftest`.)"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def missing(*modules: str) -> str:
    """Why the serving tests cannot run here ('' when they can)."""
    gone = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:  # ImportError, or a broken install of an optional package
            gone.append(m)
    return f"{', '.join(gone)} not importable: pip install 'edgevit[serve]'" if gone else ""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on the loopback interface right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``, started by any of its threads (Linux /proc)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out.update(int(p) for p in (task / "children").read_text().split())
    return sorted(out)


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` ('' when gone): tells a process from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int, started: str = "") -> bool:
    """``pid`` runs (not a zombie), and is the process that started at ``started`` when given."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] != "Z" and (not started or fields[19] == started)


def describe(pid: int) -> str:
    try:
        return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return str(pid)


@dataclass
class ServeProcess:
    """A running ``edgevit serve`` on loopback ports."""

    proc: subprocess.Popen[str]
    name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    triton_pids: list[tuple[int, str]] = field(default_factory=list)  # (pid, start time)
    started_at: float = 0.0
    lingering: list[tuple[int, str]] = field(default_factory=list)  # still running after the stop

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return r.read().decode()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def record_children(self) -> None:
        """Add the processes running under the server now to those it must end when stopped."""
        for p in descendants(self.proc.pid):
            if (p, start_time(p)) not in self.triton_pids:
                self.triton_pids.append((p, start_time(p)))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0, linger_s: float = 20.0) -> int:
        """Signal the server and wait; kill its process group if it does not stop in time.
        ``lingering`` lists the processes of its tree still running ``linger_s`` after it exited."""
        if self.proc.poll() is None:
            self.record_children()
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # edgevit serve ends its whole tree before it exits; whatever is left after linger_s
        # is recorded, then killed here (by pid, checking it is still the same process)
        self.lingering = self.wait_children(linger_s)
        for p, started in self.lingering:
            with contextlib.suppress(ProcessLookupError):
                if alive(p, started):
                    os.kill(p, signal.SIGKILL)
        self.wait_children(5)
        return int(self.proc.returncode)

    def wait_children(self, timeout: float) -> list[tuple[int, str]]:
        """Wait until every process started under the server is gone; returns those still running."""
        deadline = time.monotonic() + timeout
        while True:
            running = [(p, t) for p, t in self.triton_pids if alive(p, t)]
            if not running or time.monotonic() > deadline:
                return running
            time.sleep(0.1)

    def running_children(self) -> list[str]:
        return [describe(p) for p, t in self.triton_pids if alive(p, t)]


def start_serve(
    artifact: Path, log: Path, extra: Sequence[str] = (), name: str = "nano", timeout: float = 90.0
) -> ServeProcess:
    """Start ``edgevit serve`` and wait until its model is ready and edgevit says it serves
    (or fail with its log). Triton answers "ready" a moment before ``edgevit serve`` leaves its
    loading state; a signal in between is an interrupted load (exit 130), not a stop."""
    http, grpc, metrics = free_ports(3)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from edgevit.cli import main; sys.exit(main())",
        "serve",
        str(artifact),
        "--name",
        name,
        "--host",
        LOOPBACK,
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--threads",
        "1",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True
        )
    server = ServeProcess(proc, name, http, grpc, metrics, log, started_at=time.time() - 1)
    quiet = "-q" in extra or "--quiet" in extra  # no banner to wait for
    deadline = time.monotonic() + timeout
    url = f"http://{LOOPBACK}:{http}/v2/models/{name}/ready"
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"edgevit serve exited with {proc.returncode}: {server.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"edgevit serve not ready after {timeout} s: {server.stderr()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and (quiet or " ready in " in server.stderr()):
                    break
            time.sleep(0.2)
        server.triton_pids = [(p, start_time(p)) for p in descendants(proc.pid)]
    except BaseException:
        server.stop()
        raise
    return server
