"""The HTTP server's connection protocol: uvicorn's, with a bound on how long a client may
take to send a request's headers.

uvicorn bounds an idle kept-alive connection (`timeout_keep_alive`) but starts no timer
before a request's headers are complete, so a client that sends half a request line and
waits holds a connection (and a file descriptor) for as long as it likes.
`HeaderTimeoutProtocol` is uvicorn's own protocol class (httptools when installed, else
h11) that closes a connection whose headers have not all arrived `header_timeout` seconds
after it opened or after its previous response ended. uvicorn takes it by import string
(`PROTOCOL`), also in `--workers` processes; the bound comes from $CUSTATE_HEADER_TIMEOUT
there."""

from __future__ import annotations

import asyncio
import os
from typing import Any

__all__ = ["DEFAULT_HEADER_TIMEOUT", "ENV_HEADER_TIMEOUT", "PROTOCOL", "HeaderTimeoutProtocol"]

DEFAULT_HEADER_TIMEOUT = 10.0
ENV_HEADER_TIMEOUT = "CUSTATE_HEADER_TIMEOUT"
PROTOCOL = "custate.adapters.serving:HeaderTimeoutProtocol"

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base

    _H11 = False
except ImportError:  # httptools is not installed: uvicorn's h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

    _H11 = True


class HeaderTimeoutProtocol(_Base):
    """uvicorn's HTTP protocol, closing connections whose request headers are late."""

    header_timeout: float = float(os.environ.get(ENV_HEADER_TIMEOUT) or DEFAULT_HEADER_TIMEOUT)
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = asyncio.get_running_loop().call_later(
            self.header_timeout, self._headers_late
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def on_headers_complete(self) -> None:  # httptools: the headers are in
        self._disarm()
        super().on_headers_complete()

    if _H11:

        def handle_events(self) -> None:  # h11: a parsed request means its headers are in
            super().handle_events()  # type: ignore[misc]
            if self.cycle is not None:
                self._disarm()
