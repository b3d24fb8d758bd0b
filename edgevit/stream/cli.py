"""``edgevit camera``: run a model on cameras, streams, files or folders.

Registered into the main CLI with :func:`register`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from edgevit.errors import InputError

DEFAULT_RUNS = Path("runs")
EXAMPLES = """\
examples:
  edgevit camera synthetic://                          test pattern, status line only
  edgevit camera video.mp4 --sink out.mp4 --sink jsonl://r.jsonl
  edgevit camera csi://0 --width 1280 --height 720 --sink display://0     Jetson CSI camera
  edgevit camera /dev/video0 --model runs/digits-nano/model.int8.onnx    USB camera
  edgevit camera rtsp://cam.local:554/stream --sink - | jq .top_k[0]     network camera, JSON lines
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``camera`` subcommand to an ``argparse`` subparsers object."""
    from edgevit.options import add_quiet, add_top_k
    from edgevit.runtime.cli_args import add_runtime_args

    p = subparsers.add_parser(
        "camera",
        help="classify frames from cameras, streams, videos or image folders",
        description="Classify frames from cameras, network streams, video files or image folders with an "
        "edgevit artifact. Live sources keep only their latest frame (bounded latency); files lose none.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a retired flag (--batch) must not pass as a prefix of another (--batch-size)
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="csi://N, v4l2:///dev/videoN, /dev/videoN, N, rtsp://..., a video or image file, "
        "a folder, a glob, or synthetic:// (several allowed)",
    )
    p.add_argument(
        "--model",
        "-m",
        type=Path,
        default=None,
        help="artifact to run (.onnx or .engine; default: the newest under runs/, engines first)",
    )
    p.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="URI",
        help="display://0, a video file (out.mp4), jsonl://path or - for stdout; repeatable "
        "(default: display://0 when a display is available)",
    )
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="frames per inference call (default: 8 for files, the number of sources for live sources)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest a frame waits for its batch to fill (live sources: only while another's frame is due)",
    )
    add_top_k(p, per="frame")
    p.add_argument("--width", type=int, default=None, help="capture width for cameras and synthetic://")
    p.add_argument("--height", type=int, default=None, help="capture height for cameras and synthetic://")
    p.add_argument("--fps", type=float, default=None, help="capture frame rate for cameras and synthetic://")
    p.add_argument("--flip", type=int, default=None, help="CSI camera flip-method 0-7 (2: rotate 180)")
    p.add_argument(
        "--rtsp-latency",
        type=int,
        default=None,
        metavar="MS",
        help="RTSP jitter buffer in ms (OpenCV with GStreamer only, e.g. JetPack's; default 200)",
    )
    p.add_argument("--queue-size", type=int, default=1, help="frames kept per live source (default 1: the latest)")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="seconds without a frame before a live source is reopened; also bounds each open (at least 5 s) "
        "and, for network streams, each read (half of it) (default 5)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many results")
    p.add_argument("--stats", type=Path, default=None, help="write the summary as JSON to this file")
    add_runtime_args(p)
    add_quiet(p, "status line, progress bar or event lines")
    p.set_defaults(func=handler)
    return p


def find_default_model(runs: Path = DEFAULT_RUNS) -> Path:
    """The newest engine under ``runs/``, else the newest INT8 ONNX, else the newest ONNX."""
    for pattern in ("*.engine", "*.plan", "*int8*.onnx", "*.onnx"):
        found = sorted(runs.rglob(pattern), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
        if found:
            return found[-1]
    raise InputError(
        f"no model given and none found under {runs}/; pass --model PATH (.onnx or .engine), "
        "or train and export one first (see README)"
    )


class _Reporter:
    """Status line, progress bar for files, event lines; all on stderr."""

    def __init__(self, stream: Any, quiet: bool, out: TextIO | None = None):
        self.stream = stream
        self.quiet = quiet
        self.out = out if out is not None else sys.stderr  # looked up now: sys.stderr may be replaced
        self.tty = self.out.isatty()
        self.bar: Any = None
        self.want_bar = False
        self.last = 0.0
        self.interval = 0.5 if self.tty else 5.0
        self.line_len = 0

    def start(self) -> None:
        self.last = time.monotonic()
        self.want_bar = not self.quiet and not any(s.live for s in self.stream.sources)

    def _make_bar(self) -> None:
        """A progress bar for files and folders, once every one knows its length (a video
        file's is known when its capture thread has opened it)."""
        totals = [s.total for s in self.stream.stats.sources]
        if not totals or not all(totals):
            return
        from tqdm import tqdm

        self.want_bar = False
        self.bar = tqdm(
            total=sum(totals),
            initial=self.stream.stats.results,
            unit="frame",
            file=self.out,
            dynamic_ncols=True,
            mininterval=0.5,
            leave=True,
        )

    def event(self, ev: Any) -> None:
        if ev.kind == "ended" and not any(s.live and s.uri == ev.source for s in self.stream.sources):
            return  # a file ending is the normal end, not news
        if not self.quiet:
            self.write(f"{ev.source}: {ev.kind}: {ev.message}")

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.out)
            return
        if self.line_len:
            self.out.write("\r" + " " * self.line_len + "\r")
            self.line_len = 0
        self.out.write(line + "\n")
        self.out.flush()

    def result(self, n: int = 1) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(n)
        elif self.want_bar:
            self._make_bar()
        if now - self.last < self.interval:
            return
        self.last = now
        self.status()

    def status(self) -> None:
        line = self.stream.stats.status_line()
        if self.bar is not None:
            self.bar.set_postfix_str(line, refresh=False)
        elif self.tty:
            pad = max(0, self.line_len - len(line))
            self.out.write("\r" + line + " " * pad)
            self.out.flush()
            self.line_len = len(line)
        else:
            self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.line_len:
            self.out.write("\n")
            self.out.flush()


