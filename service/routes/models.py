"""``GET /v1/models`` and the admin ``POST /v1/models/reload``."""

from __future__ import annotations

from fastapi import APIRouter

from seqtag.service.deps import Admin, RegistryDep
from seqtag.service.errors import error_response
from seqtag.service.responses import JSONResponse
from seqtag.service.schemas import ERROR_RESPONSES, ModelList, ReloadResult

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="Loaded models")
async def list_models(registry: RegistryDep) -> JSONResponse:
    """Every model being served: task, labels, tag scheme, dev metrics from its checkpoint, version
    (content hash), device and batching settings; and the model directories that failed to load, each with a
    short reason (the full one is in the server log and in the admin's reload answer)."""
    models = sorted(registry.models, key=lambda m: m.name)
    return JSONResponse({"models": [m.describe() for m in models], "failed": registry.public_errors})


@router.post(
    "/reload", response_model=ReloadResult, dependencies=[Admin], summary="Reload models from disk (admin)",
    responses={401: ERROR_RESPONSES[404] | {"description": "missing or wrong admin token"},
               409: {"model": ERROR_RESPONSES[404]["model"],
                     "description": "some model failed to load; its previous version keeps serving"}},
)
async def reload_models(registry: RegistryDep) -> JSONResponse:
    """Load every checkpoint directory again into new batchers and swap them in; requests in flight finish
    on the old ones. Unchanged checkpoints (same content hash) are kept as they are. If a model fails to
    load, its previous version (if any) keeps serving and the answer is 409 with the reasons."""
    report = await registry.reload()
    body = report.as_dict() | {"models": sorted(m.name for m in registry.models)}
    if not report.ok:
        reasons = "; ".join(f"{name}: {why}" for name, why in report.failed.items())
        return error_response(409, "reload_failed", f"reload failed for {len(report.failed)} model(s): {reasons}",
                              details=body)
    return JSONResponse(body)
