"""Stored dictionaries (admin): ``GET /v1/dictionaries`` and ``PUT/GET/DELETE /v1/dictionaries/{name}``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from seqtag.models.dictionary import DictionaryError, entries_to_json, parse_entry_lines, to_entries
from seqtag.service.deps import Admin, SettingsDep, StoreDep, is_json_content_type, is_text_content_type
from seqtag.service.dictionaries import DictionaryNotFound, valid_name
from seqtag.models.dictionary import clip
from seqtag.service.errors import ServiceError
from seqtag.service.jsonbody import parse_json_body
from seqtag.service.responses import JSONResponse
from seqtag.service.schemas import ERROR_RESPONSES, DictionaryBody, DictionaryNames, DictionaryOut

router = APIRouter(prefix="/v1/dictionaries", tags=["dictionaries"], dependencies=[Admin],
                   responses={401: {"model": ERROR_RESPONSES[404]["model"], "description": "admin token needed"}})


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise ServiceError(422, "invalid_name", f"invalid dictionary name {clip(name)}: names match "
                           "[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _not_found(name: str) -> ServiceError:
    return ServiceError(404, "dictionary_not_found", f"no stored dictionary named {clip(name)}")


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


def _json_body_schema() -> dict:
    """DictionaryBody's JSON schema for the OpenAPI document (its entry type is in the components already)."""
    schema = DictionaryBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


_TEXT_EXAMPLE = "华星公司 ORG\n# comments and blank lines are skipped\n阿里云 100 nz\nNew York\tLOC\n"


@router.put("/{name}", response_model=DictionaryOut, responses=ERROR_RESPONSES,
            summary="Create or replace a dictionary",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": _json_body_schema()},
                "text/plain": {"schema": {"type": "string"}, "example": _TEXT_EXAMPLE}}}})
async def put_dictionary(name: str, request: Request, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Saved as ``NAME.json`` in the dictionaries directory (atomically). 201 when new, 200 when replaced.
    Requests use it with ``"dictionary": "NAME"``.

    The body is JSON (``{"entries": ["word", {"text": ..., "label": ...}]}``) or, as ``text/plain`` in UTF-8, a
    dictionary file as ``seqtag predict --dictionary`` reads it: one entry per line, ``word``, ``word LABEL``
    or jieba's ``word FREQ TAG`` (tabs separate the fields on a line that has one), ``#`` comments."""
    _check_name(name)
    content_type = request.headers.get("content-type") or ""
    body = await request.body()
    if content_type and is_json_content_type(content_type):
        parsed = parse_json_body(body, DictionaryBody)  # as FastAPI reads a JSON body: 400, 422
        raw = [e if isinstance(e, str) else {"text": e.text, "label": e.label} for e in parsed.entries]
        try:
            entries = to_entries(raw)
        except DictionaryError as exc:
            raise ServiceError(422, "invalid_dictionary", f"dictionary {exc}") from None
    elif content_type and is_text_content_type(content_type):
        entries = _text_entries(body, settings.max_dictionary_entries)
    else:
        raise ServiceError(415, "unsupported_media_type", "send the entries as JSON ('Content-Type: application/"
                           "json') or as dictionary lines ('Content-Type: text/plain; charset=utf-8'), not "
                           f"{clip(content_type or 'no content type')}")
    if not entries:  # e.g. curl's --data-binary @FILE for a file that is not there: an empty body
        raise ServiceError(422, "empty_dictionary", "the upload has no entries (text/plain: every line is blank "
                           "or a comment); to remove a stored dictionary, DELETE it")
    if len(entries) > settings.max_dictionary_entries:
        raise ServiceError(413, "dictionary_too_large", f"{len(entries)} entries; the limit is "
                           f"{settings.max_dictionary_entries}")
    created = store.put(name, entries)
    return JSONResponse({"name": name, "entries": entries_to_json(entries)}, status_code=201 if created else 200)


def _text_entries(body: bytes, limit: int) -> list:
    """The entries of a text/plain dictionary body; 400 when it is not UTF-8, 422 naming the first bad line."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ServiceError(400, "invalid_text", f"the dictionary is not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start}); send it as UTF-8") from None
    try:
        return parse_entry_lines(text, limit)  # at most limit + 1 entries: the caller answers 413 past limit
    except DictionaryError as exc:
        raise ServiceError(422, "invalid_dictionary", f"dictionary {exc}") from None


@router.delete("/{name}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a dictionary")
def delete_dictionary(name: str, store: StoreDep) -> Response:
    _check_name(name)
    try:
        store.delete(name)
    except DictionaryNotFound:
        raise _not_found(name) from None
    return Response(status_code=204)
