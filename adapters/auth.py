"""Bearer tokens for the HTTP reads: `Authorization: Bearer <token>`.

`create_app(api_tokens=...)` (or $CUSTATE_API_TOKENS, `serve --api-tokens-file`) gives the
tokens; `require_token` is the FastAPI dependency an endpoint declares to need one. With no
token configured every request passes (a loopback service: `custate serve` refuses to
listen beyond loopback without tokens, adapters/settings.py). A missing or wrong token is
401 with `WWW-Authenticate: Bearer` and the project's error body; the token given is never
repeated, logged or kept. Tokens are compared in constant time: each configured token's
SHA-256 against the given one's, all of them every time, so neither the length nor which
token matched shows in the timing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["AuthError", "Tokens", "require_configured_token", "require_token"]


class AuthError(Exception):
    """A request without a valid bearer token (answered 401, `WWW-Authenticate: Bearer`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Tokens:
    """The configured bearer tokens, kept as SHA-256 digests only."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(t) for t in tokens)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"Tokens({len(self._digests)} configured)"

    def accepts(self, given: str) -> bool:
        """Whether `given` is one of the tokens, in time independent of which and of how
        long either is."""
        d = _digest(given)
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(known, d)
        return ok


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


# auto_error=False: a missing header is our 401 in the project's error shape, not
# FastAPI's 403. The scheme puts the "Authorize" button on /docs.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer <token>`, one of CUSTATE_API_TOKENS (when set).",
)


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """FastAPI dependency: the request carries one of the app's tokens
    (`app.state.api_tokens`, a `Tokens`); raises AuthError otherwise. No tokens
    configured: every request passes. Use as `dependencies=[Depends(require_token)]`."""
    tokens: Tokens | None = getattr(request.app.state, "api_tokens", None)
    if not tokens:
        return
    if credentials is None:
        raise AuthError("missing Authorization: Bearer <token>")
    if not tokens.accepts(credentials.credentials):
        raise AuthError("the bearer token is not valid")


def require_configured_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """FastAPI dependency of the endpoints that change data on request (erasure): as
    `require_token`, but with no tokens configured every request is refused."""
    tokens: Tokens | None = getattr(request.app.state, "api_tokens", None)
    if not tokens:
        raise AuthError("this endpoint needs API tokens configured (CUSTATE_API_TOKENS)")
    require_token(request, credentials)
