"""A flaky object store for tests: an HTTP/1.1 proxy on loopback in front of moto that
adds latency, drops connections and answers 503, as real S3 endpoints sometimes do.

Every request is read in full (Content-Length or chunked body), then, after the added
latency, one of:
- forwarded to the upstream endpoint and its reply relayed (the usual case);
- dropped before forwarding: the connection is closed without a reply, nothing happened;
- dropped after forwarding: the upstream applied the request (an object was written, a
  conditional PUT succeeded) but the client's connection is reset instead of a reply,
  so its retry meets the effect of its own first attempt: the nasty real-world case;
- answered `503 SlowDown` (or `503 ServiceUnavailable`) with S3's XML error body, not
  forwarded.

Requests are counted per kind (`methods`: GET, HEAD, PUT, LIST, ...), so that tests can
assert how many requests a command makes, deterministic where its wall time is not.

Faults are drawn from a seeded `random.Random`, one draw per request in arrival order,
and counted (`dropped_before`, `dropped_after`, `errors`), so tests can check that they
really happened; `injected` lists them (fate, method, path). `force(ERROR, DROP_AFTER,
..., where=...)` sets the fates of the next requests (whose path contains `where`)
whatever the rates, for tests of one fault at one place.
Client connections are kept alive as HTTP/1.1 allows; each forwarded request uses a
fresh upstream connection, so a fault never leaves the upstream side in an odd state.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "expect", "content-length"})
"""Headers about one connection, not the message: the proxy sets its own."""
NO_BODY_STATUSES = frozenset({204, 304})

FORWARD, DROP_BEFORE, DROP_AFTER, ERROR = "forward", "drop-before", "drop-after", "error"


class FaultProxy(ThreadingHTTPServer):
    """The proxy server; `url` is what AWS_ENDPOINT_URL should point at."""

    daemon_threads = True

    def __init__(self, upstream_url: str, latency_s: float = 0.0, drop_rate: float = 0.0,
                 error_rate: float = 0.0, seed: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        upstream = urlsplit(upstream_url)
        assert upstream.scheme == "http" and upstream.hostname == "127.0.0.1", "loopback moto only"
        self.upstream = (upstream.hostname, upstream.port or 80)
        self.latency_s = latency_s
        self.drop_rate = drop_rate
        self.error_rate = error_rate
        self.injected: list[tuple[str, str, str]] = []
        self._forced: deque[tuple[str, str]] = deque()
        self.connections = 0
        self.requests = 0
        self.forwarded = 0
        self.dropped_before = 0
        self.dropped_after = 0
        self.errors = 0
        self.methods: Counter[str] = Counter()
        """Requests per kind: 'GET', 'HEAD', 'PUT', ..., and 'LIST' (a GET of a bucket
        with list-type=2), for tests that count what a command asks."""
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def dropped(self) -> int:
        return self.dropped_before + self.dropped_after

    @property
    def faults(self) -> int:
        return self.dropped + self.errors

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"connections": self.connections, "requests": self.requests, "forwarded": self.forwarded,
                    "dropped_before": self.dropped_before, "dropped_after": self.dropped_after, "errors": self.errors}

    def reset_counts(self) -> None:
        """Start counting afresh (the latency and fault rates stay)."""
        with self._lock:
            self.requests = self.forwarded = self.dropped_before = self.dropped_after = self.errors = 0
            self.methods.clear()

    def force(self, *fates: str, where: str = "") -> None:
        """The next requests whose path contains `where` meet these fates (FORWARD,
        DROP_BEFORE, DROP_AFTER, ERROR), in order; other requests meet the rates."""
        assert set(fates) <= {FORWARD, DROP_BEFORE, DROP_AFTER, ERROR}, fates
        with self._lock:
            self._forced.extend((where, fate) for fate in fates)

    def decide(self, method: str, path: str) -> tuple[str, str]:
        """The fate of a request (one draw, counted), and the error code if it is
        answered 503: SlowDown and ServiceUnavailable in turn."""
        with self._lock:
            self.requests += 1
            self.methods["LIST" if method == "GET" and "list-type=" in path else method] += 1
            if self._forced and self._forced[0][0] in path:
                fate = self._forced.popleft()[1]
            else:
                draw = self._random.random()
                if draw < self.drop_rate:
                    fate = DROP_BEFORE if self._random.random() < 0.5 else DROP_AFTER
                elif draw < self.drop_rate + self.error_rate:
                    fate = ERROR
                else:
                    fate = FORWARD
            if fate != FORWARD:
                self.injected.append((fate, method, path))
            if fate == ERROR:
                self.errors += 1
            elif fate == DROP_BEFORE:
                self.dropped_before += 1
            else:
                self.forwarded += 1
                self.dropped_after += fate == DROP_AFTER
            return fate, "ServiceUnavailable" if self.errors % 2 == 0 else "SlowDown"

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self.connections += 1
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def server_close(self) -> None:
        """Also end kept-alive client connections, whose threads wait for a next request."""
        super().server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered by http.server
    timeout = 120  # an idle kept-alive connection outlives the client's pool (aiohttp: 15 s)
    server: FaultProxy

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _relay(self) -> None:
        body = self._read_body()
        fate, code = self.server.decide(self.command, self.path)
        time.sleep(self.server.latency_s)
        if fate == DROP_BEFORE:
            self._drop(reset=False)
        elif fate == ERROR:
            self._reply_error(code)
        else:
            status, reason, headers, payload = self._forward(body)
            if fate == DROP_AFTER:
                self._drop(reset=True)
            else:
                self._reply(status, reason, headers, payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream as it came (same Host, so signatures still match)."""
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            payload = response.read()  # nothing for HEAD, 204, 304
            return response.status, response.reason, response.getheaders(), payload
        finally:
            upstream.close()

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD" or status in NO_BODY_STATUSES:
            # a HEAD reply's Content-Length is the object's size: pass it on, send no body
            for name, value in headers:
                if name.lower() == "content-length":
                    self.send_header(name, value)
            payload = b""
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reply_error(self, code: str) -> None:
        message = "Please reduce your request rate." if code == "SlowDown" else "Service is unable to handle request."
        request_id = uuid.uuid4().hex[:16].upper()
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>").encode()
        self.send_response_only(503, "Service Unavailable")
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self, reset: bool) -> None:
        """End the connection with no reply; with `reset`, the close ends in a reset
        (RST, SO_LINGER 0), as from a load balancer that gave up."""
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextmanager
def fault_proxy(upstream_url: str, latency_s: float = 0.0, drop_rate: float = 0.0, error_rate: float = 0.0,
                seed: int = 0) -> Iterator[FaultProxy]:
    """A running `FaultProxy` in front of `upstream_url` (its `url`, its counters);
    stopped on exit."""
    proxy = FaultProxy(upstream_url, latency_s, drop_rate, error_rate, seed)
    thread = threading.Thread(target=proxy.serve_forever, name="s3-fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)
