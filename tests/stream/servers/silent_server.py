#!/usr/bin/env python3
"""A TCP listener that accepts connections and never answers (an RTSP camera that hangs).

    python silent_server.py [PORT] [MAX_SECONDS]    -> prints "ready PORT" (PORT 0: any free port)

SIGTERM stops it; it also stops by itself after MAX_SECONDS (600).
"""

from __future__ import annotations

import signal
import socket
import sys
import time


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    limit = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    print("ready", s.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    held = []  # connections are kept open, read from and answered never
    s.settimeout(0.5)
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        try:
            conn, _ = s.accept()
            held.append(conn)
        except TimeoutError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
