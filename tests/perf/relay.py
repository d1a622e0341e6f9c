"""A link with latency, for ssh's ProxyCommand: ``relay.py HOST PORT DELAY`` connects to HOST:PORT and
copies stdin to the socket and the socket to stdout, each chunk held DELAY seconds first (each way,
so a round trip costs twice DELAY). The kernel's netem would do it on a real interface, and is not
available on these machines; this adds the delay without limiting the bandwidth, and keeps the
order of the bytes. The benchmark (tests/perf/bench.py) times ``ssh HOST true`` and mlxfix over it.
"""

from __future__ import annotations

import heapq
import os
import socket
import sys
import threading
import time


def _pump(read: object, write: object, delay: float, done: threading.Event, end: object = None) -> None:
    """Read chunks as they come, write each one ``delay`` seconds after it came; at the end of the
    input, call ``end`` (half-close) or, without one, set ``done``."""
    queue: list[tuple[float, int, bytes]] = []
    cv = threading.Condition()
    seq = 0

    def reader() -> None:
        nonlocal seq
        while True:
            try:
                data = read()  # type: ignore[operator]
            except OSError:
                data = b""
            with cv:
                heapq.heappush(queue, (time.monotonic() + delay, seq, data))
                seq += 1
                cv.notify()
            if not data:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        with cv:
            while not queue:
                cv.wait()
            due, _, data = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                cv.wait(wait)
                continue
            heapq.heappop(queue)
        if not data:
            if end is None:
                done.set()
            else:
                try:
                    end()  # type: ignore[operator]
                except OSError:
                    done.set()
            return
        try:
            write(data)  # type: ignore[operator]
        except OSError:
            done.set()
            return


def main() -> int:
    host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = threading.Event()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def to_stdout(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(stdout, view) :]

    up = threading.Thread(
        target=_pump,
        args=(lambda: os.read(stdin, 65536), sock.sendall, delay, done, lambda: sock.shutdown(socket.SHUT_WR)),
        daemon=True,
    )
    down = threading.Thread(target=_pump, args=(lambda: sock.recv(65536), to_stdout, delay, done), daemon=True)
    up.start()
    down.start()
    done.wait()  # the server closed the connection (ssh's end is half-closed as it ends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
