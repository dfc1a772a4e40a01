"""``GET /``: the demo page (``service/static/index.html``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

router = APIRouter(include_in_schema=False)

INDEX = Path(__file__).resolve().parents[1] / "static" / "index.html"
PLACEHOLDER = "<!doctype html><title>seqtag</title><p>seqtag is running: see <a href=\"/docs\">/docs</a>.</p>\n"


@router.get("/")
async def index() -> Response:
    if INDEX.is_file():
        return FileResponse(INDEX, media_type="text/html; charset=utf-8")
    return HTMLResponse(PLACEHOLDER)
