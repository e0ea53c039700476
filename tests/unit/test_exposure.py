"""The pieces that make `serve` safe to expose, as functions: sizes in settings, what counts
as loopback, the byte-exact whitespace stripper the webhook signature is checked on, the
token comparison, and store URLs in errors with their password masked. The server around
them: tests/e2e/test_exposed_serve.py."""

from __future__ import annotations

import orjson
import pytest

# The server extra's modules: the unit run at the lowest versions installs the core only.
pytest.importorskip("fastapi", reason="needs the server extra: pip install 'custate[server]'")
pytest.importorskip("pydantic_settings", reason="needs the server extra")

import custate
from custate.adapters.api import StoreError
from custate.adapters.auth import Tokens
from custate.adapters.http import signature, signature_ok, strip_whitespace
from custate.adapters.settings import is_loopback, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("1MiB", 1024**2),
        ("512KiB", 512 * 1024),
        ("1MB", 1000**2),
        ("500kB", 500_000),
        (" 2 mib ", 2 * 1024**2),
        ("1G", 1000**3),
    ],
)
def test_sizes_take_units_each_with_one_meaning(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1.5MB", "1 MBs", "MB", "-1", "", "1e6", "0x10"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="a size in bytes such as"):
        parse_size(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_is_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_whitespace_is_stripped_outside_strings_only_and_escapes_kept() -> None:
    body = b'{\n  "a" : "x  y\\n\\"  z\\u00eb",\r\n\t"b": [ 1 , 2 ],\n  "c\\\\": "\\\\" }\n'
    assert strip_whitespace(body) == b'{"a":"x  y\\n\\"  z\\u00eb","b":[1,2],"c\\\\":"\\\\"}'
    assert orjson.loads(strip_whitespace(body)) == orjson.loads(body)
    utf8 = '{ "n": "Zoë  Müller" }'.encode()
    assert strip_whitespace(utf8) == '{"n":"Zoë  Müller"}'.encode()


def test_a_signature_holds_for_the_raw_the_stripped_and_the_reserialised_body() -> None:
    pretty = b'{\n  "name": "Zo\\u00eb",\n  "n": 1\n}'
    for signed in (pretty, b'{"name":"Zo\\u00eb","n":1}', '{"name":"Zoë","n":1}'.encode()):
        assert signature_ok(pretty, signature(signed, "k"), "k")
        assert signature_ok(pretty, signature(signed, "k").upper(), "k")
        assert not signature_ok(pretty, signature(signed, "other"), "k")
    assert not signature_ok(pretty, signature(b'{"name":"Zo\\u00eb","n":2}', "k"), "k")
    assert not signature_ok(pretty, None, "k")
    assert not signature_ok(pretty, "", "k")


def test_tokens_accept_exactly_the_configured_ones() -> None:
    tokens = Tokens(["tok_a_0123456789abcdef", "tok_b_fedcba9876543210"])
    assert tokens.accepts("tok_a_0123456789abcdef")
    assert tokens.accepts("tok_b_fedcba9876543210")
    for wrong in ("", "tok_a_0123456789abcde", "tok_a_0123456789abcdefX", "TOK_A_0123456789ABCDEF"):
        assert not tokens.accepts(wrong)
    assert "tok_a" not in repr(tokens)  # never shown, not even in a debugger's repr
    assert not Tokens([])


@pytest.mark.parametrize(
    ("url", "read_only"),
    [
        ("postgresql://reader:pa55word@db.internal/custate", True),
        ("mysql://reader:pa55word@db.internal/custate", False),
    ],
)
def test_store_errors_mask_the_password(url: str, read_only: bool) -> None:
    with pytest.raises(StoreError) as e:
        custate.open(url, read_only=read_only)
    assert "pa55word" not in str(e.value)
    assert "reader:***@db.internal" in str(e.value)
