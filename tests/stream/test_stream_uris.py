"""Source and sink URIs, the CSI pipeline, the overlay and the video sink's atomic rename."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stream_doubles import linear_model, read_video

from edgevit.errors import InputError
from edgevit.stream import (
    FrameSource,
    ImageSource,
    JsonlSink,
    Stream,
    SyntheticSource,
    VideoCaptureSource,
    VideoSink,
    csi_pipeline,
    draw_overlay,
    open_sink,
    open_source,
)
from edgevit.stream.convert import FrameConverter
from edgevit.stream.sources import MIN_OPEN_TIMEOUT_S, digit_image, gstreamer_available, rtsp_pipeline


def test_source_uris(tmp_path: Path) -> None:
    import cv2

    s = open_source("synthetic://?fps=15&frames=7&width=100&height=50&live=0")
    assert isinstance(s, SyntheticSource) and not s.live and s.fps == 15 and s.total == 7
    frames = []
    reader = s.open()
    while (f := reader.read()) is not None:
        frames.append(f)
    assert len(frames) == 7 and frames[0].shape == (50, 100, 3) and frames[0].dtype == np.uint8
    assert open_source("synthetic://", width=64, height=32).open().read().shape == (32, 64, 3)  # CLI options
    assert open_source("synthetic://").live

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    assert isinstance(open_source(tmp_path), ImageSource) and open_source(tmp_path).total == 3
    assert open_source(str(tmp_path / "*.png")).total == 3
    assert open_source(f"file://{tmp_path / '1.png'}").total == 1
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    for _ in range(5):
        w.write(np.zeros((16, 16, 3), np.uint8))
    w.release()
    v = open_source(f"file://{video}")
    assert isinstance(v, VideoCaptureSource) and not v.live
    v.open().close()
    assert v.total == 5 and v.fps == 10

    for bad, message in [
        ("", "empty"),
        ("nope://x", "unknown source scheme"),
        (str(tmp_path / "x.mp4"), "exist"),
        ("synthetic://?fps=abc", "not a number"),
        ("/dev/video99", "no such camera"),
        (str(tmp_path / "*.jpg"), "matches no images"),
    ]:
        with pytest.raises(InputError, match=message):
            open_source(bad)


def test_csi_pipeline_is_the_low_latency_nvargus_pipeline() -> None:
    p = csi_pipeline(1, 1920, 1080, 30, 2)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,")
    assert "framerate=30/1" in p and "nvvidconv flip-method=2" in p
    assert p.endswith("appsink drop=true max-buffers=1 sync=false")


def test_sink_uris(tmp_path: Path) -> None:
    assert isinstance(open_sink("-"), JsonlSink)
    assert isinstance(open_sink(f"jsonl://{tmp_path / 'a.jsonl'}"), JsonlSink)
    assert isinstance(open_sink(tmp_path / "b.jsonl"), JsonlSink)
    v = open_sink(f"file://{tmp_path / 'c.avi'}?fps=12")
    assert isinstance(v, VideoSink) and v.codec == "MJPG" and v.fps == 12
    with pytest.raises(InputError, match="unknown video type"):
        open_sink(tmp_path / "d.xyz")


def test_video_sink_writes_one_file_per_source_renamed_into_place(tmp_path: Path) -> None:
    a = [np.full((48, 64, 3), 40, np.uint8)] * 12
    b = [np.full((32, 32, 3), 200, np.uint8)] * 7
    out = tmp_path / "out.mkv"
    stream = Stream(linear_model(), [FrameSource(a, "a://"), FrameSource(b, "b://")], [out])
    seen_partial = []
    for _ in stream:
        seen_partial.append(any(tmp_path.glob(".out-*.partial-*.mkv")) and not (tmp_path / "out-0.mkv").exists())
    assert all(seen_partial[1:])  # while running: only the temporary files
    got_a, got_b = read_video(tmp_path / "out-0.mkv"), read_video(tmp_path / "out-1.mkv")
    assert len(got_a) == 12 and len(got_b) == 7
    assert got_a[0].shape == (48, 64, 3) and got_b[0].shape == (32, 32, 3)
    assert not list(tmp_path.glob(".*"))


def test_overlay_draws_a_copy() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    out = draw_overlay(frame, "7", 0.93, 29.9, 12.5)
    assert out.shape == frame.shape and out.any() and not frame.any()
    assert draw_overlay(np.zeros((64, 64), np.uint8), "1", 0.5, 1.0, 1.0).shape == (64, 64, 3)


def test_three_channel_model_gets_rgb(tmp_path: Path) -> None:
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    model = linear_model(channels=3)
    results = list(Stream(model, [FrameSource([frame], "red://")], top_k=3))
    rgb = frame[..., ::-1].copy()
    expected = model.predict([rgb], top_k=3)
    np.testing.assert_array_equal(results[0].indices, expected.indices[0])
    np.testing.assert_allclose(results[0].probs, expected.probs[0], atol=1e-6)


def test_rtsp_pipeline_decodes_through_nvvidconv_on_a_jetson() -> None:
    desktop = rtsp_pipeline("rtsp://cam/s", 100, jetson=False)
    jetson = rtsp_pipeline("rtsp://cam/s", 100, jetson=True)
    for p in (desktop, jetson):
        assert p.startswith("rtspsrc location=rtsp://cam/s latency=100 drop-on-latency=true ! decodebin ! ")
        assert p.endswith("video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")
    # the Jetson's hardware decoder gives NVMM buffers, which only nvvidconv reads
    assert "nvvidconv ! video/x-raw,format=BGRx ! videoconvert" in jetson and "nvvidconv" not in desktop


def test_live_streams_are_opened_with_timeouts_and_one_decoder_thread() -> None:
    """Issues #17.2/#17.3: FFmpeg open params from the stream's stall timeout (OpenCV's defaults
    are 30 s each and one decoder thread per core); files and cameras get none."""
    import cv2

    source = open_source("rtsp://127.0.0.1:9/x")
    assert source.min_open_timeout == MIN_OPEN_TIMEOUT_S
    with Stream(linear_model(), [source], stall_timeout=8.0) as stream:
        params = dict(zip(*[iter(source.open_params())] * 2, strict=True))
        stream.stop()
    if not gstreamer_available():  # pip's OpenCV: RTSP through FFmpeg
        assert params == {
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC: 8000,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC: 4000,  # a freeze costs two reads: the held-back frame, then none
            cv2.CAP_PROP_N_THREADS: 1,
        }
    video = VideoCaptureSource("v.mp4", "v.mp4", live=False)
    assert video.open_params() == []


def test_synthetic_digits_are_the_medoids_of_the_digits_data_set() -> None:
    """The pattern's digits come from the data set the pipeline's model learns (checked here
    against scikit-learn's copy, so the device needs no scikit-learn)."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits as sk_digits

    from edgevit.data import load_digits

    data = sk_digits()
    scaled = load_digits()  # the same images, 0-16 scaled to 0-255
    all_images = np.concatenate([scaled.train.images, scaled.val.images, scaled.test.images])[..., 0]
    for d in range(10):
        imgs = data.images[data.target == d].reshape(-1, 64)
        medoid = imgs[np.argmin(((imgs - imgs.mean(0)) ** 2).sum(1))].reshape(8, 8)
        assert np.array_equal(digit_image(d), np.rint(medoid * 255 / 16).astype(np.uint8))
        assert any(np.array_equal(digit_image(d), img) for img in all_images)


def test_synthetic_digits_survive_the_models_preprocessing() -> None:
    """Each frame, turned gray and area-resized to 8x8 as the model does, is the digit itself."""
    model = linear_model()
    src = SyntheticSource(width=640, height=480)
    for d, frame in enumerate(src.render_glyphs()):
        small = FrameConverter(model.preprocess)(frame)[..., 0]
        assert np.array_equal(small, digit_image(d))
