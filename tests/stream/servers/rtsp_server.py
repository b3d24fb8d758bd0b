#!/usr/bin/python3
"""A small RTSP test server (GStreamer gst-rtsp-server through PyGObject).

Used by tests/stream/test_stream_rtsp.py and benchmarks/bench_camera_latency.py. Runs under
the *system* python3 (Debian's python3-gi), not the venv:

    apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-tools

    /usr/bin/python3 rtsp_server.py --port 8554 --width 320 --height 240 --fps 30
    -> prints "ready rtsp://127.0.0.1:8554/test" on stdout once it is listening
       (--port 0: the kernel picks a free port; the ready line tells which)

Patterns (--pattern):
    code         (default) appsrc frames carrying a block code with the frame number and
                 the send time in ms (see framecode.py): a client decodes latency from pixels
    ball         videotestsrc pattern=ball (a moving ball), no code
    smpte        videotestsrc color bars with a moving snow square, no code
Codecs (--codec): h264 (x264enc, tune=zerolatency, baseline) or mjpeg (jpegenc).

Freezing, the connection kept open:
    kill -STOP <pid> / kill -CONT <pid>   the whole server stops (no RTP, no RTCP, no RTSP replies)
    kill -USR1 <pid>                      toggles "no more frames" (code pattern only);
                                          RTSP and RTCP go on
    --freeze-after S                      same as USR1 after S seconds of frames
Stopping: SIGTERM or SIGINT quits cleanly (exit 0). --max-seconds S quits by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import framecode  # noqa: E402


def encoder(codec: str, fps: int, bitrate: int, gop: int) -> str:
    if codec == "h264":
        return (
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={bitrate} threads=1 "
            "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
        )
    if codec == "mjpeg":
        return "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26"
    raise SystemExit(f"unknown codec {codec}")


class Pusher:
    """Pushes coded I420 frames into the current media's appsrc at a fixed rate."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.appsrc = None
        self.lock = threading.Lock()
        self.frozen = False
        self.stop = threading.Event()
        self.frame_no = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.first_push = None

    def attach(self, appsrc) -> None:
        a = self.args
        appsrc.set_property(
            "caps",
            Gst.Caps.from_string(f"video/x-raw,format=I420,width={a.width},height={a.height},framerate={a.fps}/1"),
        )
        appsrc.set_property("is-live", True)
        appsrc.set_property("format", Gst.Format.TIME)
        appsrc.set_property("do-timestamp", True)
        appsrc.set_property("block", False)
        appsrc.set_property("max-bytes", a.width * a.height * 3)  # ~2 frames queued at most
        with self.lock:
            self.appsrc = appsrc

    def run(self) -> None:
        a = self.args
        period = 1.0 / a.fps
        t0 = time.monotonic()
        i = 0
        while not self.stop.is_set():
            target = t0 + i * period
            delay = target - time.monotonic()
            if delay > 0:
                if self.stop.wait(delay):
                    break
            elif delay < -1.0:  # fell far behind (machine busy, or SIGSTOP): resynchronize
                t0 = time.monotonic() - i * period
            i += 1
            if a.freeze_after and self.first_push and time.monotonic() - self.first_push >= a.freeze_after:
                self.frozen = True
            with self.lock:
                src = self.appsrc
            if src is None or self.frozen:
                continue
            now = time.time()
            data = framecode.i420_frame(a.width, a.height, self.frame_no, int(now * 1000))
            buf = Gst.Buffer.new_wrapped(data)
            ret = src.emit("push-buffer", buf)
            if ret == Gst.FlowReturn.OK:
                if self.first_push is None:
                    self.first_push = time.monotonic()
                self.frame_no += 1
            else:  # FLUSHING: the media was unprepared (last client left); wait for the next
                with self.lock:
                    if self.appsrc is src:
                        self.appsrc = None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8554, help="0: any free port (see the ready line)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--path", default="/test")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=0, help="h264 keyframe interval in frames (0: fps, one a second)")
    p.add_argument("--bitrate", type=int, default=1000, help="kbit/s (h264)")
    p.add_argument("--pattern", choices=["code", "ball", "smpte"], default="code")
    p.add_argument("--codec", choices=["h264", "mjpeg"], default="h264")
    p.add_argument("--freeze-after", type=float, default=0.0, help="stop sending frames after S s (connection kept)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="quit by itself after S s (0: never)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    enc = encoder(args.codec, args.fps, args.bitrate, args.gop or args.fps)
    caps = f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1"
    pusher = None
    if args.pattern == "code":
        launch = f"( appsrc name=src ! videoconvert ! {enc} )"
        pusher = Pusher(args)

        def on_configure(_factory, media):
            media.set_reusable(False)
            src = media.get_element().get_child_by_name("src")
            pusher.attach(src)
            if args.verbose:
                print("media configured", file=sys.stderr, flush=True)

        factory.connect("media-configure", on_configure)
    else:
        vts = "pattern=ball" if args.pattern == "ball" else "pattern=smpte horizontal-speed=4"
        launch = f"( videotestsrc is-live=true {vts} ! {caps} ! videoconvert ! {enc} )"
    factory.set_launch(launch)
    factory.set_shared(True)  # one pipeline for all clients (one frame counter)
    server.get_mount_points().add_factory(args.path, factory)
    if args.verbose:
        server.connect("client-connected", lambda *_: print("client connected", file=sys.stderr, flush=True))
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    port = server.get_bound_port()

    def quit_(*_a):
        loop.quit()
        return GLib.SOURCE_REMOVE

    def toggle(*_a):
        if pusher is not None:
            pusher.frozen = not pusher.frozen
            print(f"frozen={pusher.frozen}", file=sys.stderr, flush=True)
        return GLib.SOURCE_CONTINUE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR1, toggle)
    if args.max_seconds:
        GLib.timeout_add(int(args.max_seconds * 1000), quit_)
    if pusher is not None:
        pusher.thread.start()
    print(f"ready rtsp://{args.host}:{port}{args.path}", flush=True)
    try:
        loop.run()
    finally:
        if pusher is not None:
            pusher.stop.set()
            pusher.thread.join(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
