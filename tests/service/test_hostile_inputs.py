"""Hostile inputs through the HTTP app: every one is answered correctly (200 with valid offsets)
or with a clear JSON 4xx, never a 500.

Text content (empty, whitespace only, NUL, lone surrogates sent as JSON escapes, bidi marks, ZWJ,
emoji sequences, combining marks, U+3000, U+FFFD, control characters, mixed scripts), size (one
1,000,000-character text, 10,000 texts; 200 under the limits, 413 over them) and the body itself
(malformed JSON, wrong content type, deep nesting, huge bodies, wrong JSON types).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from seqtag.models.codec import is_space
from seqtag.service.app import create_app
from seqtag.service.settings import Settings
from tests.fixtures import NOUNS, PERSONS, PLACES, PRONOUNS, VERBS
from tests.service.conftest import assert_error

JSON = {"content-type": "application/json"}
ENDPOINTS = ["segment", "pos", "ner", "analyze"]

HOSTILE = {
    "empty": "",
    "space": " ",
    "whitespace only": " \t\n\r\v\f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000",
    "ideographic spaces": "\u3000北京\u3000\u3000上海\u3000",
    "NUL": "\x00",
    "NULs inside": "我们\x00喜欢\x00\x00图书馆",
    "C0 controls": "".join(chr(c) for c in range(0x00, 0x20)) + "北京",
    "C1 controls": "".join(chr(c) for c in range(0x7F, 0xA0)) + "北京",
    "file/group separators": "北京\x1c上海\x1d广州\x1e西安\x1f",
    "RTL marks": "\u200f\u05e9\u05dc\u05d5\u05dd\u200e 北京\u200f",
    "RTL override": "\u202e我们喜欢\u202c图书馆\u2067abc\u2069",
    "ZWJ alone": "\u200d",
    "ZWJ inside words": "北\u200d京 i\u200dPhone",
    "emoji ZWJ sequence": "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466很好",
    "emoji modifiers and flags": "\U0001F44D\U0001F3FD\U0001F1E8\U0001F1F3 1\ufe0f\u20e3 \u2764\ufe0f",
    "combining marks": "cafe\u0301 e\u0301\u0301\u0301 \u0301北京\u0308",
    "only combining marks": "\u0301\u0302\u0303",
    "U+FFFD": "\ufffd\ufffd错误\ufffd",
    "BOM and zero width": "\ufeff我们\u200b喜欢\u2060音乐",
    "noncharacters": "\uffff\ufffe\U0010ffff\U000e0001",
    "private use": "\ue000\U000f0000北京",
    "mixed scripts": "Москва和東京、서울 and Αθήνα 3.5km iPhone15 ＩＰＨＯＮＥ１５ ①②③ 𠀀𪚥",
    "full width": "Ｆｕｌｌ１２３全角！",
    "line breaks": "我们\r\n喜欢\r音乐\n\n\n。",
    "long Latin run": "a" * 600 + "北京",
    "long digit run": "1" * 300 + "." + "2" * 300,
}


@pytest.fixture(scope="module")
def app_client(tmp_path_factory, models_dir) -> Iterator[TestClient]:
    """Default limits, torch threads 1; a server exception comes back as the 500 it would be."""
    settings = Settings(models_dir=models_dir, dictionaries_dir=tmp_path_factory.mktemp("dicts"), torch_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def limited(make_settings) -> Iterator[Any]:
    """``limited(**settings)`` -> a started client that reports server errors as responses."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        c = TestClient(create_app(make_settings(**overrides)), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# ---- checks ----------------------------------------------------------------------------


def utf16_slice(text: str, start: int, end: int) -> str:
    data = text.encode("utf-16-le", "surrogatepass")
    return data[2 * start:2 * end].decode("utf-16-le", "surrogatepass")


