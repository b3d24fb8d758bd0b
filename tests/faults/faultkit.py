"""Helpers of the fault suite: run the real CLI in a subprocess (optionally with one fault
injected into it, or on a tiny file system) and check what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TIMEOUT = 300


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_cli(*args: str, cwd: Path | None = None, fault: str = "") -> subprocess.CompletedProcess:
    """``python -m edgevit ARGS``; ``fault`` is Python run first in the same process (a
    patch that makes something fail at a chosen moment), then the real ``main``."""
    if fault:
        code = textwrap.dedent(fault) + "\nimport sys\nfrom edgevit.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", "edgevit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env(), check=False, timeout=TIMEOUT)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback; returns that line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files and folders an interrupted or failed write would leave behind."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name or ".old-" in p.name]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# SIGTERM sent to the process itself while it writes a file, after part of it is written:
# the moment the reproduction aims at (`kill` while training_curve.png is saved).
SIGTERM_IN_SAVEFIG = """
import os, signal
import matplotlib
matplotlib.use("Agg")
import matplotlib.figure
def _savefig(self, fname, *args, **kwargs):
    with open(fname, "wb") as f:
        f.write(b"\\x89PNG half")
    os.kill(os.getpid(), signal.SIGTERM)
matplotlib.figure.Figure.savefig = _savefig
"""

SIGTERM_IN_ONNX_SAVE = """
import os, signal
import onnx
_save = onnx.save_model
def _save_model(proto, f, *args, **kwargs):
    if ".int8.onnx." in str(f):
        with open(f, "wb") as out:
            out.write(proto.SerializeToString()[:1000])
        os.kill(os.getpid(), signal.SIGTERM)
    return _save(proto, f, *args, **kwargs)
onnx.save_model = _save_model
"""

_SMALL_DISK = (
    'mount -t tmpfs -o size="$EDGEVIT_DISK_SIZE" tmpfs "$EDGEVIT_DISK" || exit 97\n'
    '"$@"\n'
    "rc=$?\n"
    '(cd "$EDGEVIT_DISK" && find . -mindepth 1 | sort) > "$EDGEVIT_DISK_LISTING"\n'
    "exit $rc\n"
)


def small_disk_reason(probe_dir: Path) -> str:
    """Why a tmpfs cannot be mounted here ('' if it can): it needs root and a private
    mount namespace (``unshare -m``)."""
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts need Linux"
    try:
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$0" && echo ok', str(probe_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run `unshare -m` ({exc})"
    if proc.returncode != 0 or "ok" not in proc.stdout:
        return f"cannot mount a tmpfs in a private mount namespace: {(proc.stderr or proc.stdout).strip()[:200]}"
    return ""


def run_on_small_disk(disk: Path, *args: str, size: str = "200k") -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``python -m edgevit ARGS`` with a ``size`` tmpfs mounted on ``disk`` (visible to
    that process only); return the process and what was left on the tmpfs afterwards."""
    disk.mkdir(parents=True, exist_ok=True)
    listing = disk.with_name(disk.name + ".listing")
    e = env()
    e.update(EDGEVIT_DISK=str(disk), EDGEVIT_DISK_SIZE=size, EDGEVIT_DISK_LISTING=str(listing))
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", _SMALL_DISK, "sh", sys.executable, "-m", "edgevit", *args],
        capture_output=True,
        text=True,
        env=e,
        check=False,
        timeout=TIMEOUT,
    )
    assert proc.returncode != 97, f"mounting the tmpfs failed: {proc.stderr}"
    return proc, listing.read_text().split()
