"""Frame sources addressed by URI, as in jetson-inference.

==========================================  ============================================
``csi://0``                                 Jetson CSI camera (GStreamer nvarguscamerasrc)
``v4l2:///dev/video0``, ``/dev/video0``, ``0``  USB (V4L2) camera
``rtsp://host:554/path``                    network stream (``latency`` in ms)
``video.mp4``, ``file://video.mp4``          video file
``img.png``, ``folder/``, ``'shots/*.jpg'``  image file, folder (recursive), glob
``synthetic://``                            generated test pattern (digits the digits model knows)
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

Live network streams through OpenCV's FFmpeg backend are opened with one decoder thread
(FFmpeg's frame threading holds back one frame per extra thread), with open and read
timeouts from the stream's ``stall_timeout`` (OpenCV's default is 30 s each), and with
FFmpeg's and OpenCV's own log lines off: failures are reported by the stream, once each.
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
        # set by the stream before it opens the source: bounds for one open and one read, in
        # seconds, for sources that can enforce them (None: the backend's own)
        self.open_timeout: float | None = None
        self.read_timeout: float | None = None
        # the least time an open of this source must be given before it counts as stuck
        self.min_open_timeout = 0.0
        # the keyword options of open_source() that this source uses (the CLI warns about
        # an option no source uses)
        self.options_used: set[str] = set()

    @abstractmethod
    def open(self) -> Reader:
        """Open the source and return a reader; raise :class:`EdgeVitError` if it cannot be opened."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, live={self.live})"


# -- OpenCV VideoCapture: cameras, network streams, video files ---------------------------

# FFmpeg options for network streams, read by OpenCV at every FFmpeg open: RTSP over TCP.
# They apply to every FFmpeg open in the process, files included, so nothing that changes
# how files are read: "fflags;nobuffer" (no backlog from the probe) loses a video file's
# first frames, and an FFV1 .mkv becomes unreadable. The backlog is skipped by the reader.
FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp"
# OpenCV's opens of cameras and streams: an RTSP open through FFmpeg probes the stream
# until it has seen a keyframe and more (1-2 s at 15 fps here, over 5 s on a busy machine
# now and then), a GStreamer pipeline or a CSI camera takes a second or two to start
MIN_OPEN_TIMEOUT_S = 5.0
FAST_FAIL_S = 0.5  # an open refused faster than this may be a backend refusing a parameter


def gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def is_jetson() -> bool:
    """A Jetson (L4T): NVIDIA's GStreamer elements (nvvidconv, nvv4l2decoder) are there."""
    return Path("/etc/nv_tegra_release").exists()


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


def rtsp_pipeline(url: str, latency_ms: int = 200, jetson: bool | None = None) -> str:
    """A low-latency GStreamer pipeline for an RTSP stream.

    Args:
        url: the stream.
        latency_ms: rtspsrc's jitter buffer (GStreamer's default is 2000 ms); frames later
            than that are dropped rather than delaying the ones after them.
        jetson: decode for a Jetson: ``decodebin`` picks the hardware decoder there, whose
            frames live in NVMM memory that only ``nvvidconv`` reads (default: detected).
    """
    jetson = is_jetson() if jetson is None else jetson
    convert = "nvvidconv ! video/x-raw,format=BGRx ! videoconvert" if jetson else "videoconvert"
    return (
        f"rtspsrc location={url} latency={latency_ms} drop-on-latency=true ! decodebin ! {convert} ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


_ffmpeg_prepared = False


def prepare_ffmpeg_streams() -> None:
    """Process-wide settings for live streams read through OpenCV's FFmpeg backend; each
    is left alone if the user set it. Called before the first open of such a stream."""
    global _ffmpeg_prepared
    if _ffmpeg_prepared:
        return
    _ffmpeg_prepared = True
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_CAPTURE_OPTIONS)
    # OpenCV serializes every FFmpeg open behind one lock unless told FFmpeg is thread-safe
    # (it is, since FFmpeg 4): one camera hanging in its open would hold up every other
    # camera's (re)open for its whole open timeout. Read at every open.
    os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
    # FFmpeg's own lines ("Connection refused", "missing picture in access unit", ...):
    # quiet (-8). Read once, at the process's first FFmpeg open. Never a value >= 0 here:
    # OpenCV then prints FFmpeg's log to stdout, where results may go.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # OpenCV's WARN lines for a failed open ("can't be used to capture by name", which
    # is misleading) or a timeout: the stream reports each failure itself. Only if the
    # log level is still OpenCV's default (WARNING) and not set from the environment.
    if "OPENCV_LOG_LEVEL" not in os.environ:
        import cv2

        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging is not None and logging.getLogLevel() == logging.LOG_LEVEL_WARNING:
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)


