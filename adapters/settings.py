"""The server's settings: the CUSTATE_* environment `custate serve` reads, validated once at
start (pydantic-settings, in the `server` extra), and the start-up check that refuses to
expose an unauthenticated service.

`load_settings()` reads the environment (or a mapping given) and raises `SettingsError`
whose message names the variable and what it got, `CUSTATE_MAX_BODY_BYTES: a size in bytes
such as 1048576, 512KiB or 1MB (got '1 MBs')`, never a traceback; the values of secret
settings (tokens, the webhook secret) are never repeated in a message. `check_exposure`
says what is missing before a service listens beyond loopback: API tokens and a webhook
secret (docs/DECISIONS.md, Exposing the service)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

__all__ = [
    "ENV_API_TOKENS",
    "ENV_API_TOKENS_FILE",
    "MIN_TOKEN_LENGTH",
    "ServeSettings",
    "SettingsError",
    "check_exposure",
    "is_loopback",
    "load_settings",
    "parse_size",
]

PREFIX = "CUSTATE_"
ENV_API_TOKENS = "CUSTATE_API_TOKENS"
ENV_API_TOKENS_FILE = "CUSTATE_API_TOKENS_FILE"
MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_BODY = 1024 * 1024
_SECRET_FIELDS = frozenset({"api_tokens", "webhook_secret"})


class SettingsError(ValueError):
    """A setting is invalid or missing; the message names the setting (the variable)."""


_SIZE = re.compile(r"\s*(\d+)\s*([KMG]i?B|[kKMG]|B)?\s*", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
    "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip


def parse_size(value: object) -> int:
    """A byte count: an integer, or a number with a unit, `512KiB`, `1MiB` (powers of 1024)
    or `1MB`, `500kB` (powers of 1000). Raises ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(str(value))
    if m is None:
        raise ValueError("a size in bytes such as 1048576, 512KiB or 1MB")
    return int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]


def _tokens(value: object) -> object:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


class ServeSettings(BaseSettings):
    """What `custate serve` (and `create_app`) take from CUSTATE_* variables."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    webhook_secret: SecretStr = SecretStr("")
    """CUSTATE_WEBHOOK_SECRET: the webhook signature key (empty: not checked)."""
    max_body_bytes: Annotated[int, BeforeValidator(parse_size), Field(ge=1)] = DEFAULT_MAX_BODY
    """CUSTATE_MAX_BODY_BYTES: the largest webhook body (bytes; KiB/MiB/kB/MB accepted)."""
    api_tokens: Annotated[list[SecretStr], NoDecode, BeforeValidator(_tokens)] = []
    """CUSTATE_API_TOKENS: comma-separated bearer tokens the reads require (none: open)."""
    api_tokens_file: Path | None = None
    """CUSTATE_API_TOKENS_FILE: a file of more tokens, one a line (`#` comments)."""
    serve_project: bool = True
    """CUSTATE_SERVE_PROJECT: run a projector worker in each serve process."""
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    """CUSTATE_HEADER_TIMEOUT: seconds a client may take to send a request's headers."""

    @field_validator("api_tokens")
    @classmethod
    def _long_enough(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        for i, t in enumerate(tokens):
            check_token(t.get_secret_value(), f"token {i + 1}")
        return tokens

    def tokens(self) -> list[str]:
        """Every configured token: CUSTATE_API_TOKENS and the tokens file's. Raises
        SettingsError naming the file when it cannot be read or holds a bad token."""
        found = [t.get_secret_value() for t in self.api_tokens]
        if self.api_tokens_file is not None:
            found += read_tokens_file(self.api_tokens_file)
        return found


def check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{where} is shorter than {MIN_TOKEN_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"{where} holds whitespace or a control character")


def read_tokens_file(path: Path) -> list[str]:
    """The tokens of a file: one a line, blank lines and `#` comments skipped."""
    name = f"{ENV_API_TOKENS_FILE} ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{name}: cannot read it: {type(e).__name__}") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        try:
            check_token(token, f"the token on line {n}")
        except ValueError as e:
            raise SettingsError(f"{name}: {e}") from None
        tokens.append(token)
    if not tokens:
        raise SettingsError(f"{name}: no token in it")
    return tokens


def load_settings(**given: Any) -> ServeSettings:
    """The settings from the process environment, overridden by `given` (field names, None
    values ignored). Raises SettingsError naming the first bad variable."""
    try:
        return ServeSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(_message(e)) from None
    except _SourceError as e:  # a value the environment source could not even decode
        raise SettingsError(str(e).split(" from source")[0]) from None


def _message(e: ValidationError) -> str:
    first = e.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    variable = PREFIX + name.upper()
    reason = str(first["msg"]).removeprefix("Value error, ")
    if name in _SECRET_FIELDS:
        return f"{variable}: {reason}"  # never repeat a secret
    return f"{variable}: {reason} (got {str(first.get('input'))!r})"


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: localhost, 127.0.0.0/8, ::1."""
    h = host.strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: ServeSettings, insecure: bool = False) -> list[str]:
    """Before listening on `host`: the warnings to print. Beyond loopback without API
    tokens or without a webhook secret, raises SettingsError naming what is missing
    (`insecure`: those become warnings too)."""
    missing = []
    if not settings.tokens():
        missing.append(f"API tokens ({ENV_API_TOKENS} or --api-tokens-file)")
    if not settings.webhook_secret.get_secret_value():
        missing.append("a webhook secret (CUSTATE_WEBHOOK_SECRET)")
    if is_loopback(host):
        if not settings.webhook_secret.get_secret_value():
            return [
                "custate serve: warning: no CUSTATE_WEBHOOK_SECRET: webhook signatures "
                "are not checked"
            ]
        return []
    if not missing:
        return []
    what = " and ".join(missing)
    if insecure:
        return [f"custate serve: warning: --insecure: serving {host} without {what}"]
    raise SettingsError(
        f"refusing to serve {host} (beyond loopback) without {what}; set them, listen on "
        "127.0.0.1, or pass --insecure"
    )
