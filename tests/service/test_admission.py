"""Admission and scheduling through HTTP: no request starves the others, overload is refused at once with
Retry-After, a client that goes away costs no batch, dictionary work leaves the event loop free.

Functional checks with tiny models and small budgets; the speed targets live in bench/load.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from seqtag.service.admission import Admission
from seqtag.service.app import create_app
from seqtag.service.errors import ServiceError
from seqtag.service.tagging import DictionarySpec
from tests.service.conftest import TEXTS, assert_error, async_client

SENTENCE = "张伟明在北京工作。"


def test_tickets_hold_and_give_back_the_budget():
    admission = Admission(budget=100, large_share=0.5, max_large=1)
    first = admission.admit(20)
    assert admission.in_flight == 20 and not first.low_priority
    first.settle(45)  # the exact cost, once parsed
    second = admission.admit(45)
    assert admission.in_flight == 90
    with pytest.raises(ServiceError) as refused:
        admission.admit(20)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert admission.in_flight == 90  # a refusal holds nothing
    large = admission.admit(1000)  # over half the budget: its own lane, never the budget
    assert large.low_priority and admission.in_flight == 90 and admission.large_in_flight == 1
    with pytest.raises(ServiceError):
        admission.admit(500)  # the only large slot is taken: the large request is refused...
    small = admission.admit(10)  # ...and a small one still fits
    for ticket in (first, second, large, small):
        ticket.release()
        ticket.release()  # twice is harmless
    assert admission.in_flight == 0 and admission.large_in_flight == 0


def test_a_ticket_moves_lane_when_its_exact_cost_is_known():
    admission = Admission(budget=100, large_share=0.25, max_large=1)
    ticket = admission.admit(10)
    ticket.settle(80)  # the body held more than its size suggested: large after all
    assert ticket.low_priority and admission.in_flight == 0 and admission.large_in_flight == 1
    ticket.settle(5)
    assert not ticket.low_priority and admission.in_flight == 5 and admission.large_in_flight == 0
    ticket.release()


def test_light_requests_never_get_503_beside_a_heavy_one(make_settings):
    """One client sends large texts back to back while light clients send single sentences: the light ones
    are all answered 200 (before the fix they got 503 while the heavy request filled the queue)."""
    app = create_app(make_settings(queue_budget_chars=4_000, max_queue=64, max_batch_size=8))
    heavy_text = SENTENCE * 400  # 3,600 characters: a large request, hundreds of pieces
    statuses: dict[str, list[int]] = {"heavy": [], "light": []}

    async def main():
        async with async_client(app) as c:
            stop = asyncio.Event()

            async def heavy():
                for _ in range(3):
                    r = await c.post("/v1/segment", json={"text": heavy_text})
                    statuses["heavy"].append(r.status_code)
                stop.set()

            async def light(k: int):
                while not stop.is_set():
                    r = await c.post("/v1/segment", json={"text": TEXTS[k % 2]})
                    statuses["light"].append(r.status_code)

            await asyncio.gather(heavy(), *(light(k) for k in range(4)))

    asyncio.run(asyncio.wait_for(main(), 120))
    assert statuses["light"] and set(statuses["light"]) == {200}, statuses["light"]
    assert set(statuses["heavy"]) <= {200, 504}, statuses["heavy"]


def test_overload_is_refused_at_once_with_retry_after_and_admitted_work_is_answered(make_settings):
    app = create_app(make_settings(queue_budget_chars=3_000, max_batch_size=16))
    body = {"texts": [SENTENCE] * 50}  # 450 characters of work per request
    answers: list[tuple[int, str | None, float]] = []

    async def main():
        async with async_client(app) as c:
            async def client():
                for _ in range(3):
                    start = time.perf_counter()
                    r = await c.post("/v1/segment", json=body)
                    answers.append((r.status_code, r.headers.get("retry-after"), time.perf_counter() - start))
                    if r.status_code == 200:
                        assert len(r.json()["results"]) == 50

            await asyncio.gather(*(client() for _ in range(24)))

    asyncio.run(asyncio.wait_for(main(), 120))
    statuses = {status for status, _, _ in answers}
    assert statuses <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses
    assert all(retry == "1" for status, retry, _ in answers if status == 503)
    metrics = app.state.metrics
    refused = sum(metrics.refused_cost.labels("normal", stage)._value.get() for stage in ("body", "parsed"))
    assert refused > 0 and metrics.admitted_cost.labels("normal")._value.get() > 0
    assert app.state.admission.in_flight == 0  # every ticket given back


def test_a_full_budget_refuses_before_the_body_is_parsed(make_client):
    client = make_client(queue_budget_chars=1_000)
    admission = client.app.state.admission
    held = [admission.admit(250) for _ in range(4)]  # the whole budget in flight
    try:
        r = client.post("/v1/segment", content=b'{"text": "not even JSON', headers={"content-type": "application/json"})
        error = assert_error(r, 503)  # not the 400 parsing would give: refused before parsing
        assert error["code"] == "overloaded" and r.headers["retry-after"] == "1"
        assert client.app.state.metrics.refused_cost.labels("normal", "body")._value.get() > 0
    finally:
        for ticket in held:
            ticket.release()
    assert client.post("/v1/segment", json={"text": SENTENCE}).status_code == 200


def test_a_request_whose_client_went_away_costs_no_batch(make_settings):
    """The handler is cancelled when the client disconnects; its queued pieces never reach the model."""
    app = create_app(make_settings())
    gone_text = "这句话的客户已经走了。" * 3

    async def main():
        async with async_client(app) as c:
            model = app.state.registry.get("zh-seg")
            seen: list[str] = []
            gate = threading.Event()
            real = model.pipeline.tag_encoded

            def gated(encoded, order, *args, **kwargs):
                gate.wait(10)
                seen.extend(str(len(encoded.ids[i])) for i in order)
                return real(encoded, order, *args, **kwargs)

            model.batcher.pipeline = type("Gated", (), {"tag_encoded": staticmethod(gated),
                                                        "codec": model.pipeline.codec})()
            busy = asyncio.create_task(c.post("/v1/segment", json={"text": "北京"}))  # holds the worker
            await asyncio.sleep(0.2)
            body = json.dumps({"text": gone_text}).encode()
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            sent: list[dict] = []

            async def receive():
                if messages:
                    return messages.pop(0)
                await asyncio.sleep(0.2)  # the client hangs up while its piece is queued
                return {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/v1/segment", "raw_path": b"/v1/segment", "root_path": "",
                     "query_string": b"", "server": ("test", 80), "client": ("test", 1),
                     "headers": [(b"content-type", b"application/json"),
                                 (b"content-length", str(len(body)).encode())]}
            await asyncio.wait_for(app(scope, receive, send), 5)
            assert sent == []  # nobody left to answer
            gate.set()
            assert (await busy).status_code == 200
            assert str(len(gone_text)) not in seen
            rejected = app.state.metrics.rejected.labels("zh-seg", "cancelled")._value.get()
            assert rejected >= 1
            assert app.state.admission.in_flight == 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_inline_dictionaries_compile_off_the_event_loop(make_settings, monkeypatch):
    """A large inline dictionary is checked and compiled in the dictionary thread while /healthz answers;
    its entries count against the admission budget."""
    app = create_app(make_settings())
    threads: list[str] = []
    real = DictionarySpec.compile

    def slow_compile(self, model, store):
        threads.append(threading.current_thread().name)
        time.sleep(0.5)  # a compile as slow as a 200k-entry one on a busy machine
        return real(self, model, store)

    monkeypatch.setattr(DictionarySpec, "compile", slow_compile)
    entries = [f"词{k}" for k in range(4_000)]

    async def main():
        async with async_client(app) as c:
            tagging = asyncio.create_task(c.post("/v1/segment", json={"text": SENTENCE, "dictionary": entries}))
            await asyncio.sleep(0.1)
            start = time.perf_counter()
            health = await c.get("/healthz")
            took = time.perf_counter() - start
            assert health.status_code == 200 and not tagging.done()
            assert took < 0.3, took  # not stuck behind the compile
            assert (await tagging).status_code == 200

    asyncio.run(asyncio.wait_for(main(), 60))
    assert threads and all(name.startswith("seqtag-dictionary") for name in threads), threads
    assert app.state.metrics.admitted_cost.labels("normal")._value.get() >= len(SENTENCE) + 4_000 // 8


def _nested(key: str, depth: int) -> bytes:
    return ('{"%s": ' % key).encode() + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_nested_json_is_a_400_on_every_route(client, depth):
    for path in ("/v1/segment", "/v1/pos", "/v1/ner", "/v1/analyze"):
        for key in ("texts", "text", "dictionary"):
            r = client.post(path, content=_nested(key, depth), headers={"content-type": "application/json"})
            assert_error(r, (400, 422))
    r = client.put("/v1/dictionaries/deep", content=_nested("entries", depth),
                   headers={"content-type": "application/json"})
    assert_error(r, (400, 422))


def test_an_empty_body_is_a_400_that_says_so(client):
    for method, path in [("POST", "/v1/segment"), ("POST", "/v1/pos"), ("POST", "/v1/ner"),
                         ("POST", "/v1/analyze"), ("PUT", "/v1/dictionaries/empty")]:
        r = client.request(method, path, content=b"", headers={"content-type": "application/json"})
        error = assert_error(r, 400)
        assert error["code"] == "empty_body" and "empty" in error["message"], (path, error)


def test_models_list_shows_a_short_reason_not_paths(make_client, own_models_dir):
    (own_models_dir / "zh-ner" / "model.safetensors").write_bytes(b"not weights")
    client = make_client(models_dir=own_models_dir)
    failed = client.get("/v1/models").json()["failed"]
    assert set(failed) == {"zh-ner"}
    assert str(own_models_dir) not in failed["zh-ner"] and "/" not in failed["zh-ner"]
    assert "server log" in failed["zh-ner"]
    reload = client.post("/v1/models/reload")  # the admin's answer keeps the details
    assert str(own_models_dir) in reload.json()["error"]["details"]["failed"]["zh-ner"]


def test_error_messages_cut_echoed_input(client):
    huge = "X" * 100_000
    for body in ({"text": "北京", "model": "zh-pos", "dictionary": [{"text": "北京", "label": huge}]},
                 {"text": "北京", "model": huge}, {"text": "北京", "dictionary": huge}):
        r = client.post("/v1/segment", json=body)
        error = assert_error(r, (404, 422))
        assert len(r.content) < 2_000 and "100,000 characters" in error["message"], error
    r = client.post("/v1/segment", content=b"{}", headers={"content-type": "text/" + huge[:5_000]})
    assert len(assert_error(r, 415)["message"]) < 300
