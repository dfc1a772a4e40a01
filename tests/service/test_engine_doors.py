"""One engine behind every door: soft dictionaries over HTTP, /v1/analyze's tokens that never cut an entity,
the fast path that steps aside for a route with dependencies of its own, and what `--models` may point at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from seqtag.service.app import create_app
from seqtag.service.deps import JSONBody, ServiceDep
from seqtag.service.fastpath import TaggingFastPath
from seqtag.service.registry import ModelRegistry
from seqtag.service.routes import tagging
from seqtag.service.schemas import TagRequest
from tests.fixtures import PERSONS, PLACES, train_tiny
from tests.service.conftest import TEXTS, assert_error, spans_ok


@pytest.fixture(scope="module")
def lexicon_ner(tmp_path_factory) -> Path:
    """``best/`` of a tiny NER run with a typed lexicon."""
    directory = tmp_path_factory.mktemp("nerlex")
    lexicon = directory / "lexicon.txt"
    lexicon.write_text("\n".join([f"{p} 5 nr" for p in PERSONS] + [f"{p} 5 ns" for p in PLACES]) + "\n",
                       encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        run = train_tiny(directory, "ner", epochs=3, extra_flags=("--lexicon", str(lexicon), "--lexicon-dim", "8"))
    finally:
        torch.set_num_threads(threads)
    return run / "best"


@pytest.fixture(scope="module")
def lex_client(tmp_path_factory, trained, lexicon_ner):
    models = tmp_path_factory.mktemp("lexmodels")
    shutil.copytree(lexicon_ner, models / "zh-ner")
    shutil.copytree(trained["pos"], models / "zh-pos")
    shutil.copytree(trained["seg"], models / "zh-seg")
    settings_dir = tmp_path_factory.mktemp("dicts")
    from seqtag.service.settings import Settings

    app = create_app(Settings(models_dir=models, dictionaries_dir=settings_dir, torch_threads=1))
    with TestClient(app) as client:
        yield client


def test_a_lexicon_model_builds_its_word_index_while_loading(lex_client):
    lexicon = lex_client.app.state.registry.get("zh-ner").pipeline.codec.lexicon
    assert lexicon is not None and lexicon._index is not None  # the first request does not build it


def test_soft_dictionary_over_http(lex_client):
    body = {"texts": ["马云在杭州工作。", "张伟明在北京工作。"], "dictionary": [{"text": "马云", "label": "PER"}]}
    soft = lex_client.post("/v1/ner", json=body | {"dictionary_mode": "soft"})
    assert soft.status_code == 200, soft.text
    for text, result in zip(body["texts"], soft.json()["results"]):
        spans_ok(text, result["entities"])
    hard = lex_client.post("/v1/ner", json=body).json()["results"][0]["entities"]
    assert {"text": "马云", "label": "PER", "start": 0, "end": 2} in hard  # hard always wins
    # a stored dictionary may be used softly too
    assert lex_client.put("/v1/dictionaries/names", json={"entries": ["马云"]}).status_code in (200, 201)
    assert lex_client.post("/v1/ner", json={"text": "马云在杭州。", "dictionary": "names",
                                            "dictionary_mode": "soft"}).status_code == 200


def test_soft_dictionary_on_a_model_without_a_lexicon_is_a_422(lex_client):
    error = assert_error(lex_client.post("/v1/segment", json={"text": "马云在杭州。", "dictionary": ["马云"],
                                                              "dictionary_mode": "soft"}), 422)
    assert error["code"] == "soft_dictionary_unsupported" and "without lexicon features" in error["message"]
    assert_error(lex_client.post("/v1/segment", json={"text": "x", "dictionary_mode": "gentle"}), 422)


def test_analyze_tokens_never_cut_an_entity(client):
    texts = TEXTS + ["张伟明和李娜住在南京市。", "陈建国明天去西安。", "王小红在杭州见到了赵敏。"]
    result = client.post("/v1/analyze", json={"texts": texts}).json()
    found = 0
    for text, item in zip(texts, result["results"]):
        starts = {t["start"] for t in item["tokens"]}
        ends = {t["end"] for t in item["tokens"]}
        for entity in item["entities"]:
            found += 1
            assert entity["start"] in starts and entity["end"] in ends, (text, entity, item["tokens"])
            inside = [t for t in item["tokens"] if entity["start"] <= t["start"] < entity["end"]]
            assert len(inside) == 1, (text, entity, inside)
    assert found


def test_links_come_out_whole_over_http(client):
    text = "原文地址http://weibo.com/1675718025/xkexFsnzO，来信请寄zhang.san@163.com，19:45见，搜www.baidu.com/s?wd=1!"
    for route in ("/v1/segment", "/v1/pos"):
        tokens = client.post(route, json={"texts": [text]}).json()["results"][0]["tokens"]
        found = {text[t["start"]:t["end"]] for t in tokens}
        assert {"http://weibo.com/1675718025/xkexFsnzO", "zhang.san@163.com", "19:45", "www.baidu.com/s?wd=1"} <= found, (
            route, found)


def test_the_fast_path_steps_aside_for_a_route_with_its_own_dependency():
    calls = []

    async def rate_limit() -> None:
        calls.append(1)

    app = FastAPI()

    async def plain(body: TagRequest, service: ServiceDep):  # pragma: no cover - never called
        ...

    async def guarded(body: TagRequest, service: ServiceDep):  # pragma: no cover - never called
        ...

    app.post("/v1/plain", dependencies=[JSONBody])(plain)
    app.post("/v1/guarded", dependencies=[JSONBody, Depends(rate_limit)])(guarded)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    fast = TaggingFastPath(app, app, routes)
    assert set(fast.routes) == {"/v1/plain"}
    # the shipped tagging routes are plain: the fast path serves them
    assert set(TaggingFastPath(app, app, tagging.router.routes).routes) == {
        "/v1/segment", "/v1/pos", "/v1/ner", "/v1/analyze"}


def _directories(path: Path) -> dict[str, Path]:
    from seqtag.service.settings import Settings

    registry = ModelRegistry.__new__(ModelRegistry)
    registry.settings = Settings(models_dir=path)
    return registry._directories()


def test_models_may_be_a_checkpoint_a_run_or_a_directory_of_either(tmp_path, trained):
    run = tmp_path / "myrun"
    shutil.copytree(trained["seg"], run / "best")
    shutil.copytree(trained["seg2"], run / "last")
    assert _directories(run) == {"myrun": run / "best"}  # a run serves its best/ only
    assert _directories(run / "best") == {"myrun": run / "best"}  # the path the trainer prints
    shutil.copytree(trained["ner"], tmp_path / "zh-ner")
    assert _directories(tmp_path) == {"myrun": run / "best", "zh-ner": tmp_path / "zh-ner"}


@pytest.mark.parametrize("kwargs", [{"json": {"entries": []}},
                                    {"content": b"# only a comment\n\n", "headers": {"content-type": "text/plain"}}])
def test_an_upload_without_entries_is_refused(lex_client, kwargs):
    error = assert_error(lex_client.put("/v1/dictionaries/empty", **kwargs), 422)
    assert error["code"] == "empty_dictionary"
    assert "empty" not in lex_client.get("/v1/dictionaries").json()["dictionaries"]


def test_swagger_ui_is_served_without_a_cdn(lex_client):
    page = lex_client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower() and "/docs/static/swagger-ui-bundle.js" in page.text
    assert lex_client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert lex_client.get("/docs/static/swagger-ui.css").status_code == 200


def test_words_only_uses_a_tagged_dictionary_s_words(lex_client):
    """A jieba-style dictionary's tags are not the pos model's labels: 422, unless only the words are used."""
    body = {"text": "马云在杭州工作。", "dictionary": [{"text": "马云在", "label": "nr"}]}
    assert_error(lex_client.post("/v1/pos", json=body), 422)
    tokens = lex_client.post("/v1/pos", json=body | {"dictionary_words_only": True}).json()["results"][0]["tokens"]
    assert tokens[0]["text"] == "马云在"
    assert lex_client.put("/v1/dictionaries/tagged", json={"entries": body["dictionary"]}).status_code in (200, 201)
    stored = lex_client.post("/v1/pos", json={"text": body["text"], "dictionary": "tagged",
                                              "dictionary_words_only": True}).json()
    assert stored["results"][0]["tokens"][0]["text"] == "马云在"
