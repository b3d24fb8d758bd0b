"""Real network cameras for the stream tests: GStreamer's RTSP server (gst-rtsp-server from
the distribution's packages, run by the system python3 with PyGObject) and a TCP listener
that never answers. .ci/run installs the packages; without them the tests skip with the
reason."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

SERVERS = Path(__file__).resolve().with_name("servers")
SYSTEM_PY = "/usr/bin/python3"
APT = (
    "apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)


@functools.lru_cache(maxsize=1)
def rtsp_server_missing() -> str:
    """Why the RTSP test server cannot run here ("" if it can)."""
    if not os.path.exists(SYSTEM_PY):
        return f"{SYSTEM_PY} not found (the RTSP test server runs under the system python3 with PyGObject)"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; missing=[e for e in ('x264enc','rtph264pay','rtspsrc','decodebin') "
        "if not Gst.ElementFactory.find(e)]; print(' '.join(missing)); sys.exit(1 if missing else 0)"
    )
    try:
        proc = subprocess.run([SYSTEM_PY, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PY}: {exc}"
    if proc.returncode != 0:
        what = proc.stdout.strip() or (proc.stderr.strip().splitlines() or ["gi import failed"])[-1]
        return f"GStreamer's RTSP server is not usable from {SYSTEM_PY} ({what}); install it: {APT}"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process:
    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"{cmd[1]} did not start: {line!r}")
        self.ready_line = line.split()[1]

    def kill(self) -> None:
        """SIGKILL: the kernel resets the connections (a client's read fails at once)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class RtspServer(_Process):
    """``rtsp://127.0.0.1:PORT/test``: digits-sized H.264 frames carrying a frame code
    (servers/framecode.py), 240x240 at 15 fps by default. Stops by itself after 5 min."""

    def __init__(self, port: int = 0, *args: str, fps: int = 15, size: int = 240):
        super().__init__(
            [
                SYSTEM_PY,
                str(SERVERS / "rtsp_server.py"),
                "--port",
                str(port),
                "--width",
                str(size),
                "--height",
                str(size),
                "--fps",
                str(fps),
                "--max-seconds",
                "300",
                *args,
            ]
        )
        self.url = self.ready_line
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def freeze(self) -> None:
        """SIGSTOP: nothing more at all (no RTP, RTCP or RTSP replies); connections stay open."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


class SilentServer(_Process):
    """A TCP listener that accepts and never says a word (a camera that hangs)."""

    def __init__(self) -> None:
        super().__init__([sys.executable, str(SERVERS / "silent_server.py"), "0", "300"])
        self.port = int(self.ready_line)
        self.url = f"rtsp://127.0.0.1:{self.port}/x"
