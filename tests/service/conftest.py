"""Service fixtures: tiny seg/pos/ner models trained once per session, apps and clients on them."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from seqtag.service.app import create_app
from seqtag.service.settings import Settings
from tests.fixtures import train_tiny

TEXTS = ["我们喜欢图书馆。", "张伟明在北京工作。", "", "   ", "他常常看电影！", "iPhone15很贵", "李娜明天去上海。"]


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    """SEQTAG_* variables of the machine running the tests must not change what the tests see."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SEQTAG_")}
    for key in saved:
        del os.environ[key]
    # gc.freeze after every model load costs a full collection of the test process (~0.1 s per app start);
    # tests/service/test_models_health.py checks it with the setting on
    os.environ["SEQTAG_GC_FREEZE"] = "false"
    yield
    del os.environ["SEQTAG_GC_FREEZE"]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """``best/`` checkpoints of tiny runs: seg, pos, ner, and a second, different seg model (seg2)."""
    threads = torch.get_num_threads()
    try:
        runs = {
            "seg": train_tiny(tmp_path_factory.mktemp("seg"), "seg", epochs=2),
            "pos": train_tiny(tmp_path_factory.mktemp("pos"), "pos", epochs=2),
            "ner": train_tiny(tmp_path_factory.mktemp("ner"), "ner", epochs=4),
            "seg2": train_tiny(tmp_path_factory.mktemp("seg2"), "seg", epochs=1, extra_flags=["--lr", "0.05"]),
        }
    finally:
        torch.set_num_threads(threads)
    return {task: run / "best" for task, run in runs.items()}


def fill_models_dir(directory: Path, trained: dict[str, Path], tasks=("seg", "pos", "ner")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        shutil.copytree(trained[task], directory / f"zh-{task}")
    return directory


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, trained) -> Path:
    """A shared, read-only models directory: zh-seg, zh-pos, zh-ner."""
    return fill_models_dir(tmp_path_factory.mktemp("models"), trained)


@pytest.fixture
def own_models_dir(tmp_path, trained) -> Path:
    """A models directory of this test's own, to change on disk."""
    return fill_models_dir(tmp_path / "models", trained)


@pytest.fixture
def make_settings(tmp_path, models_dir):
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "models_dir": models_dir,
            "dictionaries_dir": tmp_path / "dictionaries",
            "torch_threads": 1,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings):
    """``make_client(**settings)`` -> a started TestClient (lifespan run); closed after the test."""
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            app = create_app(make_settings(**overrides))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture(scope="module")
def client(tmp_path_factory, models_dir) -> Iterator[TestClient]:
    """One started app per test module on the shared models (default settings, torch threads 1)."""
    settings = Settings(models_dir=models_dir, dictionaries_dir=tmp_path_factory.mktemp("dicts"), torch_threads=1)
    with TestClient(create_app(settings)) as c:
        yield c


@contextlib.asynccontextmanager
async def async_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Lifespan + an httpx client on the app's event loop, for concurrent requests."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://seqtag.test") as c:
            yield c


def assert_error(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The answer is the given 4xx/5xx status with a JSON ``{"error": {"code", "message"}}`` body."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()
    return body["error"]


def spans_ok(text: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        assert text[item["start"]:item["end"]] == item["text"], (text, item)