# what an option of open_source() applies to, for the warning when no source uses it
OPTION_FLAGS = {
    "width": ("--width", "it sets the capture size of cameras and synthetic:// (a URI's ?width= wins)"),
    "height": ("--height", "it sets the capture size of cameras and synthetic:// (a URI's ?height= wins)"),
    "fps": ("--fps", "it sets the frame rate of cameras and synthetic://, and of video sinks for files"),
    "flip": ("--flip", "it applies to csi:// cameras only"),
    "latency_ms": (
        "--rtsp-latency",
        "it sets GStreamer's RTSP jitter buffer, and no source is RTSP read through GStreamer "
        "(OpenCV without GStreamer reads RTSP through FFmpeg, which has none)",
    ),
}


def unused_option_warnings(sources: list[Any], options: dict[str, Any]) -> list[str]:
    """One line per option given that no source uses."""
    out = []
    for key, (flag, why) in OPTION_FLAGS.items():
        if options.get(key) is not None and not any(key in s.options_used for s in sources):
            out.append(f"edgevit camera: warning: {flag} does nothing here: {why}")
    return out


def check_stats_path(path: Path) -> None:
    """Refuse a --stats path that cannot be written, before the run starts."""
    if path.is_dir():
        raise InputError(f"--stats {path} is a folder; give a file name such as {path / 'stats.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--stats {path}: cannot create its folder ({exc.strerror or exc})") from exc


def handler(args: argparse.Namespace) -> int:
    """Run ``edgevit camera``; returns the exit code (0 also after Ctrl-C / SIGTERM).

    Raises :class:`~edgevit.errors.EdgeVitError` (exit 2) for bad options, and when no
    source gives a single frame (see :mod:`edgevit.stream.loop`)."""
    from edgevit.artifacts import write_json_atomic
    from edgevit.runtime.cli_args import load_from_args
    from edgevit.stream.loop import Stream
    from edgevit.stream.sinks import display_problem

    sinks = list(args.sink)
    if args.headless and any(s.startswith("display://") for s in sinks):
        raise InputError("--headless and --sink display://... contradict each other; drop one")
    if args.stats is not None:
        check_stats_path(args.stats)
    note = ""
    if not sinks and not args.headless:
        problem = display_problem()
        if problem:
            reason = problem.split(";")[0].split(":")[0]
            note = f"{reason}: running headless (add --sink out.mp4 or --sink jsonl://r.jsonl to keep results)"
        else:
            sinks = ["display://0"]
    model_path = args.model or find_default_model()
    to_stdout = any(s in ("-", "jsonl://-") for s in sinks)
    source_options = {
        "width": args.width,
        "height": args.height,
        "fps": args.fps,
        "flip": args.flip,
        "latency_ms": args.rtsp_latency,
    }

    model = load_from_args(model_path, args)
    try:
        stream = Stream(
            model,
            args.sources,
            sinks,
            batch_size=args.batch_size,
            max_wait_ms=args.max_wait_ms,
            top_k=args.top_k,
            queue_size=args.queue_size,
            stall_timeout=args.stall_timeout,
            max_frames=args.max_frames,
            duration=args.duration,
            source_options=source_options,
        )
        for line in unused_option_warnings(stream.sources, source_options):
            print(line, file=sys.stderr)
        reporter = _Reporter(stream, args.quiet)
        stream.on_event = reporter.event
        signals = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stream.stopping and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: stop now (sinks are still closed)
            if not stream.stats.stopped_by:
                stream.stats.stopped_by = signal.Signals(signum).name
            stream.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signals[sig] = signal.signal(sig, on_signal)
        try:
            with stream:
                if note and not args.quiet:
                    print(note, file=sys.stderr)
                if not args.quiet:
                    print(
                        f"edgevit camera: {model_path} ({model.backend}), batch size {stream.batch_size}, "
                        f"sources: {', '.join(s.uri for s in stream.sources)}",
                        file=sys.stderr,
                    )
                reporter.start()
                for _ in stream:
                    reporter.result()
        finally:
            for sig, previous in signals.items():
                signal.signal(sig, previous)
            reporter.close()
    finally:
        model.close()

    summary = stream.stats.summary()
    summary["model"] = str(model_path)
    summary["backend"] = model.backend
    if args.stats is not None:
        write_json_atomic(args.stats, summary)
    if not args.quiet:
        print(stream.stats.format_summary(), file=sys.stderr if to_stdout else sys.stdout)
    return 0