class _CaptureReader:
    """A cv2.VideoCapture as a :class:`Reader`.

    ``capture_time`` is the wall-clock capture time of the frame last read when the
    backend reports one (FFmpeg network streams: the sender's clock from RTCP sender
    reports, known after the first report), else None. With ``skip_backlog`` the first
    read skips the frames FFmpeg buffered while it probed the stream (a second or two of
    them, stale): they come out faster than half a frame interval each, a live one does not.
    """

    def __init__(self, cap: Any, uri: str, live: bool, stamps: bool = False, skip_backlog: bool = False):
        self.cap = cap
        self.uri = uri
        self.live = live
        self.capture_time: float | None = None
        self._stamps = stamps
        self._skip_backlog = skip_backlog

    def _grab_past_backlog(self) -> bool:
        import cv2

        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if not 1.0 <= fps <= 240.0:
            return self.cap.grab()
        half = 0.5 / fps
        for _ in range(int(fps * 5)):  # the probe buffers a few seconds at most
            t0 = time.monotonic()
            if not self.cap.grab():
                return False
            if time.monotonic() - t0 > half:  # it had to wait for this one: live
                break
        return True

    def read(self) -> np.ndarray | None:
        if self._skip_backlog:
            self._skip_backlog = False
            ok = self._grab_past_backlog()
            ok, frame = self.cap.retrieve() if ok else (False, None)
        else:
            ok, frame = self.cap.read()
        if ok and frame is not None:
            if self._stamps:
                self.capture_time = self._stamp()
            return frame
        if self.live:
            raise CaptureError(f"{self.uri} gave no frame (camera disconnected, stream lost or pipeline failed)")
        return None  # end of the file

    def _stamp(self) -> float | None:
        import cv2

        start_us = self.cap.get(cv2.CAP_PROP_STREAM_OPEN_TIME_USEC)  # wall clock of stream time 0
        if start_us <= 0:  # no RTCP sender report yet
            return None
        return start_us / 1e6 + self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

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
        if live:
            self.min_open_timeout = MIN_OPEN_TIMEOUT_S
        self.target = target
        self.api = api
        self.props = dict(props or {})
        self.hint = hint
        self._params_ok: bool | None = None  # does the backend take the open parameters?

    def open_params(self) -> list[int]:
        """``cv2.VideoCapture`` open parameters: timeouts (OpenCV's default is 30 s each) and,
        for FFmpeg live streams, one decoder thread. Only for backends that take them
        (FFmpeg; GStreamer from OpenCV 4.6, checked at the first open); a parameter the
        backend does not know makes the open fail. They work only at open: ``cap.set``
        of a timeout after the open is ignored."""
        import cv2

        if not self.live or self.api not in (cv2.CAP_FFMPEG, cv2.CAP_GSTREAMER) or self._params_ok is False:
            return []
        params: list[int] = []
        for seconds, name in (
            (self.open_timeout, "CAP_PROP_OPEN_TIMEOUT_MSEC"),
            (self.read_timeout, "CAP_PROP_READ_TIMEOUT_MSEC"),
        ):
            if seconds and hasattr(cv2, name):
                params += [getattr(cv2, name), max(1, round(seconds * 1000))]
        if self.api == cv2.CAP_FFMPEG and hasattr(cv2, "CAP_PROP_N_THREADS"):
            # FFmpeg's frame threading holds back one frame per decoder thread beyond the
            # first (it defaults to the core count): one thread gives the freshest frame
            params += [cv2.CAP_PROP_N_THREADS, 1]
        return params

    def open(self) -> Reader:
        import cv2

        api = cv2.CAP_ANY if self.api is None else self.api
        if self.live and api == cv2.CAP_FFMPEG:
            prepare_ffmpeg_streams()
        params = self.open_params()
        t0 = time.monotonic()
        cap = cv2.VideoCapture(self.target, api, params) if params else cv2.VideoCapture(self.target, api)
        took = time.monotonic() - t0
        if not cap.isOpened() and params and api != cv2.CAP_FFMPEG and self._params_ok is None and took < FAST_FAIL_S:
            # an older GStreamer backend refuses unknown parameters at once: try once without
            cap.release()
            cap = cv2.VideoCapture(self.target, api)
            if cap.isOpened():
                self._params_ok = False  # from now on the stall supervisor alone bounds it
        if not cap.isOpened():
            cap.release()
            if self.open_timeout and took >= 0.9 * self.open_timeout:
                raise CaptureError(f"cannot open {self.uri}: no answer within {self.open_timeout:g} s")
            raise CaptureError(f"cannot open {self.uri}" + (f": {self.hint}" if self.hint else ""))
        if params and self._params_ok is None:
            self._params_ok = True
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
        ffmpeg_live = self.live and api == cv2.CAP_FFMPEG
        stamps = ffmpeg_live and hasattr(cv2, "CAP_PROP_STREAM_OPEN_TIME_USEC")
        return _CaptureReader(cap, self.uri, self.live, stamps, skip_backlog=ffmpeg_live)


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

