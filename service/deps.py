"""Dependencies, as ``Annotated`` aliases the routes declare in their signatures.

They are ``async def``: none of them blocks, and FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per dependency per request that cost the event loop about a sixth of
its time under load.
"""

from __future__ import annotations

import email.message
import functools
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from seqtag.service.admission import Admission, Ticket
from seqtag.service.dictionaries import DictionaryStore
from seqtag.models.dictionary import clip
from seqtag.service.errors import ServiceError
from seqtag.service.metrics import Metrics
from seqtag.service.registry import ModelRegistry
from seqtag.service.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_store(request: Request) -> DictionaryStore:
    return request.app.state.dictionaries


def registry_of(state: Any) -> ModelRegistry:
    """The app's model registry; 503 while the service is starting up."""
    registry = getattr(state, "registry", None)
    if registry is None:
        raise ServiceError(503, "not_started", "the service is starting up; retry", headers={"Retry-After": "1"})
    return registry


async def get_registry(request: Request) -> ModelRegistry:
    return registry_of(request.app.state)


@dataclass(frozen=True)
class Service:
    """What the tagging routes use, resolved as one dependency: each dependency FastAPI resolves costs
    the event loop time on every request."""

    settings: Settings
    registry: ModelRegistry
    store: DictionaryStore
    metrics: Metrics
    admission: Admission
    ticket: Ticket | None = None  # reserved from the body's size before parsing (service.fastpath)

    def admit(self, cost: int) -> Ticket:
        """The request's ticket settled at its exact ``cost``; 503 with Retry-After when it does not fit."""
        if self.ticket is not None:
            self.ticket.settle(cost)
            return self.ticket
        return self.admission.admit(cost)


#: Where the tagging middleware leaves a request's ticket in the ASGI scope for the framework's path.
TICKET_SCOPE_KEY = "seqtag.ticket"


def service_from_state(state: Any, ticket: Ticket | None = None) -> Service:
    return Service(state.settings, registry_of(state), state.dictionaries, state.metrics, state.admission, ticket)


async def get_service(request: Request) -> Service:
    return service_from_state(request.app.state, request.scope.get(TICKET_SCOPE_KEY))


@functools.lru_cache(maxsize=64)
def _media_type(value: str) -> tuple[str, str]:
    """A Content-Type header's (type, subtype), lower case, parameters dropped (a few distinct values repeat)."""
    message = email.message.Message()
    message["content-type"] = value
    return message.get_content_maintype(), message.get_content_subtype()


def is_json_content_type(value: str) -> bool:
    """``application/json`` or ``application/*+json``, parameters allowed."""
    maintype, subtype = _media_type(value)
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def is_text_content_type(value: str) -> bool:
    """``text/plain``, parameters allowed."""
    return _media_type(value) == ("text", "plain")


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (``application/json`` or ``*+json``)."""
    value = request.headers.get("content-type")
    if value and is_json_content_type(value):
        return
    raise ServiceError(415, "unsupported_media_type",
                       f"send the body as JSON with 'Content-Type: application/json' (got {clip(value or 'none')})")


_bearer = HTTPBearer(auto_error=False, description="SEQTAG_ADMIN_TOKEN, when the service has one")


def _sent_bytes(value: str) -> bytes:
    """A header value as the bytes the client sent: ASGI servers decode header bytes as latin-1, so a
    token's UTF-8 bytes arrive as latin-1 characters (never anything above U+00FF from a real client)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _token_bytes(token: str) -> bytes:
    """The configured token's UTF-8 bytes (undecodable bytes from the environment come back as they were)."""
    try:
        return token.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return token.encode("utf-8", "surrogatepass")


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admin endpoints need ``Authorization: Bearer <SEQTAG_ADMIN_TOKEN>`` when a token is configured."""
    token = request.app.state.settings.admin_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else ""
    if not given or not hmac.compare_digest(_sent_bytes(given), _token_bytes(token.get_secret_value())):
        raise ServiceError(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <admin token>'",
                           headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[DictionaryStore, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ServiceDep = Annotated[Service, Depends(get_service)]
JSONBody = Depends(require_json)
Admin = Depends(require_admin)
