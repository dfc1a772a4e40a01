"""Every bad input is a 4xx JSON error (never a 500); overload 503, deadline 504, failed batch 5xx."""

from __future__ import annotations

import asyncio
import time

import pytest

from seqtag.service.app import create_app
from tests.service.conftest import assert_error, async_client

JSON = {"content-type": "application/json"}

BAD_BODIES = [
    ("empty texts", {"json": {"texts": []}}, 422),
    ("neither text nor texts", {"json": {"scores": True}}, 422),
    ("both text and texts", {"json": {"text": "a", "texts": ["b"]}}, 422),
    ("text not a string", {"json": {"text": 5}}, 422),
    ("texts not a list", {"json": {"texts": "abc"}}, 422),
    ("a text not a string", {"json": {"texts": ["a", None]}}, 422),
    ("nested lists", {"json": {"texts": [["a"]]}}, 422),
    ("scores not a bool", {"json": {"text": "a", "scores": "yes"}}, 422),
    ("bad offsets", {"json": {"text": "a", "offsets": "bytes"}}, 422),
    ("unknown field", {"json": {"text": "a", "txet": "b"}}, 422),
    ("model not a string", {"json": {"text": "a", "model": 3}}, 422),
    ("body is a list", {"json": ["a", "b"]}, 422),
    ("body is a string", {"json": "a"}, 422),
    ("body is null", {"content": b"null", "headers": JSON}, 422),
    ("body is a number", {"content": b"12", "headers": JSON}, 422),
    ("invalid JSON", {"content": b'{"texts": ["a",]}', "headers": JSON}, 400),
    ("truncated JSON", {"content": b'{"texts": ["a"', "headers": JSON}, 400),
    ("not UTF-8", {"content": b'{"text": "\xff\xfe"}', "headers": JSON}, (400, 422)),
    ("empty body", {"content": b"", "headers": JSON}, 400),  # 400 saying the body is empty
    ("deeply nested JSON", {"content": b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "headers": JSON},
     (400, 422)),
    ("nested within limits", {"content": b'{"texts": ' + b"[" * 900 + b"]" * 900 + b"}", "headers": JSON}, 422),
    ("deep dictionary", {"content": b'{"text": "a", "dictionary": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                         "headers": JSON}, (400, 422)),
    ("text/plain", {"content": b'{"text": "a"}', "headers": {"content-type": "text/plain"}}, 415),
    ("form data", {"data": {"text": "a"}}, 415),
    ("no content type", {"content": b'{"text": "a"}', "headers": {"content-type": ""}}, 415),
    ("unknown model", {"json": {"text": "a", "model": "zh-nope"}}, 404),
    ("model name with a path", {"json": {"text": "a", "model": "../../etc"}}, 422),
    ("wrong task", {"json": {"text": "a", "model": "zh-ner"}}, 400),
    ("unknown stored dictionary", {"json": {"text": "a", "dictionary": "nope"}}, 404),
    ("dictionary label not in the model", {"json": {"text": "a", "model": "zh-pos",
                                                     "dictionary": [{"text": "a", "label": "X"}]}}, 422),
    ("blank dictionary entry", {"json": {"text": "a", "dictionary": ["  "]}}, 422),
    ("dictionary entry not a string", {"json": {"text": "a", "dictionary": [1]}}, 422),
]


@pytest.mark.parametrize("name,kwargs,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_requests_are_json_4xx(client, name, kwargs, status):
    response = client.post("/v1/segment", **kwargs)
    assert_error(response, status)


def test_wrong_task_per_endpoint(client):
    assert_error(client.post("/v1/pos", json={"text": "a", "model": "zh-seg"}), 400)
    assert_error(client.post("/v1/ner", json={"text": "a", "model": "zh-pos"}), 400)
    assert_error(client.post("/v1/analyze", json={"text": "a", "model": "zh-seg,zh-pos"}), 422)
    assert_error(client.post("/v1/analyze", json={"text": "a", "model": "zh-seg,nope"}), 404)


def test_unknown_paths_and_methods(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/segment"), 405)
    assert_error(client.delete("/v1/models"), 405)


def test_size_limits_are_413(make_client):
    client = make_client(max_texts=3, max_text_chars=50, max_total_chars=80, max_body_bytes=2048,
                         max_dictionary_entries=2)
    error = assert_error(client.post("/v1/segment", json={"texts": ["a"] * 4}), 413)
    assert "4 texts" in error["message"] and "3" in error["message"]
    error = assert_error(client.post("/v1/segment", json={"text": "北" * 51}), 413)
    assert "51 characters" in error["message"]
    error = assert_error(client.post("/v1/segment", json={"texts": ["北" * 40, "北" * 40, "北"]}), 413)
    assert "81 characters" in error["message"]
    assert_error(client.post("/v1/segment", json={"text": "北", "dictionary": ["a", "b", "c"]}), 413)
    assert_error(client.put("/v1/dictionaries/big", json={"entries": ["a", "b", "c"]}), 413)
    error = assert_error(client.post("/v1/segment", json={"text": "a", "pad": "x" * 5000}), 413)
    assert "2048 bytes" in error["message"]

    def chunks():  # no Content-Length: counted while streaming
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    assert_error(client.post("/v1/segment", content=chunks(), headers=JSON), 413)
    # exactly at the limits is fine
    assert client.post("/v1/segment", json={"texts": ["北" * 40, "北" * 40]}).status_code == 200


def test_empty_and_whitespace_texts_are_valid(client):
    for endpoint in ("segment", "pos", "ner", "analyze"):
        response = client.post(f"/v1/{endpoint}", json={"texts": ["", " ", "\u3000\n\t", "\u2028"]})
        assert response.status_code == 200
        assert response.json()["results"] == [{"tokens": [], "entities": []}] * 4


# ---- a slowed or failing model inside the app -----------------------------------------


def slow_down(app, name: str, seconds: float) -> None:
    pipeline = app.state.registry.get(name).pipeline
    real = pipeline.tag_encoded

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    pipeline.tag_encoded = slow


def test_overload_is_503_with_retry_after(make_settings):
    app = create_app(make_settings(max_queue=1, max_batch_size=1, max_wait_ms=0))

    async def main():
        async with async_client(app) as http:
            slow_down(app, "zh-seg", 0.2)
            requests = [http.post("/v1/segment", json={"text": f"我们喜欢音乐{i}。"}) for i in range(6)]
            answers = await asyncio.gather(*requests)
            later = await http.post("/v1/segment", json={"text": "我们"})
            return answers, later

    answers, later = asyncio.run(main())
    statuses = sorted(a.status_code for a in answers)
    assert 503 in statuses and 200 in statuses, statuses
    for answer in answers:
        if answer.status_code == 503:
            error = assert_error(answer, 503)
            assert error["code"] == "overloaded"
            assert int(answer.headers["retry-after"]) >= 1
    assert later.status_code == 200


def test_deadline_is_504(make_client):
    client = make_client(request_timeout_s=0.2, max_wait_ms=0)
    slow_down(client.app, "zh-seg", 1.2)
    started = time.monotonic()
    error = assert_error(client.post("/v1/segment", json={"texts": ["我们喜欢音乐。", "他看电影。"]}), 504)
    assert time.monotonic() - started < 1.0  # answered at the deadline, not when the model finished
    assert error["code"] == "deadline_exceeded"
    assert client.post("/v1/pos", json={"text": "我们"}).status_code == 200  # other models unaffected


def test_failing_batch_fails_its_requests_and_the_server_goes_on(make_settings):
    app = create_app(make_settings(max_wait_ms=300, wait_policy="always"))

    async def main():
        async with async_client(app) as http:
            pipeline = app.state.registry.get("zh-seg").pipeline
            real = pipeline.tag_encoded
            calls = {"n": 0}

            def flaky(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("CUDA fell over")
                return real(*args, **kwargs)

            pipeline.tag_encoded = flaky
            first = await asyncio.gather(*(http.post("/v1/segment", json={"text": t})
                                           for t in ("我们喜欢音乐。", "他看电影。", "北京")))
            second = await http.post("/v1/segment", json={"text": "我们喜欢音乐。"})
            ready = await http.get("/readyz")
            return first, second, ready, calls["n"]

    first, second, ready, calls = asyncio.run(main())
    for answer in first:  # the three requests shared the failing batch
        error = assert_error(answer, 500)
        assert error["code"] == "inference_failed" and "CUDA fell over" in error["message"]
    assert second.status_code == 200 and second.json()["results"][0]["tokens"]
    assert ready.status_code == 200 and calls == 2


def test_output_count_mismatch_inside_the_app(make_client):
    client = make_client()
    pipeline = client.app.state.registry.get("zh-seg").pipeline
    real = pipeline.tag_encoded
    pipeline.tag_encoded = lambda *a, **k: (lambda t: t.take(range(len(t) - 1)))(real(*a, **k))
    error = assert_error(client.post("/v1/segment", json={"texts": ["我们", "他们"]}), 500)
    assert "results for a batch of" in error["message"]
    pipeline.tag_encoded = real
    assert client.post("/v1/segment", json={"texts": ["我们", "他们"]}).status_code == 200


def test_a_genuine_bug_is_a_logged_500_json(make_settings, caplog):
    from fastapi.testclient import TestClient

    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        def broken(task):
            raise ZeroDivisionError("a bug")

        client.app.state.registry.default_for = broken
        response = client.post("/v1/segment", json={"text": "我们"})
        error = assert_error(response, 500)
        assert error["code"] == "internal_error" and "a bug" not in error["message"]
        assert any("unexpected error" in r.message for r in caplog.records)
        assert client.get("/healthz").status_code == 200