def check_items(text: str, items: list[dict[str, Any]], utf16: bool = False) -> None:
    n = len(text.encode("utf-16-le", "surrogatepass")) // 2 if utf16 else len(text)
    previous_end = 0
    for item in items:
        start, end = item["start"], item["end"]
        assert isinstance(start, int) and isinstance(end, int), item
        assert 0 <= start < end <= n, (text, item)
        assert start >= previous_end, ("overlapping or unordered spans", text, items)
        previous_end = end
        got = utf16_slice(text, start, end) if utf16 else text[start:end]
        assert got == item["text"] and got, (text, item)
        if "score" in item:
            assert 0.0 <= item["score"] <= 1.0


def check_coverage(text: str, tokens: list[dict[str, Any]]) -> None:
    """Words cover every non-whitespace character exactly once (code point offsets)."""
    covered = [0] * len(text)
    for t in tokens:
        for k in range(t["start"], t["end"]):
            covered[k] += 1
    missed = [(k, hex(ord(ch))) for k, ch in enumerate(text) if not is_space(ch) and covered[k] != 1]
    assert not missed, ("characters not covered exactly once", missed[:10])
    assert all(c <= 1 for c in covered)


def check_answer(response, texts: list[str], endpoint: str, utf16: bool = False) -> dict[str, Any]:
    assert response.status_code == 200, (response.status_code, response.text[:500])
    body = response.json()
    assert len(body["results"]) == len(texts)
    for text, result in zip(texts, body["results"]):
        check_items(text, result["tokens"], utf16)
        check_items(text, result["entities"], utf16)
        if endpoint == "ner":
            assert result["tokens"] == []
        if endpoint in ("segment", "pos"):
            assert result["entities"] == []
        if endpoint != "ner" and not utf16:
            check_coverage(text, result["tokens"])
    return body


# ---- text content -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_texts_one_request(app_client, endpoint):
    texts = list(HOSTILE.values())
    for offsets in ("codepoints", "utf16"):
        response = app_client.post(f"/v1/{endpoint}", json={"texts": texts, "scores": True, "offsets": offsets})
        check_answer(response, texts, endpoint, utf16=offsets == "utf16")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_text_alone(app_client, name):
    text = HOSTILE[name]
    response = app_client.post("/v1/analyze", json={"text": text})
    body = check_answer(response, [text], "analyze")
    if not text.strip() and all(is_space(ch) for ch in text):
        assert body["results"] == [{"tokens": [], "entities": []}]


@pytest.mark.parametrize("text", ["\x1c", "北京。\x1f", "\x1c\x1d\x1e\x1f", "北京\n\x1e"])
def test_information_separators_alone_are_tagged(app_client, text):
    check_answer(app_client.post("/v1/segment", json={"text": text}), [text], "segment")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("raw, text", [
    (b'{"text": "a\\ud800b"}', "a\ud800b"),
    (b'{"text": "\\udfff"}', "\udfff"),
    (b'{"text": "\\ud800\\ud800\\u5317\\u4eac"}', "\ud800\ud800北京"),
    (b'{"text": "\\udc00\\ud800"}', "\udc00\ud800"),  # a reversed pair: two lone surrogates
    (b'{"text": "\\ud83d\\ude00"}', "\U0001F600"),  # a proper pair: one astral character
    (b'{"text": "\\u0000\\u0000"}', "\x00\x00"),
    (b'{"texts": ["\\ud800", "", "\\u5317\\ud800\\u4eac"]}', None),
])
def test_surrogates_and_nul_as_json_escapes(app_client, endpoint, raw, text):
    texts = [text] if text is not None else json.loads(raw)["texts"]
    for offsets in ("codepoints", "utf16"):
        body = raw[:-1] + b', "scores": true, "offsets": "' + offsets.encode() + b'"}'
        response = app_client.post(f"/v1/{endpoint}", content=body, headers=JSON)
        check_answer(response, texts, endpoint, utf16=offsets == "utf16")


