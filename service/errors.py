"""Every error leaves the service as ``{"error": {"code": ..., "message": ...}}`` JSON.

Handlers raise :class:`ServiceError` (or a subclass) with an HTTP status, a
stable machine-readable ``code`` and a human ``message``. Validation errors,
Starlette's HTTP errors and genuine bugs (logged, 500) get the same body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqtag.service.responses import JSONResponse

log = logging.getLogger("seqtag.service")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "deadline_exceeded",
}


#: Longest error message sent at all (a last guard for texts quoted by code that does not clip them).
MAX_MESSAGE_CHARS = 1024


def cap_message(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "... (cut)"


class ServiceError(Exception):
    """An error with its HTTP answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": cap_message(message)}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, details: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


# Fields whose type is a union: pydantic reports one error per member; one hint reads better.
_FIELD_HINTS = {
    "dictionary": "must be a list of entries (a string, or an object {\"text\": ..., \"label\": ...}) "
    "or the name of a stored dictionary",
    "entries": "must be a list of entries: a string, or an object {\"text\": ..., \"label\": ...}",
}


def validation_message(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """``texts.0: Input should be a valid string; ...`` (the offending input is never echoed)."""
    parts: list[str] = []
    hinted: set[str] = set()
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:] or ["body"]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            where = f" at character {loc[0]}" if loc and loc[0] != "body" else ""
            parts.append(f"invalid JSON ({ctx.get('error', 'decode error')}){where}")
            continue
        if loc and loc[0] in _FIELD_HINTS and err.get("type") != "extra_forbidden":
            if loc[0] not in hinted:
                hinted.add(loc[0])
                parts.append(f"{loc[0]}: {_FIELD_HINTS[loc[0]]}")
            continue
        if loc == ["body"] and err.get("type") in ("model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object"
        parts.append(msg if loc == ["body"] else f"{'.'.join(loc)}: {msg}")
    more = len(parts) - limit
    text = "; ".join(parts[:limit])
    if more > 0:
        text += f"; and {more} more error(s)"
    return text or "invalid request"


EMPTY_BODY_MESSAGE = "the request body is empty; send a JSON object"


def is_empty_body(errors: list[dict[str, Any]]) -> bool:
    """FastAPI's answer to a missing body: one ``missing`` error at ``("body",)``."""
    return len(errors) == 1 and errors[0].get("type") == "missing" and tuple(errors[0].get("loc", ())) == ("body",)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if is_empty_body(errors):
        return error_response(400, "empty_body", EMPTY_BODY_MESSAGE)
    if errors and all(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", validation_message(errors))
    return error_response(422, "invalid_request", validation_message(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error while handling %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error (logged); please report it")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
