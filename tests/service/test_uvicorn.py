"""A real ``seqtag serve`` process on loopback: ready, correct under concurrent requests, keep-alive connections
that outlast a client's idle expiry, and a clean stop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from bench.common import stop_process_group
from seqtag.service.settings import Settings
from tests.conftest import ROOT as REPO_ROOT

THREADS = 8
REQUESTS_PER_THREAD = 10
TEXTS = ["我们喜欢图书馆。", "张伟明在北京工作。", "李娜明天去上海。 他常常看电影！", "", "iPhone15很贵", "王小红和刘洋住在杭州。"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(models_dir: Path, tmp_path: Path, attempts: int = 3,
          extra: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``seqtag serve`` (``python -m seqtag.cli serve``) on a free loopback port; killed at the end if still up.

    The port is picked free and then handed to the server, so another process may take it in between: the
    server then exits at once with "address already in use", and we try again with another port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQTAG_")}
    env.update(SEQTAG_MODELS_DIR=str(models_dir), SEQTAG_DICTIONARIES_DIR=str(tmp_path / "dictionaries"),
               SEQTAG_TORCH_THREADS="1", SEQTAG_LOG_LEVEL="info", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = tmp_path / f"server-{attempt}.log"
        cmd = [sys.executable, "-m", "seqtag.cli", "serve", "--models", str(models_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra]
        with open(log_path, "wb") as log:
            # its own process group, so the cleanup below also reaches --workers' worker processes
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            if wait_ready(base, proc, timeout=90):
                yield base, proc, log_path
                return
            output = log_path.read_text(errors="replace")
            if "address already in use" not in output.lower() or attempt == attempts:
                pytest.fail(f"the server did not get ready (exit status {proc.poll()}):\n{output[-3000:]}")
        finally:
            stop_process_group(proc)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> bool:
    """True once /readyz answers 200; False if the process exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


# A client reuses an idle keep-alive connection for up to its expiry (httpx: 5 s) and a little more (the expiry is
# checked before the request is written). A server closing idle connections sooner (uvicorn's own default was
# 5 s) races the client: now and then a request is sent on a connection the server has just closed, and the
# client gets a transport error instead of an answer. A connection idle this long must still be served.
IDLE_S = httpx.Limits().keepalive_expiry + 0.5


def open_idle_connection(base: str) -> tuple[http.client.HTTPConnection, tuple[str, int]]:
    """A keep-alive connection (http.client: it never retires one itself) that has answered one request."""
    url = httpx.URL(base)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=30)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200 and not response.will_close
    return connection, connection.sock.getsockname()


def reuse_idle_connection(connection: http.client.HTTPConnection, local: tuple[str, int]) -> None:
    """The same connection (same local port, no reconnect) still answers a tagging request."""
    body = json.dumps({"text": TEXTS[0]}).encode()
    try:
        connection.request("POST", "/v1/segment", body=body, headers={"content-type": "application/json"})
        reused = connection.sock.getsockname() == local
        response = connection.getresponse()
        status = response.status
        response.read()
    except (http.client.HTTPException, OSError) as exc:
        pytest.fail(f"the server closed a keep-alive connection idle for {IDLE_S:g} s, which a client may still "
                    f"reuse (SEQTAG_KEEP_ALIVE_S must outlast client idle timeouts): {exc!r}")
    finally:
        connection.close()
    assert reused and status == 200


def test_keep_alive_outlasts_client_idle_expiry():
    """The server's default keep-alive outlasts httpx's idle expiry (the load benchmark's client) with room for
    a slow client, and the idle timeouts of common proxies and load balancers (60 s)."""
    keep_alive = Settings.model_fields["keep_alive_s"].default
    assert keep_alive > httpx.Limits().keepalive_expiry + 10
    assert keep_alive > 60


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_passes_keep_alive_to_uvicorn(monkeypatch, tmp_path, workers):
    import uvicorn

    from seqtag.service.main import run

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    for key in ("MODELS_DIR", "WORKERS"):  # run() exports its arguments for worker processes: restore them after
        monkeypatch.setenv(f"SEQTAG_{key}", "")
    monkeypatch.setenv("SEQTAG_KEEP_ALIVE_S", "12.5")
    assert run(models=str(tmp_path), device="cpu", workers=workers) == 0
    assert len(calls) == 1 and calls[0]["timeout_keep_alive"] == 12.5
    monkeypatch.delenv("SEQTAG_KEEP_ALIVE_S")
    assert run(models=str(tmp_path), device="cpu", workers=workers) == 0
    assert calls[1]["timeout_keep_alive"] == Settings.model_fields["keep_alive_s"].default