def test_lone_surrogates_in_dictionary_entries(app_client):
    raw = '{"text": "我\\ud800们喜欢", "dictionary": ["\\ud800们喜", "\\udfff"]}'.encode()
    response = app_client.post("/v1/segment", content=raw, headers=JSON)
    body = check_answer(response, ["我\ud800们喜欢"], "segment")
    assert {"text": "\ud800们喜", "start": 1, "end": 4} in body["results"][0]["tokens"]
    # stored, read back and used by name
    put = app_client.put("/v1/dictionaries/surrogates", content=b'{"entries": ["\\ud800\\u4eec"]}', headers=JSON)
    assert put.status_code in (200, 201), put.text
    assert app_client.get("/v1/dictionaries/surrogates").json()["entries"] == ["\ud800们"]
    response = app_client.post("/v1/segment", content=b'{"text": "\\ud800\\u4eec", "dictionary": "surrogates"}',
                               headers=JSON)
    body = check_answer(response, ["\ud800们"], "segment")
    assert body["results"][0]["tokens"] == [{"text": "\ud800们", "start": 0, "end": 2}]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_random_garbage_texts(app_client, endpoint):
    """Texts of random code points from every plane (surrogates included), in one request."""
    rng = random.Random(7)
    planes = [(0, 0x7F), (0x80, 0x2FF), (0x300, 0x36F), (0x2000, 0x206F), (0x3000, 0x303F), (0x4E00, 0x9FFF),
              (0xD800, 0xDFFF), (0xE000, 0xFFFF), (0x1F000, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0x10FFFF)]
    texts = []
    for _ in range(60):
        lo_hi = [rng.choice(planes) for _ in range(rng.randint(0, 40))]
        texts.append("".join(chr(rng.randint(lo, hi)) for lo, hi in lo_hi))
    # through a JSON body with \u escapes (ensure_ascii), exactly as a client would send them
    raw = json.dumps({"texts": texts, "scores": True}, ensure_ascii=True).encode()
    texts = json.loads(raw)["texts"]  # a high + low surrogate side by side arrive as one astral character
    check_answer(app_client.post(f"/v1/{endpoint}", content=raw, headers=JSON), texts, endpoint)


# ---- size: one huge text, many texts ----------------------------------------------------------


