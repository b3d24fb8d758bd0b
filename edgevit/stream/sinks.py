"""Where results go, addressed by URI as in jetson-inference.

=============================  ==========================================================
``display://0``                an OpenCV window with the annotation (``q``/Esc stops)
``out.mp4``, ``file://out.mp4``  a video with the annotation drawn in (``.mp4`` mp4v,
                               ``.avi`` MJPG, ``.mkv`` lossless FFV1; ``?codec=XVID&fps=30``)
``jsonl://r.jsonl``, ``r.jsonl``  one JSON line per frame
``-`` or ``jsonl://-``         JSON lines on stdout
=============================  ==========================================================

With several sources a video sink writes one file per source (``out-0.mp4``,
``out-1.mp4``, ...). Video and JSON-lines files are written the same way
(:class:`PendingFile`): under a temporary name next to the final path, renamed into place
when the stream closes (also after Ctrl-C or SIGTERM), so a file at the final path is
always whole; a sink that got no result leaves an existing file as it was. A run killed
outright leaves its temporary file (``.NAME.partial-PID.EXT``: whole JSON lines, flushed
line by line) and the final path untouched.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl

import numpy as np

from edgevit.errors import EdgeVitError, InputError, first_line

if TYPE_CHECKING:
    from edgevit.stream.results import FrameResult
    from edgevit.stream.sources import Source

CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}
_serial = itertools.count()


class PendingFile:
    """An output written under a temporary name next to ``path`` and renamed into place by
    :meth:`commit`, or removed by :meth:`discard`: ``path`` is never half written, and is
    left as it was unless the new file is committed. The temporary name keeps the suffix
    (OpenCV picks the video container by it): ``.NAME.partial-PID-N.EXT``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_output_path(self.path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}-{next(_serial)}{self.path.suffix}")

    def commit(self) -> None:
        """Rename the temporary file into place (if it was written)."""
        if not self.tmp.exists():
            return
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise EdgeVitError(f"cannot write {self.path}: {first_line(exc)}") from exc

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def check_output_path(path: Path) -> None:
    """Refuse an output path that is a folder, or whose folder cannot be made, before
    anything runs (raises :class:`InputError`)."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name (e.g. {path / 'out.mp4'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {first_line(exc)}") from exc


class Sink(ABC):
    """Receives every result of a stream, in order, on the stream's thread."""

    uri: str = ""
    wants_frames: bool = False  # gets the annotated frame in ``write``
    wants_stop: bool = False  # set by the sink to end the stream (a closed window)

    def open(self, sources: list[Source]) -> None:  # noqa: B027 - optional hook
        """Called once before the first result, with the stream's sources."""

    @abstractmethod
    def write(self, result: FrameResult, annotated: np.ndarray | None) -> None:
        """Take one result; ``annotated`` is the frame with the overlay if ``wants_frames``."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close; called exactly once, also on Ctrl-C and errors."""


class JsonlSink(Sink):
    """One JSON object per frame: source, frame index, times, top-k, latency."""

    def __init__(self, target: str | Path):
        self.uri = f"jsonl://{target}"
        self._pending = PendingFile(target) if str(target) != "-" else None
        self._f: TextIO | None = None if self._pending else sys.stdout

    def write(self, result: FrameResult, annotated: np.ndarray | None) -> None:
        f = self._f or self._open_file()
        f.write(json.dumps(result.to_record()) + "\n")

    def _open_file(self) -> TextIO:
        # opened at the first result: a run with none leaves no trace
        pending = self._pending
        if pending is None:
            raise EdgeVitError(f"{self.uri} is closed")
        try:
            self._f = pending.tmp.open("w", encoding="utf-8", buffering=1)  # line-buffered: whole lines
        except OSError as exc:
            raise InputError(f"cannot write {pending.path}: {first_line(exc)}") from exc
        return self._f

    def close(self) -> None:
        if self._pending is None:
            if self._f is not None:
                self._f.flush()
            return
        if self._f is not None:
            self._f.close()
            self._f = None
        self._pending.commit()


