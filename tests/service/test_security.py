"""Security: the admin token (required when set, compared in constant time, never logged), CORS (off
by default, only configured origins), names that cannot leave their directories, and size limits."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

import seqtag.service.deps
from seqtag.service.app import create_app
from seqtag.service.settings import Settings
from tests.service.conftest import assert_error, async_client

TOKEN = "tok-Zq8#x9!kP2_secret-ÄÖ"  # non-ASCII too: the header carries its UTF-8 bytes
TOKEN_BYTES = TOKEN.encode("utf-8")
TOKEN_LATIN1 = TOKEN_BYTES.decode("latin-1")  # how a server that decodes headers as latin-1 sees them


def auth(value: bytes | str) -> dict[bytes, bytes]:
    """An Authorization header given as raw bytes (httpx only takes ASCII in str headers)."""
    return {b"authorization": value if isinstance(value, bytes) else value.encode("utf-8")}


GOOD = auth(b"Bearer " + TOKEN_BYTES)

ADMIN_CALLS = [
    ("POST", "/v1/models/reload", None),
    ("GET", "/v1/dictionaries", None),
    ("PUT", "/v1/dictionaries/brands", {"entries": ["阿里云"]}),
    ("GET", "/v1/dictionaries/brands", None),
    ("DELETE", "/v1/dictionaries/brands", None),
]

WRONG_AUTH = [
    {},
    auth(b""),
    auth(b"Bearer"),
    auth(b"Bearer "),
    auth(b"Bearer wrong"),
    auth(TOKEN_BYTES),  # no scheme
    auth(b"Basic " + TOKEN_BYTES),
    auth(b"Token " + TOKEN_BYTES),
    auth(b"Bearer " + TOKEN_BYTES[:-1]),  # a prefix (half a UTF-8 character, too)
    auth(b"Bearer " + TOKEN_BYTES[:-2]),  # a prefix
    auth(b"Bearer " + TOKEN_BYTES + b"x"),  # longer
    auth(b"Bearer " + TOKEN.upper().encode("utf-8")),
    auth(b"Bearer " + TOKEN_BYTES + b" " + TOKEN_BYTES),
    {b"x-admin-token": TOKEN_BYTES},
    {b"cookie": b"token=" + TOKEN_BYTES},
]


def call(client: TestClient, method: str, path: str, body: Any = None, headers: dict[Any, Any] | None = None,
         **kwargs: Any):
    return client.request(method, path, json=body, headers=headers or {}, **kwargs)


@pytest.fixture
def secured(make_client) -> TestClient:
    return make_client(admin_token=TOKEN)


# ---- the admin token --------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS, ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
def test_admin_endpoints_need_the_token(secured, method, path, body):
    for headers in WRONG_AUTH:
        response = call(secured, method, path, body, headers)
        error = assert_error(response, 401)
        assert error["code"] == "unauthorized"
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
        assert TOKEN not in response.text and TOKEN_LATIN1 not in response.text
    # in the query string it does not count either
    assert_error(call(secured, method, path, body, headers={}, params={"token": TOKEN}), 401)
    assert_error(call(secured, method, path, body, headers={}, params={"access_token": TOKEN}), 401)
    # nothing was done by the refused calls
    assert not (secured.app.state.settings.dictionaries_path / "brands.json").exists()


def test_admin_endpoints_accept_the_token(secured):
    assert call(secured, "PUT", "/v1/dictionaries/brands", {"entries": ["阿里云"]}, GOOD).status_code == 201
    assert call(secured, "GET", "/v1/dictionaries", None, GOOD).json() == {"dictionaries": ["brands"]}
    assert call(secured, "GET", "/v1/dictionaries/brands", None, GOOD).json()["entries"] == ["阿里云"]
    # scheme names are case-insensitive (RFC 7235)
    lower = auth(b"bearer " + TOKEN_BYTES)
    assert call(secured, "GET", "/v1/dictionaries/brands", None, lower).status_code == 200
    reload = call(secured, "POST", "/v1/models/reload", None, GOOD)
    assert reload.status_code == 200, reload.text
    assert call(secured, "DELETE", "/v1/dictionaries/brands", None, GOOD).status_code == 204
    assert call(secured, "GET", "/v1/dictionaries", None, GOOD).json() == {"dictionaries": []}


def test_public_endpoints_need_no_token(secured):
    for method, path, body in [("POST", "/v1/segment", {"text": "北京"}), ("POST", "/v1/ner", {"text": "北京"}),
                               ("GET", "/v1/models", None), ("GET", "/healthz", None), ("GET", "/readyz", None),
                               ("GET", "/metrics", None), ("GET", "/openapi.json", None)]:
        assert call(secured, method, path, body).status_code == 200, path
    # a stored dictionary may be *used* by name without the token (only managing it is admin)
    call(secured, "PUT", "/v1/dictionaries/words", {"entries": ["北京"]}, GOOD)
    assert call(secured, "POST", "/v1/segment", {"text": "北京", "dictionary": "words"}).status_code == 200


def test_without_a_token_admin_is_open(make_client):
    client = make_client()
    assert call(client, "GET", "/v1/dictionaries").status_code == 200
    assert call(client, "POST", "/v1/models/reload").status_code == 200
    # an empty SEQTAG_ADMIN_TOKEN does not mean "the empty string is the token"
    assert Settings(admin_token="").admin_token is None


def test_token_comparison_uses_compare_digest(secured, monkeypatch):
    source = inspect.getsource(seqtag.service.deps.require_admin)
    assert "hmac.compare_digest(" in source
    assert "== token" not in source and "token ==" not in source and "!= token" not in source
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(seqtag.service.deps.hmac, "compare_digest", spy)
    assert call(secured, "GET", "/v1/dictionaries", None, auth("Bearer nope")).status_code == 401
    assert call(secured, "GET", "/v1/dictionaries", None, GOOD).status_code == 200
    assert len(seen) == 2
    # both sides as bytes (compare_digest on str refuses non-ASCII), the configured token on one side
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in seen)
    assert seen[0][1] == seen[1][1] == TOKEN_BYTES
    assert seen[1][0] == TOKEN_BYTES
    assert seen[0][0] == b"nope"
    # the route really depends on the result of that call
    monkeypatch.setattr(seqtag.service.deps.hmac, "compare_digest", lambda a, b: False)
    assert call(secured, "GET", "/v1/dictionaries", None, GOOD).status_code == 401


def test_non_ascii_and_odd_tokens(make_client):
    for token in ("ünïcødé-tøken", "a b c", "x" * 4096, "汉字令牌"):
        client = make_client(admin_token=token)
        good = auth(b"Bearer " + token.encode("utf-8"))
        assert call(client, "GET", "/v1/dictionaries", None, good).status_code == 200, token[:20]
        assert_error(call(client, "GET", "/v1/dictionaries", None, auth("Bearer ünïcødé")), 401)
        assert_error(call(client, "GET", "/v1/dictionaries", None, auth(b"Bearer \xff\xfe")), 401)


def test_token_bytes_on_the_wire(make_settings):
    """Through httpx's ASGI transport the header bytes reach the app unchanged (Starlette's TestClient
    re-encodes them): the token's UTF-8 bytes are accepted, the same characters in latin-1 are not."""
    app = create_app(make_settings(admin_token=TOKEN))

    async def main() -> list[int]:
        async with async_client(app) as http:
            statuses = []
            for value in (b"Bearer " + TOKEN_BYTES, b"Bearer " + TOKEN.encode("latin-1"),
                          b"Bearer " + TOKEN.encode("utf-16-le"), b"Bearer " + TOKEN_BYTES[:-1] + b"\xff"):
                response = await http.get("/v1/dictionaries", headers=[(b"authorization", value)])
                statuses.append(response.status_code)
            return statuses

    assert asyncio.run(main()) == [200, 401, 401, 401]


