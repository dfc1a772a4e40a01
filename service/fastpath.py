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

It is also where a tagging request is first admitted (``service/admission.py``): from the body's declared
size, before the body is read or parsed, a request that cannot fit the admission budget is answered 503
with ``Retry-After`` at once; the ticket it gets is settled at the exact cost once the body is parsed, and
released when the answer is sent, whichever path answers. While the endpoint runs, the middleware listens
for the client going away: the handler is then cancelled, and its pieces are dropped from the model's queue
before they cost a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqtag.service.admission import Ticket, estimate_cost
from seqtag.service.deps import (TICKET_SCOPE_KEY, get_service, is_json_content_type, require_json,
                                 service_from_state)
from seqtag.service.errors import ServiceError
from seqtag.service.jsonbody import parse_json_body
from seqtag.service.schemas import TagRequest

#: Bodies larger than this are parsed in a worker thread, so the event loop goes on between its steps.
PARSE_OFF_LOOP_BYTES = 1 << 20


class TaggingFastPath:
    """``routes``: the tagging routes (``POST``, endpoint ``(body: TagRequest, service: Service)``)."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        # Only routes whose dependencies are the ones this path provides: a route given any other (auth, a
        # rate limit) is left to FastAPI, so that dependency always runs.
        self.routes = {route.path: route for route in routes if "POST" in route.methods and _plain(route)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(_route_path(scope))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: request metrics label by route template
        try:
            ticket = self._admit(scope)
        except ServiceError as exc:  # overloaded: answered before the body is read
            await self._error(scope, receive, send, exc)
            return
        scope[TICKET_SCOPE_KEY] = ticket
        try:
            if not _sized_json(scope):
                await self.app(scope, receive, send)
                return
            await self._fast(route, scope, receive, send, ticket)
        finally:
            if ticket is not None:
                ticket.release()

    def _admit(self, scope: Scope) -> Ticket | None:
        """A ticket for the cost the body's Content-Length suggests, or None: no length, or so large a body
        that it may be a large request (those are admitted once parsed, when their cost is known)."""
        length = _content_length(scope)
        if length is None:
            return None
        admission = self.fastapi_app.state.admission
        estimate = estimate_cost(length)
        if estimate > admission.large_above:
            return None
        return admission.admit(estimate, stage="body")

    async def _fast(self, route: APIRoute, scope: Scope, receive: Receive, send: Send, ticket: Ticket | None) -> None:
        try:
            body = await _read_body(receive)
            if body is None:  # the client went away while sending
                return
            request = await asyncio.to_thread(_parse, body) if len(body) > PARSE_OFF_LOOP_BYTES else _parse(body)
            if request is None:  # the framework answers with its own error (400 / 422)
                await self.app(scope, _replay(body, receive), send)
                return
            service = service_from_state(self.fastapi_app.state, ticket)
            response = await _unless_gone(route.endpoint(request, service), receive)
            if response is None:  # the client went away: nobody to answer
                return
        except (ServiceError, HTTPException) as exc:  # answered by the app's own handlers, as on its routes
            await self._error(scope, receive, send, exc)
            return
        await response(scope, receive, send)

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handler = self.fastapi_app.exception_handlers[ServiceError if isinstance(exc, ServiceError) else HTTPException]
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _unless_gone(endpoint: Any, receive: Receive) -> Any:
    """Await ``endpoint``; None if the client disconnects first (the endpoint is then cancelled, so its queued
    pieces are given up). The body has been read, so the next ASGI message can only say the client left."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def on_message(watch: asyncio.Future) -> None:
        nonlocal gone
        if not watch.cancelled() and watch.exception() is None and watch.result().get("type") == "http.disconnect":
            gone = True
            task.cancel()

    watch = asyncio.ensure_future(receive())
    watch.add_done_callback(on_message)
    try:
        return await endpoint
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        return None
    finally:
        watch.remove_done_callback(on_message)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch


def _plain(route: APIRoute) -> bool:
    """The route's dependencies are exactly the ones the fast path stands in for: the JSON content-type check
    (route level) and the :class:`Service` parameter."""
    calls = {dependency.call for dependency in route.dependant.dependencies}
    return calls <= {require_json, get_service} and len(route.dependant.body_params) == 1


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


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
    try:
        return parse_json_body(body, TagRequest)
    except (RequestValidationError, ServiceError):
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