def mixed_chinese(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = PRONOUNS + NOUNS + VERBS + PERSONS + PLACES + ["iPhone15", "2024年", "3.5", "😀", "，", "、", " ", "\n"]
    parts, size = [], 0
    while size < n:
        word = rng.choice(words) if rng.random() > 0.08 else "。"
        parts.append(word)
        size += len(word)
    return "".join(parts)[:n]


def test_one_text_of_a_million_characters(app_client):
    text = mixed_chinese(1_000_000)
    assert len(text) == 1_000_000
    started = time.monotonic()
    response = app_client.post("/v1/segment", json={"text": text})
    elapsed = time.monotonic() - started
    body = check_answer(response, [text], "segment")
    assert len(body["results"][0]["tokens"]) > 100_000
    assert elapsed < 60, elapsed


def test_one_huge_text_over_the_limits_is_413(limited):
    client = limited(max_text_chars=999_999)
    text = mixed_chinese(1_000_000)
    error = assert_error(client.post("/v1/segment", json={"text": text}), 413)
    assert error["code"] == "text_too_long" and "1000000 characters" in error["message"]
    client = limited(max_total_chars=1_500_000)
    error = assert_error(client.post("/v1/segment", json={"texts": [text, text[:600_000]]}), 413)
    assert error["code"] == "request_too_large"
    client = limited(max_body_bytes=1_000_000)  # 1M CJK characters are ~3 MB of UTF-8
    error = assert_error(client.post("/v1/segment", json={"text": text}), 413)
    assert error["code"] in ("body_too_large", "too_large")


def test_ten_thousand_texts(app_client):
    rng = random.Random(3)
    texts = [mixed_chinese(rng.randint(0, 30), seed=k) for k in range(10_000)]
    response = app_client.post("/v1/segment", json={"texts": texts})
    check_answer(response, texts, "segment")


def test_ten_thousand_texts_over_max_texts_is_413(limited):
    client = limited(max_texts=9_999)
    error = assert_error(client.post("/v1/segment", json={"texts": ["北京"] * 10_000}), 413)
    assert error["code"] == "too_many_texts" and "10000 texts" in error["message"]
    assert client.post("/v1/segment", json={"texts": ["北京"] * 9_999}).status_code == 200


def test_many_texts_bigger_than_the_queue(limited):
    """One request with more pieces than max_queue is admitted whole, not refused forever."""
    client = limited(max_queue=16)
    texts = ["我们喜欢图书馆。他常常看电影！"] * 200
    check_answer(client.post("/v1/ner", json={"texts": texts}), texts, "ner")


# ---- the body itself -----------------------------------------------------------------------------

BAD_BODIES = [
    ("malformed JSON", {"content": b'{"text": "a",}', "headers": JSON}, 400),
    ("single quotes", {"content": b"{'text': 'a'}", "headers": JSON}, 400),
    ("trailing garbage", {"content": b'{"text": "a"} xyz', "headers": JSON}, 400),
    ("unterminated string", {"content": b'{"text": "a', "headers": JSON}, 400),
    ("bad escape", {"content": b'{"text": "\\x41"}', "headers": JSON}, 400),
    ("truncated escape", {"content": b'{"text": "\\ud8"}', "headers": JSON}, 400),
    ("raw control char in string", {"content": b'{"text": "a\x01b"}', "headers": JSON}, 400),
    ("NaN", {"content": b'{"text": NaN}', "headers": JSON}, (400, 422)),
    ("Infinity", {"content": b'{"texts": ["a"], "scores": Infinity}', "headers": JSON}, (400, 422)),
    ("huge number", {"content": b'{"text": ' + b"9" * 5000 + b"}", "headers": JSON}, (400, 422)),
    ("huge float", {"content": b'{"text": 1e999999}', "headers": JSON}, (400, 422)),
    ("invalid UTF-8", {"content": b'{"text": "\xff\xfe\xfd"}', "headers": JSON}, (400, 422)),
    # CESU-style bytes of U+D800: not UTF-8, but the JSON decoder accepts them as the lone surrogate
    ("UTF-8 encoded surrogate", {"content": b'{"text": "\xed\xa0\x80"}', "headers": JSON}, (200, 400, 422)),
    ("overlong UTF-8", {"content": b'{"text": "\xc0\xaf"}', "headers": JSON}, (400, 422)),
    ("binary garbage", {"content": bytes(range(256)) * 4, "headers": JSON}, (400, 422)),
    ("empty body", {"content": b"", "headers": JSON}, (400, 422)),
    ("only whitespace", {"content": b"   \n ", "headers": JSON}, (400, 422)),
    ("text/plain", {"content": b'{"text": "a"}', "headers": {"content-type": "text/plain"}}, 415),
    ("form urlencoded", {"content": b"text=a", "headers": {"content-type": "application/x-www-form-urlencoded"}},
     415),
    ("multipart", {"files": {"text": ("a.txt", b"a")}}, 415),
    ("xml", {"content": b"<text>a</text>", "headers": {"content-type": "application/xml"}}, 415),
    ("json-ish but not json", {"content": b'{"text": "a"}', "headers": {"content-type": "application/jsonx"}}, 415),
    ("garbage content type", {"content": b'{"text": "a"}', "headers": {"content-type": ";;;=\x7f"}}, 415),
    ("deeply nested lists", {"content": b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "headers": JSON},
     (400, 422)),
    ("deeply nested objects", {"content": b'{"text": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
                               "headers": JSON}, (400, 422)),
    ("deep unclosed nesting", {"content": b"[" * 200_000, "headers": JSON}, (400, 422)),
    ("number for text", {"json": {"text": 12}}, 422),
    ("bool for text", {"json": {"text": True}}, 422),
    ("null text", {"json": {"text": None}}, 422),
    ("object for text", {"json": {"text": {"a": "b"}}}, 422),
    ("list for text", {"json": {"text": ["a"]}}, 422),
    ("numbers in texts", {"json": {"texts": [1, 2, 3]}}, 422),
    ("objects in texts", {"json": {"texts": [{"text": "a"}]}}, 422),
    ("texts a string", {"json": {"texts": "abc"}}, 422),
    ("texts an object", {"json": {"texts": {"0": "a"}}}, 422),
    ("number for model", {"json": {"text": "a", "model": 1}}, 422),
    ("object for dictionary", {"json": {"text": "a", "dictionary": {"a": "b"}}}, 422),
    ("number in dictionary", {"json": {"text": "a", "dictionary": [1]}}, 422),
    ("entry with number label", {"json": {"text": "a", "dictionary": [{"text": "a", "label": 1}]}}, 422),
    ("entry with extra field", {"json": {"text": "a", "dictionary": [{"text": "a", "x": 1}]}}, 422),
    ("string for scores", {"json": {"text": "a", "scores": "true"}}, 422),
    ("number for scores", {"json": {"text": "a", "scores": 1}}, 422),
    ("bad offsets", {"json": {"text": "a", "offsets": 16}}, 422),
    ("array body", {"json": [{"text": "a"}]}, 422),
    ("number body", {"content": b"1", "headers": JSON}, 422),
    ("string body", {"content": b'"a"', "headers": JSON}, 422),
    ("many wrong items", {"json": {"texts": list(range(50_000))}}, 422),
    ("many keys", {"json": {f"k{i}": i for i in range(20_000)} | {"text": "a"}}, 422),
    ("duplicate keys", {"content": b'{"text": "a", "text": 5}', "headers": JSON}, 422),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name,kwargs,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_clear_json_4xx(app_client, endpoint, name, kwargs, status):
    response = app_client.post(f"/v1/{endpoint}", **kwargs)
    if response.status_code == 200 and 200 in status:  # leniently decoded: then the answer must be right
        check_answer(response, [json.loads(kwargs["content"].decode("utf-8", "surrogatepass"))["text"]], endpoint)
        return
    error = assert_error(response, status)
    assert len(error["message"]) < 2000  # the offending input is not echoed back


@pytest.mark.parametrize("name,kwargs,status", [b for b in BAD_BODIES if "json" in b[1]],
                         ids=[b[0] for b in BAD_BODIES if "json" in b[1]])
def test_bad_dictionary_bodies(app_client, name, kwargs, status):
    """The same wrong shapes sent to PUT /v1/dictionaries/{name} (where ``entries`` is expected)."""
    payload = kwargs["json"]
    wrapped = {"entries": payload.get("texts", payload) if isinstance(payload, dict) else payload}
    response = app_client.put("/v1/dictionaries/hostile", json=wrapped)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error(response, response.status_code)


def test_a_huge_body_is_413_before_parsing(limited):
    client = limited(max_body_bytes=64 * 1024)
    big = b'{"text": "' + b"a" * (1 << 20) + b'"}'
    error = assert_error(client.post("/v1/segment", content=big, headers=JSON), 413)
    assert "65536 bytes" in error["message"]

    def stream() -> Iterator[bytes]:  # chunked, no Content-Length: counted while reading
        yield b'{"text": "'
        for _ in range(256):
            yield b"a" * 1024
        yield b'"}'

    assert_error(client.post("/v1/segment", content=stream(), headers=JSON), 413)
    # a lying Content-Length is not trusted either
    assert_error(client.post("/v1/segment", content=big, headers=JSON | {"content-length": "10"}), (400, 413))
    assert_error(client.post("/v1/segment", content=b"{}", headers=JSON | {"content-length": "abc"}), (400, 422))
    # and the app still answers
    assert client.post("/v1/segment", json={"text": "北京"}).status_code == 200


def test_huge_body_on_other_endpoints(limited):
    client = limited(max_body_bytes=4096)
    big = json.dumps({"entries": ["北京"] * 5000}).encode()
    assert_error(client.put("/v1/dictionaries/big", content=big, headers=JSON), 413)
    assert_error(client.post("/v1/models/reload", content=big, headers=JSON), 413)
    assert client.get("/v1/dictionaries").json() == {"dictionaries": []}


def test_the_app_survives_all_of_it(app_client):
    assert app_client.get("/healthz").status_code == 200
    assert app_client.get("/readyz").status_code == 200
    metrics = app_client.get("/metrics").text
    assert 'status="500"' not in metrics
