"""Bearer tokens for the HTTP endpoints that change data a user cannot get back (the
erasure): `CUSTATE_API_TOKENS`, a comma-separated list. No token configured means such an
endpoint refuses every request: it is never open by default."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence

__all__ = ["ENV_TOKENS", "refusal", "tokens_from_env"]

ENV_TOKENS = "CUSTATE_API_TOKENS"


def tokens_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The tokens `CUSTATE_API_TOKENS` lists (comma-separated, blanks dropped)."""
    raw = (os.environ if env is None else env).get(ENV_TOKENS, "")
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def refusal(authorization: str | None, tokens: Sequence[str]) -> str | None:
    """Why a request with this `Authorization` header is refused, or None if it carries
    `Bearer <one of tokens>`. Every token is compared, in constant time each, so the
    answer's timing does not tell which one nearly matched."""
    if not tokens:
        return f"this endpoint needs a bearer token, and none is configured (set {ENV_TOKENS})"
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "missing bearer token: send Authorization: Bearer <token>"
    offered = given.strip().encode()
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(offered, t.encode())
    return None if ok else "invalid bearer token"
