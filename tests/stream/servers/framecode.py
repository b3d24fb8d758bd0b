"""A 64-bit code drawn into video frames as a grid of black/white blocks, so a client can
read the frame number and the sender's clock straight from the decoded pixels.

Pure Python (no numpy): used by rtsp_server.py and benchmarks/gst_client_latency.py under
the system python3, and by benchmarks/bench_camera_latency.py under the venv.

Layout: the top half of the luma plane is a 16 x 4 grid of blocks; bit k (MSB first) is
block (row k // 16, column k % 16): white (235) for 1, black (16) for 0.
    bits  0..15  frame number mod 2**16
    bits 16..47  sender wall-clock time in ms mod 2**32 (time.time(); same machine)
    bits 48..63  check = (frame ^ ms_lo16 ^ ms_hi16 ^ 0xA5A5)
The bottom half has a white bar that moves every frame (motion for the encoder).
"""

from __future__ import annotations

COLS, ROWS = 16, 4
BLACK, WHITE = 16, 235


def pack(frame_no: int, t_ms: int) -> int:
    f = frame_no & 0xFFFF
    ms = t_ms & 0xFFFFFFFF
    check = f ^ (ms & 0xFFFF) ^ (ms >> 16) ^ 0xA5A5
    return (f << 48) | (ms << 16) | check


def unpack(code: int) -> tuple[int, int] | None:
    """(frame_no mod 2**16, ms mod 2**32), or None if the check fails."""
    f = (code >> 48) & 0xFFFF
    ms = (code >> 16) & 0xFFFFFFFF
    check = code & 0xFFFF
    if check != f ^ (ms & 0xFFFF) ^ (ms >> 16) ^ 0xA5A5:
        return None
    return f, ms


def grid(width: int, height: int) -> tuple[int, int]:
    """Block width and height in pixels (multiples of 2 so I420 chroma stays aligned)."""
    bw = (width // COLS) & ~1
    bh = ((height // 2) // ROWS) & ~1
    return bw, bh


def luma_plane(width: int, height: int, frame_no: int, t_ms: int) -> bytes:
    """The Y plane (width*height bytes) of one coded frame."""
    code = pack(frame_no, t_ms)
    bw, bh = grid(width, height)
    rows = []
    for r in range(ROWS):
        line = bytearray()
        for c in range(COLS):
            bit = (code >> (63 - (r * COLS + c))) & 1
            line += bytes([WHITE if bit else BLACK]) * bw
        line += bytes([BLACK]) * (width - len(line))
        rows.append(bytes(line) * bh)
    top = b"".join(rows)
    # pad the top half, then the moving bar in the bottom half
    rest_rows = height - ROWS * bh
    bar_w = max(2, width // 20)
    x = (frame_no * max(2, width // 60)) % max(1, width - bar_w)
    bar_line = bytes([64]) * x + bytes([WHITE]) * bar_w + bytes([64]) * (width - x - bar_w)
    return top + bar_line * rest_rows


def i420_frame(width: int, height: int, frame_no: int, t_ms: int) -> bytes:
    """A full I420 frame: the coded luma plane and neutral chroma."""
    y = luma_plane(width, height, frame_no, t_ms)
    c = bytes([128]) * (((width + 1) // 2) * ((height + 1) // 2) * 2)
    return y + c


def decode_luma(get, width: int, height: int) -> tuple[int, int] | None:
    """Decode from a pixel accessor ``get(x, y) -> luma``; None if unreadable."""
    bw, bh = grid(width, height)
    code = 0
    for r in range(ROWS):
        for c in range(COLS):
            v = get(c * bw + bw // 2, r * bh + bh // 2)
            code = (code << 1) | (1 if v >= 128 else 0)
    return unpack(code)


def decode_bytes(buf: bytes, width: int, height: int, stride: int | None = None) -> tuple[int, int] | None:
    """Decode from a buffer that starts with an 8-bit luma (or gray) plane."""
    s = stride or width
    return decode_luma(lambda x, y: buf[y * s + x], width, height)


def decode_bgr(frame) -> tuple[int, int] | None:
    """Decode from a numpy BGR (or gray) frame as cv2.VideoCapture returns it."""
    h, w = frame.shape[:2]
    g = frame if frame.ndim == 2 else frame[:, :, 1]  # green is close enough to luma for b/w blocks
    return decode_luma(lambda x, y: int(g[y, x]), w, h)


def latency_ms(t_ms_code: int, now_s: float) -> float:
    """Receive time minus the code's send time, in ms (handles the 2**32 wrap)."""
    now_ms = int(now_s * 1000.0)
    d = (now_ms - t_ms_code) & 0xFFFFFFFF
    if d > 0x7FFFFFFF:
        d -= 1 << 32
    return d + (now_s * 1000.0 - now_ms)
