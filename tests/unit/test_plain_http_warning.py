"""`pull` warns when it would send the Voucherify credentials over plain http:// to a host
that is not this machine."""

from __future__ import annotations

import warnings

import pytest

from custate.adapters.voucherify import (
    PlainHttpCredentialsWarning,
    VoucherifyClient,
    VoucherifyConfig,
)


def test_plain_http_to_another_host_warns_naming_the_host() -> None:
    config = VoucherifyConfig("http://api.example.com", "app", "token")
    with pytest.warns(PlainHttpCredentialsWarning, match=r"api\.example\.com.*unencrypted"):
        VoucherifyClient(config).close()


@pytest.mark.parametrize(
    "url",
    [
        "https://api.voucherify.io",
        "http://127.0.0.1:8080",
        "http://localhost:9000",
        "http://[::1]:9000",
        "http://127.5.6.7",
    ],
)
def test_https_or_loopback_does_not_warn(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VoucherifyClient(VoucherifyConfig(url, "app", "token")).close()
