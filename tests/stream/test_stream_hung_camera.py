"""A network camera that accepts the connection and never says a word (a TCP listener on
127.0.0.1, no GStreamer needed): its open must block nothing, be bounded by the open
limit, and not hold up Ctrl-C or shutdown (issue #17.3). Bounds come from the options,
with slack for a busy shared machine."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rtsp_servers import SilentServer
from stream_doubles import Run, edgevit_command, linear_model, subprocess_env

from edgevit.stream import Stream
from edgevit.stream.loop import JOIN_S, POLL_S
from edgevit.stream.sources import MIN_OPEN_TIMEOUT_S

pytestmark = pytest.mark.slow

STALL_S = 3.0  # --stall-timeout of these tests
OPEN_LIMIT_S = max(STALL_S, MIN_OPEN_TIMEOUT_S)  # how long an open may take before it counts as failed
SLACK_S = 2.0  # room for a shared 2-core machine under load
HEALTHY = "synthetic://?fps=30&width=64&height=64"
MAX_GAP_S = 1.0  # the healthy source gives a frame every 33 ms: a gap this long means something blocked it
BLOCKED_OPEN_S = 600.0  # an open limit no test waits for


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


def stream(sources: list[str], **kw) -> Stream:
    kw.setdefault("stall_timeout", STALL_S)
    return Stream(linear_model(), sources, **kw)


def test_a_listener_that_never_answers_blocks_nothing(silent: SilentServer) -> None:
    """Issue #17.3: an open that hangs is bounded by the open limit, never blocks the
    stream's thread, and does not hold up shutdown."""
    run = Run(stream([silent.url, HEALTHY], duration=60))
    run.until(lambda r: r.now() > OPEN_LIMIT_S + 1.5)  # one open has timed out
    assert run.of(HEALTHY)[0] < 1.0 + SLACK_S  # not after the camera's open (OpenCV's default: 30 s)
    assert run.max_gap(HEALTHY) < MAX_GAP_S
    st = run.stats(silent.url)
    assert st.failures >= 1 and st.results == 0
    assert any("no answer within" in m or "open did not return" in m for m in run.events(silent.url))
    assert run.close_s < JOIN_S + SLACK_S  # an open still blocked in FFmpeg is left behind


def test_ctrl_c_while_the_only_camera_hangs_in_its_open(
    tmp_path: Path, stream_onnx: Path, silent: SilentServer
) -> None:
    """Issue #17.3: Ctrl-C is handled even while an open blocks, and the stats are written.
    The open would block for 10 minutes: a Ctrl-C that waited for it would not end the
    process within ``communicate``'s limit (no timing bound that a busy machine could miss)."""
    cmd = [*edgevit_command(), "camera", silent.url, "--model", str(stream_onnx), "--headless"]
    cmd += ["--stall-timeout", str(BLOCKED_OPEN_S), "--stats", str(tmp_path / "s.json")]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline() if proc.stderr else ""
        assert banner.startswith("edgevit camera:"), banner
        time.sleep(1.0)  # the open is now blocked (it would be for BLOCKED_OPEN_S)
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=BLOCKED_OPEN_S / 5)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C waited for the blocked open")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["results"] == 0


def test_a_run_whose_only_camera_never_answers_ends_with_exit_2(stream_onnx: Path, silent: SilentServer) -> None:
    """Issue #17.1/#17.3: not OpenCV's 30 s per open, not forever: the open limit, then one line."""
    cmd = [*edgevit_command(), "camera", silent.url, "--model", str(stream_onnx), "--headless"]
    cmd += ["--stall-timeout", "1"]  # the open limit is still MIN_OPEN_TIMEOUT_S
    proc = subprocess.Popen(cmd, env=subprocess_env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline() if proc.stderr else ""
        t = time.monotonic()
        assert banner.startswith("edgevit camera:"), banner
        _, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("edgevit: error")]
    assert len(errors) == 1 and re.search(
        r"no source gave a frame in .*(no answer within|open did not return)", errors[0]
    ), stderr
    assert took < MIN_OPEN_TIMEOUT_S + POLL_S + JOIN_S + SLACK_S
    assert "Traceback" not in stderr and "WARN" not in stderr
