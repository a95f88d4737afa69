"""A minimal HTTP/1.1 client on a plain socket, for the CLI's etcd gateway client (ctl.dcs.gateway_transport).

http.client alone costs ~15 ms of imports (email parsing, ssl), a tenth of `hactl list`'s start-up budget, and its
timeouts are per socket operation rather than per request. This one does POST with a JSON body, keep-alive, and
Content-Length, chunked or close-delimited answers; every socket operation gets the time left until the request's
deadline.
"""

from __future__ import annotations

import socket
import time
from typing import Any


class HttpError(Exception):
    """The server broke the HTTP exchange (closed early, garbage)."""


class StaleConnection(HttpError):
    """A kept-alive connection that the server had closed: safe to retry on a new one."""


class HttpConnection:
    """A minimal HTTP/1.1 client: POST with a JSON body, keep-alive, Content-Length or chunked answers.

    Every socket operation gets the time left until the request's deadline, so a request never outlives it.
    """

    def __init__(self, host: str, port: int, ssl_context: Any = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self.sent = False  # the last request reached the socket: a failure after this may have been applied

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._buf.clear()

    def post(self, path: str, body: bytes, headers: dict[str, str], deadline: float) -> tuple[int, bytes]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self.sent = False
        for attempt in range(2):
            fresh = self.sock is None
            try:
                if fresh:
                    self._open(deadline)
                self._timeout(deadline)
                assert self.sock is not None
                self.sock.sendall(request)
                self.sent = True
                status, data, keep = self._read_response(deadline, fresh)
            except (StaleConnection, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
                self.sent = False  # an idle connection the server had closed: it never read the request
                continue
            except BaseException:
                self.close()
                raise
            if not keep:
                self.close()
            return status, data
        raise HttpError("no answer")  # not reached

    def _open(self, deadline: float) -> None:
        # An ASCII host as bytes skips the idna codec import (~3 ms) that getaddrinfo does for str hosts.
        host: str | bytes = self.host.encode("ascii") if self.host.isascii() else self.host
        sock = socket.create_connection((host, self.port), timeout=max(deadline - time.monotonic(), 0.001))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _timeout(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        assert self.sock is not None
        self.sock.settimeout(left)

    def _fill(self, deadline: float, first: bool = False) -> None:
        self._timeout(deadline)
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            if first:
                raise StaleConnection("connection closed before the answer")
            raise HttpError("connection closed in the middle of the answer")
        self._buf += chunk

    def _read_until(self, marker: bytes, deadline: float, first: bool = False) -> bytes:
        while True:
            i = self._buf.find(marker)
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[: i + len(marker)]
                return out
            if len(self._buf) > 1 << 20:
                raise HttpError("answer header too long")
            self._fill(deadline, first and not self._buf)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_response(self, deadline: float, fresh: bool) -> tuple[int, bytes, bool]:
        head = self._read_until(b"\r\n\r\n", deadline, first=not fresh).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP answer: {lines[0][:60]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self._read_until(b"\r\n", deadline).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline):  # trailers (etcd sends one) end with a blank line
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_until(b"\r\n", deadline)
            return status, bytes(body), keep
        if "content-length" in headers:
            return status, self._read_exact(int(headers["content-length"]), deadline), keep
        while True:  # no length: the body ends when the server closes
            try:
                self._fill(deadline)
            except HttpError:
                return status, bytes(self._read_exact(len(self._buf), deadline)), False
