"""`custate serve` made safe to expose, as a user runs it (real processes, loopback):
bearer tokens on every read, a refusal to listen beyond loopback without tokens and a
webhook secret, CUSTATE_* settings that fail with their name, no password or token in
any output, /docs with nothing from a CDN, every answer valid against the model the
OpenAPI schema declares for it, and the signature of a pretty-printed delivery."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import TypeAdapter

import custate
from custate.adapters import schemas
from custate.adapters.http import strip_whitespace

from .test_serve import CUSTATE, SAMPLES, SECRET, delivery, free_port, sign

TOKEN_A = "tok_a_0123456789abcdef"
TOKEN_B = "tok_b_fedcba9876543210"
FILE_TOKEN = "tok_file_5555aaaa5555aaaa"
CUSTOMER = "cust_exposed"


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> str:
        """Stop the server; what it wrote to stderr."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return err.decode()


def environ(**env: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}
    out.update(env)
    return out


def run_serve(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    """`custate serve ...` that is expected to exit by itself."""
    return subprocess.run(
        [str(CUSTATE), "serve", *args],
        env=environ(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch(*args: str, **env: str) -> Proc:
    """`custate serve ...` on a free port, once it answers /healthz on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [str(CUSTATE), "serve", "--port", str(port), *args],
        env=environ(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"custate serve exited: {proc.communicate()[1].decode()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Proc(url, proc)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("custate serve did not come up")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One server for the module: tokens from the environment and from a file, a webhook
    secret, the change feed on."""
    folder = tmp_path_factory.mktemp("exposed")
    store = f"sqlite:///{folder / 'store.db'}"
    custate.open(store, change_feed=True).close()
    tokens_file = folder / "tokens"
    tokens_file.write_text(f"# read-only dashboards\n\n{FILE_TOKEN}\n")
    s = launch(
        "--store",
        store,
        "--api-tokens-file",
        str(tokens_file),
        CUSTATE_API_TOKENS=f"{TOKEN_A}, {TOKEN_B}",
        CUSTATE_WEBHOOK_SECRET=SECRET,
    )
    yield s
    err = s.stop()
    for secret in (TOKEN_A, TOKEN_B, FILE_TOKEN, SECRET):
        assert secret not in err  # no token or secret in the server's output


def auth(token: str = TOKEN_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(s: Proc, body: bytes, signature: str) -> httpx.Response:
    headers = {"content-type": "application/json", "x-voucherify-signature": signature}
    return httpx.post(f"{s.url}/webhooks/voucherify", content=body, headers=headers)


def stored(s: Proc) -> int:
    """Post one delivery of every sample type for CUSTOMER (once); the position to wait for."""
    position = 0
    for i, path in enumerate(sorted(SAMPLES.glob("*.json"))):
        body = orjson.dumps(delivery(f"evcus_x{i}", CUSTOMER, path.stem))
        r = post(s, body, sign(body))
        assert r.status_code == 200, r.text
        TypeAdapter(schemas.WebhookOut).validate_json(r.content)
        position = r.json()["position"]
    return position


READS: list[tuple[str, dict[str, Any]]] = [
    ("/customers/cust_exposed/state", {}),
    ("/customers", {}),
    ("/customers/count", {}),
    ("/customers/cust_exposed/history", {}),
    ("/customers/cust_exposed/diff", {"as_of": ["2020-01-01", "2030-01-01"]}),
    ("/customers/cust_exposed/explain", {"path": "profile.name"}),
    ("/gaps", {}),
    ("/changes", {}),
]


def test_reads_need_a_bearer_token_and_probes_and_webhooks_do_not(server: Proc) -> None:
    position = stored(server)  # the webhook: its HMAC signature, no token
    wait = {"min_position": position, "wait": 20}
    r = httpx.get(f"{server.url}/customers/count", params=wait, headers=auth())
    assert r.status_code == 200, r.text
    for read, params in READS:
        for headers in [
            {},
            auth("tok_wrong_0123456789abcdef"),
            auth(TOKEN_A[:-1]),
            {"Authorization": TOKEN_A},  # no scheme
            {"Authorization": f"Basic {TOKEN_A}"},
        ]:
            r = httpx.get(f"{server.url}{read}", params=params, headers=headers)
            assert r.status_code == 401, (read, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["field"] == "authorization"
            assert set(r.json()) == {"error", "field"}
            assert TOKEN_A[:-1] not in r.text
        for token in (TOKEN_A, TOKEN_B, FILE_TOKEN):
            r = httpx.get(f"{server.url}{read}", params=params, headers=auth(token))
            assert r.status_code == 200, (read, r.text)
    assert (
        httpx.get(f"{server.url}/customers/cust_exposed/state", headers=auth()).json()[
            "customer_id"
        ]
        == CUSTOMER
    )
    for probe in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(f"{server.url}{probe}").status_code == 200, probe


def test_every_answer_is_valid_against_the_model_the_schema_declares(server: Proc) -> None:
    position = stored(server)
    spec = httpx.get(f"{server.url}/openapi.json").json()
    components = spec["components"]["schemas"]

    def model(operation: dict[str, Any], status: int) -> TypeAdapter[Any]:
        """The model the schema declares for `status`, as the class in custate's schemas."""
        declared = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        many = declared.get("type") == "array"
        name = (declared["items"] if many else declared)["$ref"].rsplit("/", 1)[1]
        assert "examples" in components[name], f"{name} has no example"
        cls = getattr(schemas, name)
        return TypeAdapter(list[cls] if many else cls)  # type: ignore[valid-type]

    wait = {"min_position": position, "wait": 20}
    paths = spec["paths"]
    answered = set()
    probes: list[tuple[str, dict[str, Any]]] = [("/healthz", {}), ("/readyz", {})]
    for path, params in [*READS, *probes]:
        template = path.replace(CUSTOMER, "{customer_id}")
        read = {**params, **wait} if path.startswith("/customers") else params
        r = httpx.get(f"{server.url}{path}", params=read, headers=auth())
        assert r.status_code == 200, (path, r.text)
        value = r.json()
        assert value, path  # something to validate
        model(paths[template]["get"], 200).validate_python(value)
        answered.add(template)
    # every read and probe in the schema was answered and checked
    gets = {p for p, ops in paths.items() if "get" in ops}
    assert gets - {"/metrics"} == answered  # /metrics is Prometheus text, not JSON:
    metrics = httpx.get(f"{server.url}/metrics", headers=auth())
    assert metrics.status_code == 200
    assert "custate_activities_ingested_total" in metrics.text
    assert httpx.get(f"{server.url}/metrics").status_code == 401  # a read like the others
    webhook = paths["/webhooks/voucherify"]["post"]
    assert "WebhookOut" in str(webhook["responses"]["200"])

    # the errors: the one shape, FastAPI's own included, declared where they happen
    errors: list[tuple[str, dict[str, Any], int]] = [
        ("/customers/cust_exposed/state", {"as_of": "not a time"}, 400),
        ("/customers/cust_nobody/state", {}, 404),
        ("/customers", {"limit": 0}, 422),
        ("/customers/cust_exposed/explain", {}, 422),  # path missing
        ("/changes", {"after": -1}, 400),
    ]
    for path, params, status in errors:
        r = httpx.get(f"{server.url}{path}", params=params, headers=auth())
        assert r.status_code == status, (path, r.text)
        template = path.replace(CUSTOMER, "{customer_id}").replace("cust_nobody", "{customer_id}")
        model(paths[template]["get"], status).validate_python(r.json())
        assert r.json()["error"]
    assert r.json()["field"] == "after"
    r = httpx.get(f"{server.url}/customers", params={"limit": 0}, headers=auth())
    assert r.json() == {
        "error": "limit: Input should be greater than or equal to 1",
        "field": "limit",
    }
    for path, method in [("/nowhere", "GET"), ("/customers", "POST")]:
        r = httpx.request(method, f"{server.url}{path}", headers=auth())
        assert r.status_code in (404, 405), r.text
        TypeAdapter(schemas.ErrorOut).validate_python(r.json())
    r = httpx.post(f"{server.url}/webhooks/voucherify", content=b"{}")
    assert r.status_code == 401
    model(webhook, 401).validate_python(r.json())


def test_docs_load_nothing_from_outside_the_app(server: Proc) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{server.url}{page}").text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        urls += re.findall(r"url: '([^']+)'", html)  # the schema Swagger UI loads
        assert any(u.endswith(".js") for u in urls), html
        for url in urls:
            assert url.startswith("/"), (page, url)  # this server's, not a CDN's
            assert not url.startswith("//"), (page, url)
            r = httpx.get(f"{server.url}{url}")
            assert r.status_code == 200, (page, url)
            assert r.content
        assert "cdn" not in html.lower(), page
        assert "https://" not in html, page
    # the Swagger UI served can render the schema's version (4.x could not render 3.1)
    version = httpx.get(f"{server.url}/openapi.json").json()["openapi"]
    bundle = httpx.get(f"{server.url}/docs/assets/swagger-ui-bundle.js").text
    assert f"openapi: {version.rsplit('.', 1)[0]}.x" in bundle


def test_a_pretty_printed_delivery_signed_as_voucherify_signs_it_is_stored(server: Proc) -> None:
    value = delivery("evcus_zoe", "cust_zoe", "customer.created")
    value["data"]["customer"] = {**value["data"]["customer"], "id": "cust_zoe", "name": "ZOE  X"}

    def escaped(body: bytes) -> bytes:  # the name as a sender escaping non-ASCII writes it
        return body.replace(b'"ZOE  X"', b'"Zo\\u00eb  M\\u00fcller"')

    pretty = escaped(orjson.dumps(value, option=orjson.OPT_INDENT_2))
    # Voucherify signs the body without whitespace outside strings, escapes as they were
    signed = escaped(orjson.dumps(value))
    assert b"\n  " in pretty
    assert b"Zo\\u00eb  M" in signed
    assert strip_whitespace(pretty) == signed
    key = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    r = post(server, pretty, key)
    assert r.status_code == 200, r.text
    # not the JSON library's re-serialisation, which turns the escape into the letter
    assert orjson.dumps(orjson.loads(pretty)) != signed
    tampered = pretty.replace(b"Zo\\u00eb  M", b"Zo\\u00eb M")  # inside a string
    assert post(server, tampered, key).status_code == 401
    wait = {"min_position": r.json()["position"], "wait": 20}
    state = httpx.get(f"{server.url}/customers/cust_zoe/state", params=wait, headers=auth())
    assert state.status_code == 200, state.text
    assert state.json()["profile"]["name"] == "Zo\u00eb  M\u00fcller"  # the escapes, decoded


def test_a_host_beyond_loopback_needs_tokens_and_a_secret_unless_insecure(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = str(free_port())
    bare = run_serve("--host", "0.0.0.0", "--port", port, "--store", sqlite_url)
    assert bare.returncode == 2, bare.stderr
    assert "refusing to serve 0.0.0.0" in bare.stderr
    assert "CUSTATE_API_TOKENS" in bare.stderr
    assert "CUSTATE_WEBHOOK_SECRET" in bare.stderr
    assert "--insecure" in bare.stderr
    assert "Traceback" not in bare.stderr

    no_secret = run_serve(
        "--host", "0.0.0.0", "--port", port, "--store", sqlite_url, CUSTATE_API_TOKENS=TOKEN_A
    )  # fmt: skip
    assert no_secret.returncode == 2
    assert "CUSTATE_WEBHOOK_SECRET" in no_secret.stderr
    assert "CUSTATE_API_TOKENS" not in no_secret.stderr
    assert TOKEN_A not in no_secret.stderr
    assert not (tmp_path / "store.db").exists()  # refused before touching the store

    s = launch("--host", "0.0.0.0", "--insecure", "--store", sqlite_url)
    assert httpx.get(f"{s.url}/customers/count").status_code == 200  # open, as asked
    err = s.stop()
    assert "--insecure" in err
    assert "without API tokens" in err


def test_a_bad_setting_is_exit_2_naming_it(sqlite_url: str) -> None:
    args = ("--port", str(free_port()), "--store", sqlite_url)
    size = run_serve(*args, CUSTATE_MAX_BODY_BYTES="1.5MB")
    assert size.returncode == 2
    assert "CUSTATE_MAX_BODY_BYTES: " in size.stderr
    assert "(got '1.5MB')" in size.stderr
    assert "Traceback" not in size.stderr
    short = run_serve(*args, CUSTATE_API_TOKENS=f"{TOKEN_A},hunter2")
    assert short.returncode == 2
    assert "CUSTATE_API_TOKENS: token 2 is shorter than 16 characters" in short.stderr
    assert "hunter2" not in short.stderr
    assert TOKEN_A not in short.stderr
    missing = run_serve(*args, "--api-tokens-file", "/nonexistent/tokens")
    assert missing.returncode == 2
    assert "CUSTATE_API_TOKENS_FILE (/nonexistent/tokens): cannot read it" in missing.stderr


def test_an_unreachable_postgresql_is_named_with_its_password_masked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    url = f"postgresql://reader:pa55word@127.0.0.1:{port}/custate"
    r = run_serve("--port", str(free_port()), "--store", url)
    assert r.returncode == 3  # the store failed
    assert "pa55word" not in r.stderr + r.stdout
    assert f"reader:***@127.0.0.1:{port}" in r.stderr
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in r.stderr
