"""``create_app()``: the FastAPI app, its lifespan (load models, start batchers) and middleware."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqtag.models.runtime import pick_device, usable_cores
from seqtag.service.admission import Admission
from seqtag.service.dictionaries import DictionaryStore
from seqtag.service.errors import error_response, install_error_handlers
from seqtag.service.fastpath import TaggingFastPath
from seqtag.service.metrics import Metrics, RequestMetricsMiddleware
from seqtag.service.registry import ModelRegistry
from seqtag.service.responses import JSONResponse
from seqtag.service.routes import dictionaries, health, models, pages, tagging
from seqtag.service.settings import Settings

log = logging.getLogger("seqtag.service")

DESCRIPTION = """\
Chinese word segmentation, POS tagging and named entities with Bi-LSTM-CRF models.

Send `{"text": "..."}` or `{"texts": [...]}`; every answer has one result per text, in order, with
`start`/`end` offsets into the original text (code points, or UTF-16 code units with
`"offsets": "utf16"`). Errors are `{"error": {"code": ..., "message": ...}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    threads, switch = torch.get_num_threads(), sys.getswitchinterval()
    torch.set_num_threads(serving_threads(settings.torch_threads))
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    registry = None
    try:
        device = pick_device(settings.device)
        if settings.admin_token is None:
            log.warning("SEQTAG_ADMIN_TOKEN is not set: reload and dictionary endpoints are open to anyone")
        registry = ModelRegistry(settings, app.state.metrics, device)
        await registry.start()
        app.state.registry = registry
        yield
    finally:
        app.state.registry = None
        if registry is not None:
            await registry.stop()
        torch.set_num_threads(threads)
        sys.setswitchinterval(switch)


# seqtag exports its own Prometheus metrics (GET /metrics). FastAPI's OpenTelemetry hooks (FastAPI >= 0.16x)
# look up the tracer and meter providers on every request even when none is configured: ~6% of the event
# loop's time under load, so they are off (on FastAPI versions that have them).
_NO_TELEMETRY = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                 if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from local files (FastAPI's default page loads them from a CDN, so it stays blank
    on a machine without internet access)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="seqtag API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def serving_threads(setting: int, cores: int | None = None) -> int:
    """Torch threads for a serving process: the setting, or (0 = auto) one fewer than its usable cores.

    Inference threads that take every core fight the event loop (and, on a small machine, the clients)
    for CPU time; OpenMP's spinning threads make that worse than leaving one core to the rest."""
    if setting:
        return setting
    if cores is None:
        cores = usable_cores()
    return max(1, cores - 1)


#: oneDNN keeps a compiled primitive per input shape (default up to 1,024); a service sees endless batch
#: shapes, and that cache alone grew its memory by ~200 MiB over 400 random shapes (8 entries: ~40 MiB).
KERNEL_CACHE_ENTRIES = "8"


def limit_kernel_cache() -> None:
    """Cap oneDNN's primitive cache unless the environment already sets it. Read when the first primitive is
    built, so this must run before any inference in the process (it does: the app is built first)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_ENTRIES)


class BodyLimitMiddleware:
    """413 for bodies over ``max_body_bytes``: at once from Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is larger than {self.max_bytes} bytes"
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await error_response(413, "body_too_large", message)(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, limited, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; models load when its lifespan starts (uvicorn, or ``with TestClient(app)``)."""
    settings = settings or Settings()
    limit_kernel_cache()
    app = FastAPI(
        title="seqtag",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,  # served below from the swagger-ui-bundle package's files: /docs works offline
        redoc_url=None,
        **_NO_TELEMETRY,
    )
    _offline_docs(app)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.admission = Admission(settings.queue_budget_chars, settings.large_request_share,
                                    settings.max_large_requests, app.state.metrics, settings.retry_after_s)
    app.state.dictionaries = DictionaryStore(settings.dictionaries_path)
    app.state.registry = None
    install_error_handlers(app)
    for module in (tagging, models, dictionaries, health, pages):
        app.include_router(module.router)
    # added innermost first: metrics see every answer, CORS headers go on errors too
    app.add_middleware(TaggingFastPath, fastapi_app=app, routes=tagging.router.routes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("seqtag")
    except Exception:  # not installed (running from a checkout)
        return "0.0.0"
