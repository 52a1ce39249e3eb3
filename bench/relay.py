#!/usr/bin/env python3
"""A TCP relay that delays every byte by a fixed time each way: a wide-area round trip on
loopback, where this kernel has no `netem`.

Each direction of each connection has a reader that stamps what it reads with its arrival time
and a writer that sends it once the delay has passed, so bytes keep flowing at the link's rate
while each takes the delay (a relay that held one chunk at a time would cap throughput at a
chunk per delay). What is held is bounded in bytes, not chunks. Both sockets set TCP_NODELAY:
without it, Nagle's algorithm in the relay holds small replies back and punishes request/reply
protocols beyond the delay asked for.

Usage: bench/relay.py LISTEN_PORT TARGET_PORT DELAY_MS   (one way; 25 gives a 50 ms round trip)
Prints "relay listening on 127.0.0.1:PORT" once ready (PORT 0 picks a free one).
"""

import collections
import socket
import sys
import threading
import time

CHUNK = 64 << 10
HELD_MAX = 8 << 20


class Pipe:
    """One direction: bytes read from `src` are written to `dst` `delay` seconds later."""

    def __init__(self, src, dst, delay):
        self.src, self.dst, self.delay = src, dst, delay
        self.queue = collections.deque()
        self.held = 0
        self.done = False
        self.cond = threading.Condition()

    def read(self):
        try:
            while True:
                data = self.src.recv(CHUNK)
                with self.cond:
                    while self.held >= HELD_MAX:
                        self.cond.wait()
                    self.queue.append((time.monotonic() + self.delay, data))
                    self.held += len(data)
                    self.cond.notify_all()
                if not data:
                    return
        except OSError:
            with self.cond:
                self.queue.append((time.monotonic(), b""))
                self.cond.notify_all()

    def write(self):
        try:
            while True:
                with self.cond:
                    while not self.queue:
                        self.cond.wait()
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with self.cond:
                    self.queue.popleft()
                    self.held -= len(data)
                    self.cond.notify_all()
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
        except OSError:
            pass


def serve(conn, target_port, delay):
    up = socket.create_connection(("127.0.0.1", target_port))
    for s in (conn, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = []
    for a, b in ((conn, up), (up, conn)):
        p = Pipe(a, b, delay)
        threads += [threading.Thread(target=p.read, daemon=True),
                    threading.Thread(target=p.write, daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.close()
    up.close()


def main():
    listen_port, target_port, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(128)
    print(f"relay listening on 127.0.0.1:{ls.getsockname()[1]}", flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn, target_port, delay_ms / 1000), daemon=True).start()


if __name__ == "__main__":
    main()