# ---- the token never reaches the logs ---------------------------------------------------------------


def test_token_never_appears_in_logs(make_settings, caplog, capsys, monkeypatch):
    monkeypatch.setenv("SEQTAG_ADMIN_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)  # every logger, every level
    settings = make_settings(admin_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # start-up logs
        for headers in WRONG_AUTH + [GOOD, auth(b"Bearer " + TOKEN_BYTES + b"-wrong")]:
            for method, path, body in ADMIN_CALLS:
                call(client, method, path, body, headers)
        # errors that are logged on purpose: a failing reload, a broken stored dictionary
        bad = settings.dictionaries_path / "broken.json"
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text("{not json", encoding="utf-8")
        call(client, "GET", "/v1/dictionaries/broken", None, GOOD)
        call(client, "POST", "/v1/segment", {"text": "北京", "dictionary": "broken"}, GOOD)
        # nothing the service answers shows it either
        for path in ("/v1/models", "/metrics", "/openapi.json", "/readyz", "/healthz"):
            assert TOKEN not in client.get(path, headers=GOOD).text
    assert caplog.records, "expected some log records (start-up, model loading)"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + str(record.args)
        assert TOKEN not in text and TOKEN_LATIN1 not in text, record
        assert TOKEN[4:12] not in text, record  # not even part of it
    out, err = capsys.readouterr()
    assert TOKEN not in out + err and TOKEN_LATIN1 not in out + err


def test_serve_errors_do_not_print_the_token(monkeypatch, capsys, tmp_path):
    """``seqtag serve`` with bad settings prints what is wrong, not the secret next to it."""
    from seqtag.service.main import run

    monkeypatch.setenv("SEQTAG_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("SEQTAG_MAX_TEXTS", "not-a-number")
    assert run(models=str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert "max_texts" in err and TOKEN not in out + err


# ---- CORS ----------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,authorization"}


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_cors_absent_by_default(make_client):
    client = make_client()
    for origin in (ALLOWED, "null", "http://evil.example"):
        simple = client.post("/v1/segment", json={"text": "北京"}, headers={"Origin": origin})
        assert simple.status_code == 200 and cors_headers(simple) == {}
        preflight = client.options("/v1/segment", headers={"Origin": origin, **PREFLIGHT})
        assert cors_headers(preflight) == {}
        assert preflight.status_code in (404, 405)
        assert cors_headers(client.get("/v1/dictionaries", headers={"Origin": origin})) == {}


def test_cors_only_for_configured_origins(make_client):
    client = make_client(cors_origins=[ALLOWED], admin_token=TOKEN, max_text_chars=10)
    ok = client.options("/v1/segment", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers  # no cookies: the token is a header
    simple = client.post("/v1/segment", json={"text": "北京"}, headers={"Origin": ALLOWED})
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    # errors carry the headers too, so a browser client can read them
    for response in (client.post("/v1/segment", json={"text": "北" * 11}, headers={"Origin": ALLOWED}),
                     client.get("/v1/dictionaries", headers={"Origin": ALLOWED})):
        assert response.status_code in (401, 413)
        assert response.headers["access-control-allow-origin"] == ALLOWED

    for origin in ("https://evil.example.com", "https://app.example.com.evil.com", "http://app.example.com",
                   "https://APP.example.com:8443", "null", ALLOWED + "/", "*"):
        preflight = client.options("/v1/segment", headers={"Origin": origin, **PREFLIGHT})
        assert preflight.status_code >= 400, origin
        assert "access-control-allow-origin" not in preflight.headers, origin
        simple = client.post("/v1/segment", json={"text": "北京"}, headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers, origin


def test_cors_origins_from_environment(monkeypatch):
    monkeypatch.setenv("SEQTAG_CORS_ORIGINS", f" {ALLOWED} , https://b.example ")
    assert Settings().cors_origins == [ALLOWED, "https://b.example"]
    monkeypatch.setenv("SEQTAG_CORS_ORIGINS", "")
    assert Settings().cors_origins == []


# ---- names cannot leave their directories -------------------------------------------------------------

# Path segments as sent (already percent-encoded where needed); each must be refused with a 4xx.
HOSTILE_NAMES = [
    "..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "...", ".hidden",
    "..%2Fescaped", "%2e%2e%2fescaped", "..%5Cescaped", "..%255Cescaped", "%252e%252e",
    "a%2Fb", "%2Fetc%2Fpasswd", "%2F%2Fserver%2Fshare", "C:%5Cwindows", "..%5C..%5Cescaped",
    "a%5Cb", "a%00b", "%00", "a%0Ab", "a%0A", "a%0D", "a%09b", "a%20b", "%20a", "a%20",
    "x" * 65, "x" * 5000,
    "%EF%BC%8E%EF%BC%8E",  # fullwidth full stops ．．
    "%E2%80%A4%E2%80%A4",  # one dot leaders ․․
    "a%E2%88%95b",  # division slash a∕b
    "a%E2%81%84b",  # fraction slash a⁄b
    "%EF%BC%8F",  # fullwidth solidus ／
    "%E2%80%AEgnp.a",  # right-to-left override
    "%EF%BD%81%EF%BD%82%EF%BD%83",  # fullwidth abc
    "a%CC%81",  # a + combining acute
    "%D0%B0bc",  # Cyrillic а + bc
    "name.json%00.txt",
    "~root", "$HOME", "a*", "a%3Fb", "a%23b", "a:b", "a;b",
]


def snapshot(*roots: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                found[str(path)] = path.lstat().st_mtime_ns
    return found


@pytest.fixture
def sandbox(tmp_path, make_client, models_dir) -> Iterator[tuple[TestClient, Path, Path]]:
    """A client whose dictionaries live in ``tmp_path/box/dictionaries``, with files around to protect."""
    box = tmp_path / "box"
    dictionaries = box / "dictionaries"
    dictionaries.mkdir(parents=True)
    (box / "escaped.json").write_text('{"entries": ["outside"]}', encoding="utf-8")
    (box / "secret.txt").write_text("do not touch", encoding="utf-8")
    client = make_client(dictionaries_dir=dictionaries, admin_token=TOKEN)
    yield client, box, dictionaries


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: n[:40])
def test_dictionary_names_cannot_escape(sandbox, models_dir, name):
    client, box, dictionaries = sandbox
    before = snapshot(box.parent, models_dir)
    path = f"/v1/dictionaries/{name}"
    for method, body in (("PUT", {"entries": ["北京"]}), ("GET", None), ("DELETE", None)):
        response = client.request(method, path, json=body, headers=GOOD)
        assert 400 <= response.status_code < 500, (method, name, response.status_code, response.text[:300])
        assert_error(response, response.status_code)
    assert snapshot(box.parent, models_dir) == before  # nothing created, changed or removed anywhere
    assert list(dictionaries.iterdir()) == []


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: n[:40])
def test_names_in_request_bodies_cannot_escape(client, name):
    from urllib.parse import unquote

    raw = unquote(name)
    for endpoint in ("segment", "ner", "analyze"):
        response = client.post(f"/v1/{endpoint}", json={"text": "北京", "model": raw})
        assert 400 <= response.status_code < 500, (endpoint, raw, response.text[:300])
        assert_error(response, response.status_code)
    response = client.post("/v1/segment", json={"text": "北京", "dictionary": raw})
    assert 400 <= response.status_code < 500, (raw, response.text[:300])
    assert_error(response, response.status_code)


def test_a_stored_dictionary_outside_cannot_be_read(sandbox):
    client, box, _ = sandbox
    for name in ("../escaped", "..%2Fescaped", "%2e%2e%2fescaped", "..%5Cescaped"):
        response = client.get(f"/v1/dictionaries/{name}", headers=GOOD)
        assert response.status_code >= 400 and "outside" not in response.text, name
        use = client.post("/v1/segment", json={"text": "outside", "dictionary": name.replace("%2F", "/")})
        assert use.status_code >= 400 and "outside" not in use.text


def test_names_with_a_trailing_newline_are_refused(sandbox):
    """``$`` in a regular expression also matches before a final newline: names must match in full."""
    from seqtag.service.dictionaries import valid_name as dictionary_name
    from seqtag.service.registry import valid_name as model_name

    for check in (dictionary_name, model_name):
        assert check("brands") and check("zh-seg.v2_1")
        for bad in ("brands\n", "brands\r", "\nbrands", "bra\nnds", "brands\x00", ".", "..", ""):
            assert not check(bad), repr(bad)
    client, _, dictionaries = sandbox
    assert_error(client.put("/v1/dictionaries/brands%0A", json={"entries": ["a"]}, headers=GOOD), 422)
    assert list(dictionaries.iterdir()) == []


def test_valid_names_stay_inside(sandbox):
    client, box, dictionaries = sandbox
    for name in ("a", "A1", "brand.v2", "x-y_z", "a..b", "x" * 64, "1.json"):
        response = client.put(f"/v1/dictionaries/{name}", json={"entries": ["北京"]}, headers=GOOD)
        assert response.status_code == 201, (name, response.text)
        assert (dictionaries / f"{name}.json").is_file()
    assert sorted(p.name for p in box.iterdir()) == ["dictionaries", "escaped.json", "secret.txt"]
    assert not any(p.name.startswith(".") for p in dictionaries.iterdir())  # no temp files left behind


def test_odd_directories_in_models_dir_are_not_served(make_client, own_models_dir, trained):
    import shutil

    for bad in (".hidden", "has space", "ünï", "x" * 65, "a\nb", "zh-x\n"):
        shutil.copytree(trained["seg"], own_models_dir / bad)
    client = make_client(models_dir=own_models_dir)
    names = [m["name"] for m in client.get("/v1/models").json()["models"]]
    assert sorted(names) == ["zh-ner", "zh-pos", "zh-seg"]


# ---- size and count limits -------------------------------------------------------------------------


def test_limits_are_413(make_client):
    client = make_client(max_texts=5, max_text_chars=100, max_total_chars=300, max_body_bytes=4096,
                         max_dictionary_entries=3, admin_token=TOKEN)
    cases = [
        ("POST", "/v1/segment", {"texts": ["北"] * 6}, "too_many_texts"),
        ("POST", "/v1/analyze", {"texts": ["北"] * 6}, "too_many_texts"),
        ("POST", "/v1/ner", {"text": "北" * 101}, "text_too_long"),
        ("POST", "/v1/pos", {"texts": ["北" * 100] * 4}, "request_too_large"),
        ("POST", "/v1/segment", {"text": "北", "dictionary": ["a", "b", "c", "d"]}, "dictionary_too_large"),
        ("PUT", "/v1/dictionaries/big", {"entries": ["a", "b", "c", "d"]}, "dictionary_too_large"),
        ("POST", "/v1/segment", {"text": "a" * 5000}, "body_too_large"),
        ("PUT", "/v1/dictionaries/big", {"entries": ["a" * 60] * 100}, "body_too_large"),
    ]
    for method, path, body, code in cases:
        error = assert_error(call(client, method, path, body, GOOD), 413)
        assert error["code"] == code, (path, error)
    # at the limits: fine
    assert call(client, "POST", "/v1/segment", {"texts": ["北" * 60] * 5}).status_code == 200
    assert call(client, "PUT", "/v1/dictionaries/big", {"entries": ["a", "b", "c"]}, GOOD).status_code == 201
    # the body limit comes before authentication: no parsing of huge bodies for anyone
    assert_error(call(client, "PUT", "/v1/dictionaries/big", {"entries": ["a" * 60] * 100}), 413)
