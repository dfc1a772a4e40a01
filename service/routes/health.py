"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from seqtag.service.deps import MetricsDep
from seqtag.service.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: 200 while the process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: 200 when at least one model is loaded and every batcher runs")
async def readyz(request: Request) -> JSONResponse:
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        reason = "the service is starting up"
    elif not registry.models:
        reason = "no models loaded"  # the directory and the loaders' errors are in the log, not here (no token)
        if registry.public_errors:
            reason += " (failed: " + "; ".join(f"{n}: {w}" for n, w in registry.public_errors.items()) + ")"
    elif not registry.ready:
        stopped = [m.name for m in registry.models if not m.batcher.running]
        reason = f"batchers not running: {', '.join(stopped)}"
    else:
        return JSONResponse({"status": "ready", "models": sorted(m.name for m in registry.models)})
    return JSONResponse(
        {"status": "not_ready", "reason": reason, "error": {"code": "not_ready", "message": reason}},
        status_code=503,
    )


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
async def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
