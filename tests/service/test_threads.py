"""Torch threads of a serving process: leave the event loop a core."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from seqtag.service.app import create_app, serving_threads


@pytest.mark.parametrize("setting, cores, expected", [(0, 1, 1), (0, 2, 1), (0, 16, 15), (3, 16, 3), (4, 2, 4)])
def test_serving_threads(setting, cores, expected):
    assert serving_threads(setting, cores) == expected


def threads_seen_by_a_new_thread() -> int:
    """torch's thread count as a fresh thread (like the batcher's executor) starts with it."""
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    return seen[0]


def test_auto_threads_are_applied_while_serving(make_settings):
    from fastapi.testclient import TestClient

    app = create_app(make_settings(torch_threads=0))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert threads_seen_by_a_new_thread() == serving_threads(0)


def test_app_caps_the_onednn_kernel_cache(monkeypatch, make_settings):
    from seqtag.service.app import KERNEL_CACHE_ENTRIES

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    create_app(make_settings())
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == KERNEL_CACHE_ENTRIES
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")  # an operator's own value is kept
    create_app(make_settings())
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"


def test_gil_switch_interval_is_set_while_serving_and_restored(make_settings):
    """The inference thread takes the GIL back soon after each torch call (SEQTAG_GIL_SWITCH_MS)."""
    import sys

    from fastapi.testclient import TestClient

    before = sys.getswitchinterval()
    with TestClient(create_app(make_settings(gil_switch_ms=0.5))) as client:
        assert client.get("/healthz").status_code == 200
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(before)


def test_fastapi_telemetry_hooks_are_off(make_settings):
    app = create_app(make_settings())
    telemetry = getattr(app, "_telemetry", None)  # FastAPI versions without the hooks have nothing to turn off
    if telemetry is not None:
        assert not (telemetry["tracing"] or telemetry["metrics"] or telemetry["logs"])