# One handwritten digit per class from scikit-learn's bundled digits (the data set the
# pipeline's digits model is trained on): the medoid of each class, the sample closest
# to the class mean, as 8x8 values 0-16 in base 17 ("g" is 16), row by row.
# tests/stream/test_stream_uris.py checks them against edgevit.data.load_digits.
DIGITS_8X8 = (
    "002e910001ccb80004e10d3008d00a6005g1089000g00b9000dbaf40003fg500",
    "006a8300006gg900009gg600007gga0000bgg800007gg90000agg6000049cb20",
    "01cg50000bggd0000765e2000000c3000004d000001d500000aga84000dfgc70",
    "006cga0004f8ce000000d8000006e1000005f80000002f5000145f80005ge910",
    "0007g200000fb00000be650004g7ed200agdgga008fega100009g1000009f100",
    "019ggf3008gc883006g9300008ggg4000364db0000008d000058fa0000bgb100",
    "001d7000007e200000d5000000g3000003gacc3003gb59c001db4db0001cgb20",
    "003gcc7000cddg6000206e000014da10009ggg80004cc710000e6000004g2000",
    "003dd30002eccb0004g85f3001deg70000bgd10001gcde1000dd9g70003dga10",
    "004dd40000gaa80000e76b00006ffg2000000b500000079001446ca0016bfc10",
)