class VideoSink(Sink):
    """A video file per source with the overlay drawn in, renamed into place on close."""

    wants_frames = True

    def __init__(self, path: str | Path, *, fps: float | None = None, codec: str | None = None):
        self.path = Path(path)
        self.uri = str(path)
        suffix = self.path.suffix.lower()
        self.codec = codec or CODECS.get(suffix, "")
        if not self.codec:
            raise InputError(f"{self.path}: unknown video type {suffix!r}; use .mp4, .avi or .mkv (or ?codec=FOURCC)")
        if len(self.codec) != 4:
            raise InputError(f"{self.path}: codec must be a FourCC such as mp4v, MJPG or FFV1, got {self.codec!r}")
        self.fps = fps
        check_output_path(self.path)
        self._writers: dict[int, Any] = {}
        self._sizes: dict[int, tuple[int, int]] = {}
        self._files: dict[int, PendingFile] = {}
        self._sources: list[Source] = []

    def open(self, sources: list[Source]) -> None:
        self._sources = list(sources)
        for i in range(len(sources)):
            final = self.path if len(sources) == 1 else self.path.with_name(f"{self.path.stem}-{i}{self.path.suffix}")
            self._files[i] = PendingFile(final)

    def _writer(self, sid: int, frame: np.ndarray) -> Any:
        import cv2

        h, w = frame.shape[:2]
        fps = self.fps or (self._sources[sid].fps if sid < len(self._sources) else None) or 30.0
        tmp = self._files[sid].tmp
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self.codec), float(fps), (w, h))
        if not writer.isOpened():
            self._files[sid].discard()
            raise InputError(
                f"cannot write {self.path}: OpenCV has no {self.codec} encoder for {self.path.suffix}; "
                "use .mp4, .avi or .mkv"
            )
        self._writers[sid] = writer
        self._sizes[sid] = (w, h)
        return writer

    def write(self, result: FrameResult, annotated: np.ndarray | None) -> None:
        if annotated is None:
            return
        sid = result.source_id
        writer = self._writers.get(sid) or self._writer(sid, annotated)
        if (annotated.shape[1], annotated.shape[0]) != self._sizes[sid]:  # a camera reopened at another size
            import cv2

            annotated = cv2.resize(annotated, self._sizes[sid])
        writer.write(annotated)

    def close(self) -> None:
        errors = []
        for sid, writer in self._writers.items():
            writer.release()
            try:
                self._files[sid].commit()
            except EdgeVitError as exc:  # commit the others anyway
                errors.append(str(exc))
        self._writers.clear()
        if errors:
            raise EdgeVitError("; ".join(errors))


def display_problem() -> str:
    """Why an OpenCV window cannot be shown here, or "" if it can."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and "NONE" in line.upper():
            return (
                "this OpenCV has no GUI support (opencv-python-headless); install opencv-python or use JetPack's OpenCV"
            )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY is not set): run on the desktop, over `ssh -X`, or with export DISPLAY=:0"
    return ""


class DisplaySink(Sink):
    """An OpenCV window per source; ``q`` or Esc in a window ends the stream."""

    wants_frames = True

    def __init__(self, uri: str = "display://0"):
        problem = display_problem()
        if problem:
            raise InputError(f"{uri}: {problem}; or save the output with --sink out.mp4, or use --headless")
        self.uri = uri
        self._names: dict[int, str] = {}

    def write(self, result: FrameResult, annotated: np.ndarray | None) -> None:  # pragma: no cover - needs a display
        import cv2

        if annotated is None:
            return
        name = self._names.setdefault(result.source_id, f"edgevit: {result.source}")
        cv2.imshow(name, annotated)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) < 1:
            self.wants_stop = True

    def close(self) -> None:  # pragma: no cover - needs a display
        import cv2

        if self._names:
            cv2.destroyAllWindows()
            cv2.waitKey(1)


def open_sink(uri: str | Path) -> Sink:
    """Make a :class:`Sink` from a URI (see the module docstring)."""
    text = str(uri).strip()
    if text in ("-", "jsonl://-"):
        return JsonlSink("-")
    if text.startswith("display://"):
        return DisplaySink(text)
    if text.startswith("jsonl://"):
        return JsonlSink(text[len("jsonl://") :])
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        raise InputError(f"unknown sink {scheme}://; use display://0, a video file (out.mp4), jsonl://r.jsonl or -")
    path_text = text[len("file://") :] if text.startswith("file://") else text
    path_text, _, query = path_text.partition("?")
    opts = dict(parse_qsl(query))
    if Path(path_text).suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return JsonlSink(path_text)
    fps = opts.get("fps")
    try:
        fps_value = float(fps) if fps else None
    except ValueError:
        raise InputError(f"{text}: fps={fps!r} is not a number") from None
    return VideoSink(path_text, fps=fps_value, codec=opts.get("codec"))
