"""The tagging routes' hot path: the same endpoint code, without the framework's per-request machinery.

Under load on a small machine, about half of the event loop's time per tagging request went to FastAPI
and Starlette themselves (exception and exit-stack middleware, routing, dependency solving), and the
inference thread waited on that thread for the GIL (see BENCHMARKS.md, "Service event loop").

:class:`TaggingFastPath` is a pure ASGI middleware, the innermost of seqtag's own (so request metrics,
CORS and the body limit still wrap it). It answers a ``POST`` to a tagging endpoint whose body is a JSON
object that validates as a :class:`~service.schemas.TagRequest` by calling the endpoint's own function,
exactly as the FastAPI route would. Anything else goes on to FastAPI unchanged, the body replayed: other
routes, other methods, and every tagging request with a wrong content type, malformed JSON or an invalid
field, so those errors (400, 415, 422) come from one place. The routes stay declared in FastAPI for
``/docs`` and ``/openapi.json``; tests check that both paths give the same answers.
"""

from __future__ import annotations

import json
from typing import Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import is_json_content_type, service_from_state
from service.errors import ServiceError
from service.schemas import TagRequest


class TaggingFastPath:
    """``routes``: the tagging routes (``POST``, endpoint ``(body: TagRequest, service: Service)``)."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.routes = {route.path: route for route in routes if "POST" in route.methods}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(_route_path(scope))
        if route is None or not _sized_json(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: request metrics label by route template
        try:
            body = await _read_body(receive)
            if body is None:  # the client went away while sending
                return
            request = _parse(body)
            if request is None:  # the framework answers with its own error (400 / 422)
                await self.app(scope, _replay(body, receive), send)
                return
            response = await route.endpoint(request, service_from_state(self.fastapi_app.state))
        except (ServiceError, HTTPException) as exc:  # answered by the app's own handlers, as on its routes
            handler = self.fastapi_app.exception_handlers[
                ServiceError if isinstance(exc, ServiceError) else HTTPException]
            response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _sized_json(scope: Scope) -> bool:
    """Declared as JSON, with a Content-Length. A body streamed without one (chunked) takes the framework's
    path: the body limit can then only be enforced while reading, and FastAPI turns that into a 413."""
    json_type = sized = False
    for key, value in scope["headers"]:
        if key == b"content-type":
            json_type = is_json_content_type(value.decode("latin-1"))
        elif key == b"content-length":
            sized = True
    return json_type and sized


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _parse(body: bytes) -> TagRequest | None:
    """The body as FastAPI would read it (``json.loads``, then the model), or None if it is not valid."""
    if not body:
        return None
    try:
        return TagRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