def counter(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_served_process_answers_concurrent_requests_like_sequential_ones(models_dir, tmp_path):
    # the calls: each thread's own mix of endpoints, single texts and lists of texts
    def call(i: int) -> tuple[str, dict[str, Any]]:
        endpoint = ("segment", "ner")[i % 2]
        body: dict[str, Any] = ({"texts": TEXTS[: 2 + i % 4]} if i % 3 == 0 else {"text": TEXTS[i % len(TEXTS)]})
        return endpoint, body

    calls = [call(i) for i in range(THREADS * REQUESTS_PER_THREAD)]

    with serve(models_dir, tmp_path) as (base, proc, log_path):
        # opened first and left idle while the requests below run; reused at the end
        idle, idle_local = open_idle_connection(base)
        idle_since = time.monotonic()
        with httpx.Client(base_url=base, timeout=30) as client:
            baseline = {}  # one sequential answer per distinct call
            for endpoint, body in calls:
                key = (endpoint, repr(body))
                if key not in baseline:
                    r = client.post(f"/v1/{endpoint}", json=body)
                    assert r.status_code == 200, r.text
                    baseline[key] = r.json()
            assert any(e for answer in baseline.values() for res in answer["results"] for e in res["entities"])

        def worker(t: int) -> list[tuple[tuple[str, str], int, Any]]:
            out = []
            with httpx.Client(base_url=base, timeout=30) as own:  # one connection per thread: 8 at most
                for endpoint, body in calls[t * REQUESTS_PER_THREAD:(t + 1) * REQUESTS_PER_THREAD]:
                    r = own.post(f"/v1/{endpoint}", json=body)
                    out.append(((endpoint, repr(body)), r.status_code, r.json() if r.status_code == 200 else r.text))
            return out

        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            answers = [a for chunk in pool.map(worker, range(THREADS)) for a in chunk]
        elapsed = time.monotonic() - t0
        assert len(answers) == THREADS * REQUESTS_PER_THREAD
        assert [status for _, status, _ in answers] == [200] * len(answers), [a for a in answers if a[1] != 200][:3]
        for key, _, body in answers:
            assert body == baseline[key], key

        metrics = httpx.get(base + "/metrics", timeout=10).text
        for endpoint in ("segment", "ner"):
            sent = sum(1 for e, _ in calls if e == endpoint) + sum(1 for e, _ in baseline if e == endpoint)
            assert counter(metrics, f'seqtag_requests_total{{endpoint="/v1/{endpoint}",status="200"}}') == sent

        time.sleep(max(0.0, idle_since + IDLE_S - time.monotonic()))
        reuse_idle_connection(idle, idle_local)

        # a clean stop on SIGTERM: the lifespan shuts down and the process ends; uvicorn (>= 0.29) raises
        # the signal again once it has shut down, so the status is -SIGTERM (0 from older versions)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = log_path.read_text(errors="replace")
        assert "Application shutdown complete" in log and "Finished server process" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        print(f"{len(answers)} concurrent requests in {elapsed:.2f} s")


def test_worker_processes_are_independent_replicas(models_dir, tmp_path):
    """--workers 2: two processes behind one port, each with its own models and batchers."""
    with serve(models_dir, tmp_path, extra=("--workers", "2")) as (base, proc, log_path):
        texts = ["我们在北京工作。", "张伟明喜欢音乐。"]
        with httpx.Client(base_url=base, timeout=30) as client:
            answers = [client.post("/v1/segment", json={"texts": texts}).json()["results"] for _ in range(12)]
        assert all(a == answers[0] for a in answers)
        # /readyz answers as soon as one worker is up; on a busy machine the other may still be loading
        deadline = time.monotonic() + 90
        while True:
            log = log_path.read_text(errors="replace")
            if log.lower().count("application startup complete") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert log.lower().count("application startup complete") == 2, log[-2000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_no_int8_reaches_the_settings(monkeypatch, tmp_path, workers):
    """`seqtag serve --no-int8`: one process gets Settings(int8=False); worker processes, which build their
    app from the environment, get SEQTAG_INT8=false."""
    import os

    import uvicorn

    import seqtag.service.main
    from seqtag.cli import build_parser, main

    assert build_parser().parse_args(["serve"]).int8 is None  # unset: SEQTAG_INT8 decides
    built = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setattr(seqtag.service.main, "create_app", lambda settings: built.append(settings))
    for key in ("MODELS_DIR", "WORKERS", "DEVICE", "INT8"):
        monkeypatch.setenv(f"SEQTAG_{key}", "")
    monkeypatch.delenv("SEQTAG_INT8")
    assert main(["serve", "--models", str(tmp_path), "--device", "cpu", "--workers", str(workers),
                 "--no-int8"]) == 0
    if workers == 1:
        assert [s.int8 for s in built] == [False]
    else:
        assert os.environ["SEQTAG_INT8"] == "false" and Settings().int8 is False
