"""Model listing and reloading, readiness, metrics, the demo page, OpenAPI, CORS, settings and run()."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from seqtag.service.app import create_app
from seqtag.service.main import run
from seqtag.service.settings import Settings
from tests.service.conftest import assert_error, async_client


def test_models_listing(client):
    body = client.get("/v1/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"zh-seg", "zh-pos", "zh-ner"} and body["failed"] == {}
    ner = models["zh-ner"]
    assert ner["task"] == "ner" and ner["labels"] == ["LOC", "PER"] and ner["scheme"] in ("bioes", "bio", "bmes")
    assert isinstance(ner["dev_metrics"]["f1"], float)
    assert ner["device"] == "cpu" and len(ner["version"]) == 12 and ner["saved_at"]
    assert ner["batching"] == {"max_batch_size": 64, "max_batch_units": 8192, "max_wait_ms": 0.0,
                               "wait_policy": "adaptive", "max_queue": 2048, "queue_depth": 0, "running": True}
    assert models["zh-seg"]["labels"] == [] and models["zh-pos"]["labels"]


def test_health_and_readiness(client, make_client, tmp_path):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["zh-ner", "zh-pos", "zh-seg"]

    empty = tmp_path / "empty"
    empty.mkdir()
    bare = make_client(models_dir=empty)
    assert bare.get("/healthz").status_code == 200
    error = assert_error(bare.get("/readyz"), 503)
    assert "no models" in error["message"] and bare.get("/readyz").json()["status"] == "not_ready"
    for endpoint in ("segment", "pos", "ner", "analyze"):
        assert_error(bare.post(f"/v1/{endpoint}", json={"text": "北京"}), 503)
    assert bare.get("/v1/models").json() == {"models": [], "failed": {}}

    missing = make_client(models_dir=tmp_path / "does-not-exist")
    assert_error(missing.get("/readyz"), 503)


def test_startup_skips_broken_checkpoints(make_client, own_models_dir):
    (own_models_dir / "zh-ner" / "model.safetensors").write_bytes(b"not weights")
    (own_models_dir / "notes").mkdir()  # not a checkpoint at all
    (own_models_dir / "bad name!").mkdir()
    client = make_client(models_dir=own_models_dir)
    body = client.get("/v1/models").json()
    assert sorted(m["name"] for m in body["models"]) == ["zh-pos", "zh-seg"]
    assert "zh-ner" in body["failed"] and "notes" in body["failed"]
    assert client.get("/readyz").status_code == 200
    assert_error(client.post("/v1/ner", json={"text": "北京"}), 503)


def test_metrics_exposition(client):
    client.post("/v1/segment", json={"texts": ["我们喜欢音乐。", "他看电影。", "北京"]})
    client.post("/v1/segment", json={"texts": []})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("seqtag_requests_total", "seqtag_request_duration_seconds_bucket", "seqtag_batch_size_bucket",
                 "seqtag_batch_padded_units_bucket", "seqtag_queue_depth", "seqtag_tokenize_seconds_bucket",
                 "seqtag_queue_wait_seconds_bucket", "seqtag_inference_seconds_bucket",
                 "seqtag_model_load_seconds", "seqtag_models_loaded"):
        assert name in text, name
    assert 'seqtag_requests_total{endpoint="/v1/segment",status="200"}' in text
    assert 'seqtag_requests_total{endpoint="/v1/segment",status="422"}' in text
    assert 'seqtag_queue_depth{model="zh-seg"} 0.0' in text
    # the three texts went through one batch
    size_sum = float(text.split('seqtag_batch_size_sum{model="zh-seg"} ')[1].split()[0])
    size_count = float(text.split('seqtag_batch_size_count{model="zh-seg"} ')[1].split()[0])
    assert size_sum / size_count > 1


def test_demo_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/segment", "/v1/pos", "/v1/ner", "/v1/analyze", "/v1/models", "/v1/models/reload",
                 "/v1/dictionaries", "/v1/dictionaries/{name}"):
        assert path in paths


def test_cors_only_when_configured(make_client):
    preflight = {"Origin": "http://example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    off = make_client()
    assert "access-control-allow-origin" not in off.get("/healthz", headers={"Origin": "http://example.com"}).headers
    on = make_client(cors_origins=["http://example.com"])
    assert on.options("/v1/segment", headers=preflight).headers["access-control-allow-origin"] == "http://example.com"
    assert on.get("/healthz", headers={"Origin": "http://example.com"}).headers["access-control-allow-origin"]


# ---- reload -------------------------------------------------------------------------


def _version(client, name):
    return {m["name"]: m["version"] for m in client.get("/v1/models").json()["models"]}.get(name)


def test_reload_swaps_changed_models(make_client, own_models_dir, trained):
    client = make_client(models_dir=own_models_dir)
    before = client.post("/v1/segment", json={"text": "我们喜欢图书馆。"}).json()
    old_ner = _version(client, "zh-ner")

    shutil.rmtree(own_models_dir / "zh-seg")
    shutil.copytree(trained["seg2"], own_models_dir / "zh-seg")
    shutil.copytree(trained["seg"], own_models_dir / "seg-extra")
    shutil.rmtree(own_models_dir / "zh-pos")
    response = client.post("/v1/models/reload")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["loaded"] == ["seg-extra", "zh-seg"] and report["unchanged"] == ["zh-ner"]
    assert report["removed"] == ["zh-pos"] and report["failed"] == {}
    assert report["models"] == ["seg-extra", "zh-ner", "zh-seg"]

    after = client.post("/v1/segment", json={"text": "我们喜欢图书馆。"}).json()
    assert after["version"] != before["version"] and after["model"] == "zh-seg"
    assert _version(client, "zh-ner") == old_ner
    assert client.post("/v1/segment", json={"text": "北京", "model": "seg-extra"}).status_code == 200
    assert_error(client.post("/v1/pos", json={"text": "北京"}), 503)
    assert_error(client.post("/v1/pos", json={"text": "北京", "model": "zh-pos"}), 404)
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("damage", ["weights", "config", "missing"])
def test_failed_reload_keeps_the_old_model_serving(make_client, own_models_dir, damage):
    client = make_client(models_dir=own_models_dir)
    before = client.post("/v1/segment", json={"text": "我们喜欢图书馆。"}).json()
    directory = own_models_dir / "zh-seg"
    if damage == "weights":
        (directory / "model.safetensors").write_bytes(b"\x00garbage")
    elif damage == "config":
        (directory / "config.json").write_text("{not json", encoding="utf-8")
    else:
        (directory / "tokenizer.json").unlink()
    error = assert_error(client.post("/v1/models/reload"), 409)
    assert "zh-seg" in error["message"] and "zh-seg" in error["details"]["failed"]
    assert error["details"]["models"] == ["zh-ner", "zh-pos", "zh-seg"]
    after = client.post("/v1/segment", json={"text": "我们喜欢图书馆。"})
    assert after.status_code == 200 and after.json() == before  # the previous version keeps serving
    assert client.get("/readyz").status_code == 200
    assert "zh-seg" in client.get("/v1/models").json()["failed"]


def test_reload_while_requests_are_in_flight(make_settings, own_models_dir, trained):
    app = create_app(make_settings(models_dir=own_models_dir, max_wait_ms=0))

    async def main():
        async with async_client(app) as http:
            old = app.state.registry.get("zh-seg")
            slow_predict = old.pipeline.tag_encoded

            def slow(*args, **kwargs):
                time.sleep(0.3)
                return slow_predict(*args, **kwargs)

            old.pipeline.tag_encoded = slow
            shutil.rmtree(own_models_dir / "zh-seg")
            shutil.copytree(trained["seg2"], own_models_dir / "zh-seg")
            requests = [asyncio.create_task(http.post("/v1/segment", json={"texts": ["我们喜欢音乐。"] * 3}))
                        for _ in range(4)]
            await asyncio.sleep(0.05)  # they are queued or running on the old batcher
            reload = await http.post("/v1/models/reload")
            answers = await asyncio.gather(*requests)
            new = await http.post("/v1/segment", json={"text": "我们"})
            await asyncio.sleep(0)
            return old, reload, answers, new

    old, reload, answers, new = asyncio.run(main())
    assert reload.status_code == 200, reload.text
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert {a.json()["version"] for a in answers} == {old.version}
    assert new.json()["version"] != old.version
    assert not old.batcher.running


# ---- settings and run() --------------------------------------------------------------


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQTAG_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("SEQTAG_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SEQTAG_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("SEQTAG_ADMIN_TOKEN", "zq-secret-77")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    s = Settings()
    # stored dictionaries live in the user's data directory, never inside the repository or the package
    assert s.models_dir == tmp_path / "m" and s.dictionaries_dir == tmp_path / "data" / "seqtag" / "dictionaries"
    assert s.max_batch_size == 8 and s.cors_origins == ["http://a.example", "http://b.example"]
    assert s.admin_token is not None and "zq-secret-77" not in repr(s)
    monkeypatch.setenv("SEQTAG_CORS_ORIGINS", '["http://c.example"]')
    monkeypatch.setenv("SEQTAG_DICTIONARIES_DIR", str(tmp_path / "d"))
    s = Settings()
    assert s.cors_origins == ["http://c.example"] and s.dictionaries_dir == tmp_path / "d"
    monkeypatch.setenv("SEQTAG_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValueError):
        Settings()


def test_settings_defaults():
    s = Settings()
    assert s.models_dir.name == "checkpoints" and s.models_dir.parent.joinpath("service").is_dir()
    assert (s.host, s.port, s.device) == ("127.0.0.1", 8000, "auto")
    assert (s.max_batch_size, s.max_batch_units, s.max_wait_ms, s.max_queue) == (64, 8192, 0.0, 2048)
    assert (s.request_timeout_s, s.window_units) == (30.0, 256)
    assert (s.max_text_chars, s.max_texts, s.max_total_chars) == (1_000_000, 10_000, 2_000_000)
    assert s.admin_token is None and s.cors_origins == [] and s.torch_threads == 0


def test_run_rejects_bad_settings_without_starting(capsys, monkeypatch):
    assert run(port=70000) == 2
    assert "port" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert run(device="cuda") == 2
    assert "CUDA" in capsys.readouterr().err


def test_uvicorn_app_attribute(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQTAG_MODELS_DIR", str(tmp_path))
    import seqtag.service.main as main

    monkeypatch.delitem(main.__dict__, "app", raising=False)
    app = main.app
    assert app.state.settings.models_dir == tmp_path
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200


def test_loaded_models_are_frozen_out_of_the_collector(make_client, own_models_dir, trained):
    """SEQTAG_GC_FREEZE (default on; off elsewhere in the tests for speed): after loading, the models' objects
    are out of the cyclic collector's walks; an unloaded model is still freed."""
    import gc
    import weakref

    def walked(obj) -> bool:
        return any(o is obj for o in gc.get_objects())

    try:
        client = make_client(models_dir=own_models_dir, gc_freeze=True)
        registry = client.app.state.registry
        old = registry.get("zh-seg")
        assert gc.get_freeze_count() > 0 and not walked(old.pipeline)
        gone = weakref.ref(old.pipeline)
        del old

        shutil.rmtree(own_models_dir / "zh-seg")
        shutil.copytree(trained["seg2"], own_models_dir / "zh-seg")
        assert client.post("/v1/models/reload").json()["loaded"] == ["zh-seg"]
        assert not walked(registry.get("zh-seg").pipeline)  # the new one is frozen too
        for _ in range(100):  # the old one retires once idle, in the background
            if gone() is None:
                break
            time.sleep(0.05)
        assert gone() is None
        assert client.post("/v1/segment", json={"text": "北京"}).status_code == 200
    finally:
        gc.unfreeze()
