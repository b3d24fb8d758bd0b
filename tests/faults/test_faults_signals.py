"""Issue #15, F11 and the broken pipe: SIGTERM is handled like Ctrl-C in every command
(cleanups run, nothing partial is left, exit code 143; 130 for Ctrl-C), and a closed pipe
ends a command quietly (exit 141, no traceback)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from faultkit import (
    SIGTERM_IN_ONNX_SAVE,
    SIGTERM_IN_SAVEFIG,
    TIMEOUT,
    assert_one_line_error,
    env,
    leftovers,
    run_cli,
    snapshot,
)


def test_sigterm_while_the_training_curve_is_saved(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "--epochs", "1", "--threads", "1", "--out", str(run), "-q", fault=SIGTERM_IN_SAVEFIG)
    assert_one_line_error(proc, "interrupted (SIGTERM)", code=143)
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert not (run / "training_curve.png").exists()


def test_sigterm_while_the_int8_model_is_saved(run_copy, tmp_path):
    out = tmp_path / "good.int8.onnx"
    shutil.copy2(run_copy.int8, out)
    before = out.read_bytes()
    proc = run_cli(
        "quantize", str(run_copy.fp32), "-o", str(out), "--calib-table", str(run_copy.table), "-q",
        fault=SIGTERM_IN_ONNX_SAVE,
    )  # fmt: skip
    assert_one_line_error(proc, "interrupted (SIGTERM)", code=143)
    assert out.read_bytes() == before
    assert not leftovers(tmp_path) and not leftovers(run_copy.dir)


def test_sigterm_in_the_pipeline_leaves_the_previous_run_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.onnx").write_bytes(b"previous fp32")
    (run / "model.int8.onnx").write_bytes(b"previous int8")
    (run / "summary.json").write_text('{"run": "previous"}')
    before = snapshot(run)
    proc = run_cli(
        "pipeline", "--epochs", "1", "--threads", "1", "--num-images", "64", "--out", str(run), "-q",
        fault=SIGTERM_IN_SAVEFIG,
    )  # fmt: skip
    assert_one_line_error(proc, "interrupted (SIGTERM)", code=143)
    assert snapshot(run) == before  # no new model.onnx beside the old run's files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial run folder


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_from_outside_during_training(tmp_path, sig, code):
    """The plain reproduction: `kill <pid>` while `edgevit train` runs."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgevit", "train", "--epochs", "500", "--threads", "1", "--out", str(run), "-q"]

    def default_signals() -> None:  # whatever the test runner ignores, the command starts with the defaults
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), preexec_fn=default_signals
    ) as proc:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert_one_line_error(done, f"interrupted ({signal.Signals(sig).name})", code=code)
    assert not leftovers(tmp_path), leftovers(tmp_path)


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_info_into_a_closed_pipe(nano_artifacts, flags):
    """`edgevit info x.onnx | head -1`: the reader is gone before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgevit", "info", str(nano_artifacts.int8_onnx), *flags],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 141, (proc.returncode, proc.stderr)
