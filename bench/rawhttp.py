"""A minimal asyncio HTTP/1.1 client for the benches: keep-alive connections to one server,
each request written as bytes and its answer read by `Content-Length`.

The benches run the client on the same two cores as the servers and PostgreSQL; httpx's
async client cost about 1 ms of CPU a request there, enough to saturate the machine
at a few hundred requests a second and measure the client's queue instead of the
servers (bench/README.md, "Several processes on one PostgreSQL store"). This one costs
a few tens of microseconds. It speaks only what uvicorn answers custate's endpoints
with (a status line, headers, a body of `Content-Length` bytes); anything else raises."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit

__all__ = ["Pool", "Response"]


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class Pool:
    """Up to `size` keep-alive connections to `base` (`http://host:port`)."""

    def __init__(self, base: str, size: int = 32) -> None:
        u = urlsplit(base)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(size)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        params: dict[str, object] | None = None,
    ) -> Response:
        if params:
            path = f"{path}?{urlencode(params)}"
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
            head.append("Content-Type: application/json")
        head.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        async with self._slots:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                conn.writer.write(data)
                response = await self._read(conn.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                conn.writer.close()
                if not reused:
                    raise
                # the server closed a kept connection meanwhile (its keep-alive timeout):
                # once more on a new one
                conn = await self._connect()
                conn.writer.write(data)
                response = await self._read(conn.reader)
            except BaseException:
                conn.writer.close()
                raise
            if response.headers.get("connection", "").lower() == "close":
                conn.writer.close()
            else:
                self._idle.append(conn)
            return response

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Response:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise ValueError(f"an answer without Content-Length: {lines[0]!r}")
        body = await reader.readexactly(int(headers["content-length"]))
        return Response(status, headers, body)

    async def close(self) -> None:
        for conn in self._idle:
            conn.writer.close()
        self._idle.clear()
