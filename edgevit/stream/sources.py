"""Frame sources addressed by URI, as in jetson-inference.

==========================================  ============================================
``csi://0``                                 Jetson CSI camera (GStreamer nvarguscamerasrc)
``v4l2:///dev/video0``, ``/dev/video0``, ``0``  USB (V4L2) camera
``rtsp://host:554/path``                    network stream (``latency`` in ms)
``video.mp4``, ``file://video.mp4``          video file
``img.png``, ``folder/``, ``'shots/*.jpg'``  image file, folder (recursive), glob
``synthetic://``                            generated test pattern (a cycling digit)
==========================================  ============================================

Options come from keyword arguments of :func:`open_source` (the CLI's ``--width`` etc.)
or, for ``csi``, ``v4l2`` and ``synthetic``, from the URI's query string, which wins:
``csi://0?width=1920&height=1080&fps=30&flip=2``, ``/dev/video0?width=640&format=MJPG``,
``synthetic://?fps=60&frames=300&width=320&height=240&live=0``.

A :class:`Source` describes where frames come from and whether it is *live* (a camera
or network stream: stale frames are dropped, failures are reopened with backoff) or
*finite* (files, folders: every frame is processed, in order, and the stream ends with
them). :meth:`Source.open` returns a :class:`Reader` whose ``read()`` gives one BGR (or
grayscale) uint8 frame, ``None`` at the end of the stream, and raises on failure. Write
your own source by subclassing :class:`Source`; the stream opens a fresh reader after a
failure or a stall, so a reader stuck inside ``read()`` is simply abandoned.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from edgevit.errors import EdgeVitError, InputError
from edgevit.preprocess import decode_image

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264", ".h265", ".flv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
NETWORK_SCHEMES = {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp"}


class CaptureError(EdgeVitError):
    """A source failed (camera unplugged, stream lost, device busy). Live sources are
    reopened with backoff; the message goes to the status output."""


class CorruptFrameError(InputError):
    """One frame cannot be used (undecodable image, wrong dtype or shape). It is counted
    and skipped; the source goes on."""


class Reader(Protocol):
    """An open source. ``read`` blocks until a frame is ready."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class Source(ABC):
    """Where frames come from.

    Args:
        uri: the name shown in status lines and written to results.
        live: a camera or network stream (latest-frame policy, reopened on failure)
            rather than a file or folder (no frame dropped, ends at the last frame).
        fps: nominal frame rate, used by video sinks (``None``: unknown).
        total: number of frames, when known (progress bars).
    """

    def __init__(self, uri: str, *, live: bool, fps: float | None = None, total: int | None = None):
        self.uri = uri
        self.live = live
        self.fps = fps
        self.total = total

    @abstractmethod
    def open(self) -> Reader:
        """Open the source and return a reader; raise :class:`EdgeVitError` if it cannot be opened."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, live={self.live})"


# -- OpenCV VideoCapture: cameras, network streams, video files ---------------------------


def gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30, flip: int = 0) -> str:
    """The GStreamer pipeline OpenCV opens for a Jetson CSI camera.

    ``appsink drop=true max-buffers=1`` keeps at most one frame in GStreamer's own
    queue, so what we read is at most about one frame old.
    """
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={round(fps)}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def rtsp_pipeline(url: str, latency_ms: int = 200) -> str:
    """A low-latency GStreamer pipeline for an RTSP stream (``latency``: jitter buffer, ms)."""
    return (
        f"rtspsrc location={url} latency={latency_ms} ! decodebin ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


class _CaptureReader:
    """A cv2.VideoCapture as a :class:`Reader`."""

    def __init__(self, cap: Any, uri: str, live: bool):
        self.cap = cap
        self.uri = uri
        self.live = live

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if ok and frame is not None:
            return frame
        if self.live:
            raise CaptureError(f"{self.uri} gave no frame (camera disconnected, stream lost or pipeline failed)")
        return None  # end of the file

    def close(self) -> None:
        self.cap.release()


class VideoCaptureSource(Source):
    """Anything OpenCV's ``VideoCapture`` opens: a GStreamer pipeline string, a device,
    a network URL or a video file.

    Args:
        uri: the user's name for it.
        target: what ``cv2.VideoCapture`` is given (path, index, URL or pipeline).
        api: the ``cv2.CAP_*`` backend (``cv2.CAP_ANY`` if None).
        live: see :class:`Source`.
        props: ``cv2.CAP_PROP_*`` values to set after opening (width, height, fps, fourcc).
        hint: appended to the error message when opening fails.
    """

    def __init__(
        self,
        uri: str,
        target: str | int,
        *,
        api: int | None = None,
        live: bool,
        props: dict[int, float] | None = None,
        hint: str = "",
        fps: float | None = None,
    ):
        super().__init__(uri, live=live, fps=fps)
        self.target = target
        self.api = api
        self.props = dict(props or {})
        self.hint = hint

    def open(self) -> Reader:
        import cv2

        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY if self.api is None else self.api)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open {self.uri}" + (f": {self.hint}" if self.hint else ""))
        for prop, value in self.props.items():
            cap.set(prop, value)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # honoured by V4L2: do not queue old frames
        else:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.total = count if count > 0 else None
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and 0 < fps < 1000 and self.fps is None:
            self.fps = float(fps)
        return _CaptureReader(cap, self.uri, self.live)


# -- images: a file, a folder, a glob ------------------------------------------------------


class _ImageReader:
    def __init__(self, paths: list[Path]):
        self._paths = iter(paths)

    def read(self) -> np.ndarray | None:
        path = next(self._paths, None)
        if path is None:
            return None
        try:
            return decode_image(np.fromfile(str(path), dtype=np.uint8), str(path))
        except (InputError, OSError) as exc:
            raise CorruptFrameError(f"{path} is not a readable image") from exc

    def close(self) -> None:
        pass


class ImageSource(Source):
    """Image files read in sorted order, one frame each (finite)."""

    def __init__(self, uri: str, paths: list[Path], fps: float | None = None):
        super().__init__(uri, live=False, fps=fps, total=len(paths))
        self.paths = paths

    def open(self) -> Reader:
        return _ImageReader(self.paths)


# -- synthetic test pattern and in-memory frames -----------------------------------------


class _SyntheticReader:
    def __init__(self, src: SyntheticSource):
        self.src = src
        self.i = 0
        self.t0 = 0.0  # set by the first read: the clock starts when capture does
        self.glyphs = src.render_glyphs()

    def read(self) -> np.ndarray | None:
        src = self.src
        if self.i == 0:
            self.t0 = time.monotonic()
        if src.frames and self.i >= src.frames:
            return None
        if src.live and src.fps:
            delay = self.t0 + self.i / src.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:  # fell behind (the machine was busy): resynchronize, like a camera
                self.t0 = time.monotonic() - self.i / src.fps
        period = max(1, round(src.fps or 30))
        digit = (self.i // period) % 10
        frame = self.glyphs[digit].copy()
        # a small square moving along the bottom edge, so consecutive frames differ
        h, w = frame.shape[:2]
        s = max(2, h // 24)
        x = (self.i * s) % max(1, w - s)
        frame[h - s :, x : x + s] = 128
        self.i += 1
        return frame

    def close(self) -> None:
        pass


class SyntheticSource(Source):
    """A generated test pattern: a white digit on black that changes once a second
    (so a digits model has something to recognize) and a marker that moves every frame.

    Args:
        width, height: frame size.
        fps: frame rate; live sources are paced to it (0: as fast as possible).
        frames: stop after this many frames (0: never).
        live: behave as a camera (default) or as a file (no drops, no pacing).
        pattern: ``digits`` (default) or ``bars`` (color bars).
    """

    def __init__(
        self,
        uri: str = "synthetic://",
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        frames: int = 0,
        live: bool = True,
        pattern: str = "digits",
    ):
        if width < 8 or height < 8:
            raise InputError(f"{uri}: width and height must be at least 8, got {width}x{height}")
        if fps < 0 or frames < 0:
            raise InputError(f"{uri}: fps and frames must not be negative")
        if pattern not in ("digits", "bars"):
            raise InputError(f"{uri}: unknown pattern {pattern!r}; choose digits or bars")
        super().__init__(uri, live=live, fps=fps or None, total=frames or None)
        self.width, self.height, self.frames, self.pattern = width, height, frames, pattern

    def render_glyphs(self) -> list[np.ndarray]:
        import cv2

        out = []
        for d in range(10):
            img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
            if self.pattern == "bars":
                colors = [
                    (255, 255, 255),
                    (0, 255, 255),
                    (255, 255, 0),
                    (0, 255, 0),
                    (255, 0, 255),
                    (0, 0, 255),
                    (255, 0, 0),
                    (0, 0, 0),
                ]
                bw = self.width // len(colors) + 1
                for k, c in enumerate(colors):
                    img[:, k * bw : (k + 1) * bw] = c
            scale = min(self.width, self.height) / 40.0
            thick = max(1, round(scale * 2.5))
            (tw, th), _ = cv2.getTextSize(str(d), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            org = ((self.width - tw) // 2, (self.height + th) // 2)
            cv2.putText(img, str(d), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
            out.append(img)
        return out

    def open(self) -> Reader:
        return _SyntheticReader(self)


class _IterReader:
    def __init__(self, it: Iterator[np.ndarray], live: bool, fps: float | None):
        self.it = it
        self.live = live
        self.fps = fps
        self.next_t = 0.0

    def read(self) -> np.ndarray | None:
        if self.live and self.fps:
            now = time.monotonic()
            self.next_t = now if self.next_t == 0.0 else self.next_t + 1.0 / self.fps
            delay = self.next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return next(self.it, None)

    def close(self) -> None:
        pass


class FrameSource(Source):
    """Frames you already have (a list, an array or any iterable of BGR uint8 images).

    A list or array can be opened again (reopened after a failure); a one-shot iterator
    cannot. With ``live=True`` and ``fps`` it is paced like a camera.
    """

    def __init__(
        self, frames: Iterable[np.ndarray], uri: str = "frames://", *, live: bool = False, fps: float | None = None
    ):
        total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
        super().__init__(uri, live=live, fps=fps, total=total)
        self.frames = frames

    def open(self) -> Reader:
        return _IterReader(iter(self.frames), self.live, self.fps)


# -- URI parsing ---------------------------------------------------------------------------


def _query(uri: str) -> tuple[str, dict[str, str]]:
    if "?" not in uri:
        return uri, {}
    base, q = uri.split("?", 1)
    return base, dict(parse_qsl(q, keep_blank_values=True))


def _num(uri: str, opts: dict[str, Any], key: str, default: float | None, kind: type = int) -> Any:
    value = opts.get(key)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{uri}: option {key}={value!r} is not a number") from None


def open_source(
    uri: str | Path | int,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    flip: int | None = None,
    latency_ms: int | None = None,
) -> Source:
    """Make a :class:`Source` from a URI (see the module docstring).

    Args:
        uri: the source's address.
        width, height, fps: capture size and rate for cameras and the test pattern.
        flip: ``nvvidconv flip-method`` for CSI cameras (0-7; 2 is 180 degrees).
        latency_ms: RTSP jitter buffer (GStreamer; 200 ms by default instead of 2 s).
    """
    text = str(uri).strip()
    if not text:
        raise InputError("empty source; pass a camera, file or URI such as csi://0, /dev/video0 or video.mp4")
    defaults = {"width": width, "height": height, "fps": fps, "flip": flip}
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""

    if scheme == "synthetic":
        base, q = _query(text)
        opts = {k: v for k, v in defaults.items() if v is not None} | q
        unknown = set(q) - {"width", "height", "fps", "frames", "live", "pattern"}
        if unknown:
            raise InputError(
                f"{text}: unknown option(s) {sorted(unknown)}; use width, height, fps, frames, live, pattern"
            )
        return SyntheticSource(
            text,
            width=_num(text, opts, "width", 640),
            height=_num(text, opts, "height", 480),
            fps=_num(text, opts, "fps", 30.0, float),
            frames=_num(text, opts, "frames", 0),
            live=str(opts.get("live", "1")).lower() not in ("0", "false", "no"),
            pattern=str(opts.get("pattern", "digits")),
        )
    if scheme == "csi":
        base, q = _query(text)
        opts = {k: v for k, v in defaults.items() if v is not None} | q
        sensor = base[len("csi://") :] or "0"
        if not sensor.isdigit():
            raise InputError(f"{text}: expected csi://N with N the sensor id (0, 1, ...)")
        if not gstreamer_available():
            raise InputError(
                f"{text} needs OpenCV built with GStreamer and this one is not (pip wheels never are); on the "
                "Jetson `pip uninstall opencv-python-headless` in this environment so JetPack's OpenCV is used"
            )
        w, h = _num(text, opts, "width", 1280), _num(text, opts, "height", 720)
        rate, flip_m = _num(text, opts, "fps", 30.0, float), _num(text, opts, "flip", 0)
        import cv2

        pipeline = csi_pipeline(int(sensor), w, h, rate, flip_m)
        return VideoCaptureSource(
            text,
            pipeline,
            api=cv2.CAP_GSTREAMER,
            live=True,
            fps=rate,
            hint="is the camera connected and nvargus-daemon running (sudo systemctl restart nvargus-daemon)?",
        )
    if scheme in NETWORK_SCHEMES:
        import cv2

        if scheme.startswith("rtsp") and gstreamer_available():
            return VideoCaptureSource(
                text,
                rtsp_pipeline(text, latency_ms if latency_ms is not None else 200),
                api=cv2.CAP_GSTREAMER,
                live=True,
                hint="check the URL and the network",
            )
        if scheme.startswith("rtsp"):
            # FFmpeg: TCP and no input buffering are what keep latency low without GStreamer.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay")
        return VideoCaptureSource(text, text, api=cv2.CAP_FFMPEG, live=True, hint="check the URL and the network")

    if scheme == "v4l2" or text.startswith("/dev/video") or text.isdigit():
        base, q = _query(text)
        opts = {k: v for k, v in defaults.items() if v is not None} | q
        dev = base[len("v4l2://") :] if scheme == "v4l2" else base
        if not (dev.isdigit() or Path(dev).exists()):
            raise InputError(f"{text}: no such camera device {dev}; list cameras with `v4l2-ctl --list-devices`")
        import cv2

        props: dict[int, float] = {}
        fourcc = str(opts.get("format", "")).upper()
        if fourcc:
            if len(fourcc) != 4:
                raise InputError(f"{text}: format must be a FourCC such as MJPG or YUYV, got {fourcc!r}")
            props[cv2.CAP_PROP_FOURCC] = cv2.VideoWriter_fourcc(*fourcc)
        for key, prop in (
            ("width", cv2.CAP_PROP_FRAME_WIDTH),
            ("height", cv2.CAP_PROP_FRAME_HEIGHT),
            ("fps", cv2.CAP_PROP_FPS),
        ):
            value = _num(text, opts, key, None, float)
            if value:
                props[prop] = value
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        target: str | int = int(dev) if dev.isdigit() else dev
        return VideoCaptureSource(
            text,
            target,
            api=api,
            live=True,
            props=props,
            hint="is it in use by another program, or not a capture device?",
        )

    path_text = text[len("file://") :] if scheme == "file" else text
    if scheme and scheme != "file":
        raise InputError(
            f"unknown source scheme {scheme}://; use csi://, v4l2://, rtsp://, file://, synthetic:// or a path"
        )
    if any(c in path_text for c in "*?["):
        matches = (Path(p) for p in glob.glob(path_text, recursive=True))
        paths = sorted(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{text} matches no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(text, paths, fps=fps)
    path = Path(path_text).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise InputError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(text, paths, fps=fps)
    if not path.exists():
        raise InputError(
            f"source {text} does not exist; pass a video or image file, a folder, csi://0, /dev/video0, "
            "rtsp://... or synthetic://"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(text, [path], fps=fps)
    source = VideoCaptureSource(text, str(path), live=False, hint="not a video OpenCV can decode", fps=fps)
    return source
