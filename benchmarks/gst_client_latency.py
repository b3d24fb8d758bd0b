#!/usr/bin/python3
"""Plain GStreamer RTSP client (system python3 + python3-gi): the reference of
bench_camera_latency.py. It decodes the frame code drawn by tests/stream/servers/rtsp_server.py
from the luma plane of each decoded frame and compares its send time with the time the
frame reached appsink.

    /usr/bin/python3 gst_client_latency.py rtsp://127.0.0.1:8554/test --seconds 10 \
        [--latency 0] [--decoder decodebin|openh264dec|avdec_h264] [--tcp] [--json]

Pipeline: rtspsrc latency=L [protocols=tcp] ! rtph264depay ! h264parse ! DECODER !
          videoconvert ! video/x-raw,format=GRAY8 ! appsink sync=false
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "stream", "servers"))
import framecode  # noqa: E402


def summary(values):
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "min": round(v[0], 1),
        "median": round(statistics.median(v), 1),
        "p90": round(v[int(0.9 * (len(v) - 1))], 1),
        "max": round(v[-1], 1),
        "mean": round(statistics.fmean(v), 1),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--latency", type=int, default=0, help="rtspsrc jitter buffer, ms")
    p.add_argument("--decoder", default="decodebin")
    p.add_argument("--tcp", action="store_true", help="protocols=tcp (default: UDP first)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    Gst.init(None)
    proto = " protocols=tcp" if a.tcp else ""
    dec = "decodebin" if a.decoder == "decodebin" else f"rtph264depay ! h264parse ! {a.decoder}"
    desc = (
        f"rtspsrc location={a.url} latency={a.latency}{proto} ! {dec} ! videoconvert ! "
        "video/x-raw,format=GRAY8 ! appsink name=sink sync=false emit-signals=true max-buffers=4 drop=false"
    )
    pipe = Gst.parse_launch(desc)
    sink = pipe.get_by_name("sink")
    warm, steady, bad = [], [], [0]
    t_start = [None]
    t_play = time.monotonic()
    first = [None]

    def on_sample(s):
        sample = s.emit("pull-sample")
        now = time.time()
        if t_start[0] is None:
            t_start[0] = time.monotonic()
            first[0] = round(t_start[0] - t_play, 3)
        st = sample.get_caps().get_structure(0)
        w, h = st.get_value("width"), st.get_value("height")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.OK
        try:
            stride = (w + 3) & ~3  # GRAY8 rows are 4-byte aligned in GStreamer
            d = framecode.decode_bytes(info.data, w, h, stride)
        finally:
            buf.unmap(info)
        if d is None:
            bad[0] += 1
        else:
            lat = framecode.latency_ms(d[1], now)
            (warm if time.monotonic() - t_start[0] < a.warmup else steady).append(lat)
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)
    loop = GLib.MainLoop()
    bus = pipe.get_bus()
    bus.add_signal_watch()
    err = [None]

    def on_msg(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err[0] = str(msg.parse_error()[0].message)
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus.connect("message", on_msg)
    pipe.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int((a.seconds + 3) * 1000), loop.quit)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    out = {
        "pipeline": desc,
        "first_frame_s": first[0],
        "error": err[0],
        "undecodable_frames": bad[0],
        "first_frame_latency_ms": round(warm[0], 1) if warm else None,
        "warmup_latency_ms": summary(warm),
        "latency_ms": summary(steady),
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0 if err[0] is None else 1


if __name__ == "__main__":
    sys.exit(main())
