"""The tagging fast path (service/fastpath.py) answers exactly as the FastAPI routes do.

Each request goes to two apps on the same models: one as built, one with the fast path taken out of its
middleware, so every request goes through FastAPI's routing and dependencies. Status, headers that
matter and bodies must be the same, for good requests and for every kind of bad one.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

import seqtag.service.fastpath as fastpath
from seqtag.service.app import create_app
from seqtag.service.fastpath import TaggingFastPath
from seqtag.service.schemas import TagRequest

JSON = {"content-type": "application/json"}

GOOD: list[tuple[str, Any]] = [
    ("/v1/segment", {"text": "我们喜欢图书馆。"}),
    ("/v1/segment", {"texts": ["张伟明在北京工作。", "", "   ", "iPhone15很贵"]}),
    ("/v1/segment", {"text": "他在😀北京", "offsets": "utf16", "scores": True}),
    ("/v1/segment", {"text": "张伟明在北京工作。", "dictionary": ["伟明在"]}),
    ("/v1/pos", {"texts": ["李娜明天去上海。", "他常常看电影！"]}),
    ("/v1/ner", {"text": "张伟明在北京工作。", "scores": True}),
    ("/v1/analyze", {"text": "张伟明在北京工作。"}),
    ("/v1/analyze", {"text": "张伟明在北京工作。", "model": "zh-seg,zh-ner"}),
    ("/v1/segment", {"text": "北京", "model": "zh-pos"}),
]

BAD: list[tuple[str, Any]] = [  # (path, JSON body) answered with an error by the endpoint code
    ("/v1/segment", {"text": "北京", "model": "no-such-model"}),
    ("/v1/segment", {"text": "北京", "model": "zh-ner"}),
    ("/v1/segment", {"text": "北京", "model": "bad name!"}),
    ("/v1/ner", {"text": "北京", "dictionary": [{"text": "北京", "label": "NOPE"}]}),
    ("/v1/segment", {"text": "北京", "dictionary": "no-such-dictionary"}),
    ("/v1/segment", {"texts": ["北京"] * 9}),  # over max_texts
    ("/v1/segment", {"text": "北" * 300}),  # over max_text_chars
    ("/v1/analyze", {"text": "北京", "model": "zh-seg,zh-pos"}),
]

INVALID: list[tuple[bytes, dict[str, str]]] = [  # (body, headers): the framework's own errors
    (b'{"text": ', JSON),
    (b"[1, 2]", JSON),
    (b'"text"', JSON),
    (b"", JSON),
    (b"{}", JSON),
    (b'{"text": "a", "texts": ["b"]}', JSON),
    (b'{"text": 5}', JSON),
    (b'{"texts": []}', JSON),
    (b'{"text": "a", "extra": 1}', JSON),
    (b'{"text": "a", "scores": "yes"}', JSON),
    (b'{"text": "a", "offsets": "bytes"}', JSON),
    (b'{"text": "a", "dictionary": 5}', JSON),
    (b'{"text": "\\ud800\xe5\x8c\x97"}', JSON),  # a lone surrogate: valid JSON, answered (escaped)
    (b"\xff\xfe{", JSON),
    (b'{"text": "a"}', {"content-type": "text/plain"}),
    (b'{"text": "a"}', {}),
    (b'{"text": "a"}', {"content-type": "application/vnd.seqtag+json; charset=utf-8"}),
    (b'{"text": "' + b"[" * 5000 + b'"}', JSON),
    (b"[" * 100_000, JSON),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, models_dir) -> Iterator[tuple[TestClient, TestClient]]:
    from seqtag.service.settings import Settings

    def settings() -> Settings:
        return Settings(models_dir=models_dir, dictionaries_dir=tmp_path_factory.mktemp("dicts"), torch_threads=1,
                        max_texts=8, max_text_chars=200)

    fast_app, plain_app = create_app(settings()), create_app(settings())
    plain_app.user_middleware = [m for m in plain_app.user_middleware if m.cls is not TaggingFastPath]
    assert len(plain_app.user_middleware) == len(fast_app.user_middleware) - 1
    with TestClient(fast_app) as fast, TestClient(plain_app) as plain:
        yield fast, plain


def same_answer(pair: tuple[TestClient, TestClient], path: str, content: bytes, headers: dict[str, str]) -> Any:
    fast, plain = (c.post(path, content=content, headers=headers) for c in pair)
    assert fast.status_code == plain.status_code, (path, content[:80], fast.text, plain.text)
    for header in ("content-type", "retry-after", "www-authenticate"):
        assert fast.headers.get(header) == plain.headers.get(header), header
    assert fast.content == plain.content, (path, content[:80])
    return fast


@pytest.mark.parametrize("path,body", GOOD)
def test_good_requests_answer_the_same(pair, path, body):
    response = same_answer(pair, path, json.dumps(body, ensure_ascii=False).encode(), JSON)
    assert response.status_code == 200


@pytest.mark.parametrize("path,body", BAD)
def test_endpoint_errors_answer_the_same(pair, path, body):
    response = same_answer(pair, path, json.dumps(body, ensure_ascii=False).encode(), JSON)
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("body,headers", INVALID)
@pytest.mark.parametrize("path", ["/v1/segment", "/v1/analyze"])
def test_invalid_bodies_answer_the_same(pair, path, body, headers):
    same_answer(pair, path, body, headers)


def test_a_service_that_is_not_started_answers_the_same(pair):
    registries = [c.app.state.registry for c in pair]
    try:
        for c in pair:
            c.app.state.registry = None
        response = same_answer(pair, "/v1/segment", b'{"text": "a"}', JSON)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    finally:
        for c, registry in zip(pair, registries):
            c.app.state.registry = registry


def test_the_fast_path_takes_well_formed_requests(pair, monkeypatch):
    """Guards against the fast path silently not matching (it once saw no routes on a newer FastAPI)."""
    parsed: list[Any] = []
    real = fastpath._parse

    def spy(body: bytes) -> TagRequest | None:
        parsed.append(real(body))
        return parsed[-1]

    monkeypatch.setattr(fastpath, "_parse", spy)
    fast, plain = pair
    for path in ("/v1/segment", "/v1/pos", "/v1/ner", "/v1/analyze"):
        assert fast.post(path, json={"text": "北京"}).status_code == 200
    assert len(parsed) == 4 and all(isinstance(p, TagRequest) for p in parsed)
    # not for other routes or methods, nor a body without a length (chunked), which the framework reads
    assert fast.get("/v1/models").status_code == 200
    assert fast.post("/v1/segment", content=iter([b'{"text": ', b'"\xe5\x8c\x97"}']), headers=JSON).status_code == 200
    assert len(parsed) == 4
    assert plain.post("/v1/segment", json={"text": "北京"}).status_code == 200
    assert len(parsed) == 4  # the plain app has no fast path


def test_fast_path_requests_are_counted_by_route(pair):
    fast, _ = pair
    fast.post("/v1/ner", json={"text": "北京"})
    fast.post("/v1/ner", json={"text": "北京", "model": "nope"})
    metrics = fast.get("/metrics").text
    assert 'seqtag_requests_total{endpoint="/v1/ner",status="200"}' in metrics
    assert 'seqtag_requests_total{endpoint="/v1/ner",status="404"}' in metrics
