"""Stored dictionaries (admin): ``GET /v1/dictionaries`` and ``PUT/GET/DELETE /v1/dictionaries/{name}``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from models.dictionary import DictionaryError
from service.deps import Admin, JSONBody, SettingsDep, StoreDep
from service.dictionaries import DictionaryNotFound, entries_to_json, to_entries, valid_name
from service.errors import ServiceError
from service.responses import JSONResponse
from service.schemas import ERROR_RESPONSES, DictionaryBody, DictionaryNames, DictionaryOut

router = APIRouter(prefix="/v1/dictionaries", tags=["dictionaries"], dependencies=[Admin],
                   responses={401: {"model": ERROR_RESPONSES[404]["model"], "description": "admin token needed"}})


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise ServiceError(422, "invalid_name", f"invalid dictionary name {name!r}: names match "
                           "[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _not_found(name: str) -> ServiceError:
    return ServiceError(404, "dictionary_not_found", f"no stored dictionary named {name!r}")


@router.get("", response_model=DictionaryNames, summary="Names of the stored dictionaries")
def list_dictionaries(store: StoreDep) -> JSONResponse:
    return JSONResponse({"dictionaries": store.names()})


@router.get("/{name}", response_model=DictionaryOut, responses=ERROR_RESPONSES, summary="Entries of a dictionary")
def get_dictionary(name: str, store: StoreDep) -> JSONResponse:
    _check_name(name)
    try:
        entries = store.entries(name)
    except DictionaryNotFound:
        raise _not_found(name) from None
    except DictionaryError as exc:
        raise ServiceError(422, "invalid_dictionary", str(exc)) from None
    return JSONResponse({"name": name, "entries": entries_to_json(entries)})


@router.put("/{name}", response_model=DictionaryOut, responses=ERROR_RESPONSES, dependencies=[JSONBody],
            summary="Create or replace a dictionary")
def put_dictionary(name: str, body: DictionaryBody, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Saved as ``NAME.json`` in the dictionaries directory (atomically). 201 when new, 200 when replaced.
    Requests use it with ``"dictionary": "NAME"``."""
    _check_name(name)
    if len(body.entries) > settings.max_dictionary_entries:
        raise ServiceError(413, "dictionary_too_large", f"{len(body.entries)} entries; the limit is "
                           f"{settings.max_dictionary_entries}")
    raw = [e if isinstance(e, str) else {"text": e.text, "label": e.label} for e in body.entries]
    try:
        entries = to_entries(raw)
    except DictionaryError as exc:
        raise ServiceError(422, "invalid_dictionary", f"dictionary {exc}") from None
    created = store.put(name, entries)
    return JSONResponse({"name": name, "entries": entries_to_json(entries)}, status_code=201 if created else 200)


@router.delete("/{name}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a dictionary")
def delete_dictionary(name: str, store: StoreDep) -> Response:
    _check_name(name)
    try:
        store.delete(name)
    except DictionaryNotFound:
        raise _not_found(name) from None
    return Response(status_code=204)