def digit_image(d: int) -> np.ndarray:
    """Digit ``d`` of :data:`DIGITS_8X8` as an 8x8 uint8 image (0-16 scaled to 0-255, as
    :func:`edgevit.data.load_digits` scales them)."""
    values = np.array([int(c, 17) for c in DIGITS_8X8[d]], dtype=np.float64).reshape(8, 8)
    return np.rint(values * (255.0 / 16.0)).astype(np.uint8)


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
        s = max(2, h // 48)
        x = (self.i * s) % max(1, w - s)
        frame[h - s :, x : x + s] = 128
        self.i += 1
        return frame

    def close(self) -> None:
        pass


class SyntheticSource(Source):
    """A generated test pattern: a handwritten digit that changes once a second and a
    marker that moves every frame.

    The ``digits`` pattern draws digits of the data set the pipeline's digits model learnt
    (:data:`DIGITS_8X8`), each 8x8 digit stretched over the whole frame, so the model's
    own preprocessing (gray, area-resize to 8x8) gives it back exactly when width and
    height are multiples of 8: the model recognizes what the pattern shows.

    Args:
        width, height: frame size.
        fps: frame rate; live sources are paced to it (0: as fast as possible).
        frames: stop after this many frames (0: never).
        live: behave as a camera (default) or as a file (no drops, no pacing).
        pattern: ``digits`` (default) or ``bars`` (color bars with a printed digit).
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
        """The ten BGR frames of the pattern, one per digit."""
        import cv2

        size = (self.width, self.height)
        if self.pattern == "digits":
            return [
                cv2.cvtColor(cv2.resize(digit_image(d), size, interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
                for d in range(10)
            ]
        out = []
        for d in range(10):
            img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
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

    def options(q: dict[str, str], keys: tuple[str, ...]) -> tuple[dict[str, Any], set[str]]:
        # keyword options, overridden by the URI's query; and which keyword options count
        opts: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None and k in keys}
        used = {k for k in opts if k not in q}
        opts.update(q)
        return opts, used

    if scheme == "synthetic":
        base, q = _query(text)
        opts, used = options(q, ("width", "height", "fps"))
        unknown = set(q) - {"width", "height", "fps", "frames", "live", "pattern"}
        if unknown:
            raise InputError(
                f"{text}: unknown option(s) {sorted(unknown)}; use width, height, fps, frames, live, pattern"
            )
        return _using(
            SyntheticSource(
                text,
                width=_num(text, opts, "width", 640),
                height=_num(text, opts, "height", 480),
                fps=_num(text, opts, "fps", 30.0, float),
                frames=_num(text, opts, "frames", 0),
                live=str(opts.get("live", "1")).lower() not in ("0", "false", "no"),
                pattern=str(opts.get("pattern", "digits")),
            ),
            used,
        )
    if scheme == "csi":
        base, q = _query(text)
        opts, used = options(q, ("width", "height", "fps", "flip"))
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
        source = VideoCaptureSource(
            text,
            pipeline,
            api=cv2.CAP_GSTREAMER,
            live=True,
            fps=rate,
            hint="is the camera connected and nvargus-daemon running (sudo systemctl restart nvargus-daemon)?",
        )
        return _using(source, used)
    if scheme in NETWORK_SCHEMES:
        import cv2

        if scheme.startswith("rtsp") and gstreamer_available():
            source = VideoCaptureSource(
                text,
                rtsp_pipeline(text, latency_ms if latency_ms is not None else 200),
                api=cv2.CAP_GSTREAMER,
                live=True,
                hint="check the URL and the network",
            )
            return _using(source, {"latency_ms"} if latency_ms is not None else set())
        # FFmpeg (no jitter buffer, so latency_ms has nothing to set): settings made before
        # any source opens, since some are read only at the process's first FFmpeg open
        prepare_ffmpeg_streams()
        return VideoCaptureSource(text, text, api=cv2.CAP_FFMPEG, live=True, hint="check the URL and the network")

    if scheme == "v4l2" or text.startswith("/dev/video") or text.isdigit():
        base, q = _query(text)
        opts, used = options(q, ("width", "height", "fps"))
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
        source = VideoCaptureSource(
            text,
            target,
            api=api,
            live=True,
            props=props,
            hint="is it in use by another program, or not a capture device?",
        )
        return _using(source, used)

    path_text = text[len("file://") :] if scheme == "file" else text
    file_used = {"fps"} if fps is not None else set()  # the rate of video sinks
    if scheme and scheme != "file":
        raise InputError(
            f"unknown source scheme {scheme}://; use csi://, v4l2://, rtsp://, file://, synthetic:// or a path"
        )
    if any(c in path_text for c in "*?["):
        matches = (Path(p) for p in glob.glob(path_text, recursive=True))
        paths = sorted(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{text} matches no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return _using(ImageSource(text, paths, fps=fps), file_used)
    path = Path(path_text).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise InputError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return _using(ImageSource(text, paths, fps=fps), file_used)
    if not path.exists():
        raise InputError(
            f"source {text} does not exist; pass a video or image file, a folder, csi://0, /dev/video0, "
            "rtsp://... or synthetic://"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _using(ImageSource(text, [path], fps=fps), file_used)
    source = VideoCaptureSource(text, str(path), live=False, hint="not a video OpenCV can decode", fps=fps)
    return _using(source, file_used)


def _using(source: Source, used: set[str]) -> Source:
    source.options_used = set(used)
    return source
