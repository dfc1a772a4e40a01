"""``POST /v1/segment``, ``/v1/pos``, ``/v1/ner`` and ``/v1/analyze``."""

from __future__ import annotations

import contextlib
import time

from fastapi import APIRouter

from seqtag.models.spans import Span
from seqtag.service.deps import JSONBody, Service, ServiceDep
from seqtag.models.dictionary import clip
from seqtag.service.errors import ServiceError
from seqtag.service.registry import LoadedModel, ModelRegistry, valid_name
from seqtag.service.responses import JSONResponse
from seqtag.service.schemas import ERROR_RESPONSES, TagRequest, TagResponse
from seqtag.service.tagging import (DictionarySpec, Job, answer, compile_dictionary, dictionary_spec, entity_dicts,
                             request_cost, request_texts, run_jobs, split_dictionary, token_dicts)

router = APIRouter(prefix="/v1", tags=["tagging"])

# endpoint -> model tasks it can use, in order of preference
_TASKS = {"segment": ("seg", "pos"), "pos": ("pos",), "ner": ("ner",)}


def _named_model(registry: ModelRegistry, name: str) -> LoadedModel:
    if not valid_name(name):
        raise ServiceError(422, "invalid_name", f"invalid model name {clip(name)}")
    model = registry.get(name)
    if model is None:
        names = ", ".join(sorted(m.name for m in registry.models)) or "none"
        raise ServiceError(404, "model_not_found", f"no model named {name!r} (loaded: {names})")
    return model


def pick_model(registry: ModelRegistry, endpoint: str, name: str | None) -> LoadedModel:
    tasks = _TASKS[endpoint]
    if name is not None:
        model = _named_model(registry, name)
        if model.task not in tasks:
            raise ServiceError(400, "wrong_task", f"model {name!r} is a {model.task} model; /v1/{endpoint} "
                               f"needs a {' or '.join(tasks)} model")
        return model
    for task in tasks:
        model = registry.default_for(task)
        if model is not None:
            return model
    raise ServiceError(503, "no_model", f"no {' or '.join(tasks)} model is loaded, so /v1/{endpoint} "
                       "cannot answer; see GET /v1/models")


async def _tag(endpoint: str, body: TagRequest, service: ServiceDep) -> JSONResponse:
    settings, registry, store, metrics = service.settings, service.registry, service.store, service.metrics
    deadline = time.monotonic() + settings.request_timeout_s
    texts = request_texts(body, settings)
    with service.admit(request_cost(texts, body.dictionary)) as ticket:
        spec = await dictionary_spec(body.dictionary, settings, store, body.dictionary_mode,
                                      body.dictionary_words_only)
        model = pick_model(registry, endpoint, body.model)
        with model.lease():  # taken right after the lookup: a reload waits for it
            dictionary = await compile_dictionary(spec, model, store)
            [spans] = await run_jobs([Job(model, texts, dictionary)], settings=settings, metrics=metrics,
                                     scores=body.scores, deadline=deadline, low_priority=ticket.low_priority)
        utf16 = body.offsets == "utf16"

        def build() -> dict:
            if endpoint == "ner":
                results = [{"tokens": [], "entities": entity_dicts(t, s, utf16=utf16)} for t, s in zip(texts, spans)]
            else:
                with_pos = endpoint == "pos"
                results = [{"tokens": token_dicts(t, s, with_pos=with_pos, utf16=utf16), "entities": []}
                           for t, s in zip(texts, spans)]
            return {"model": model.name, "version": model.version, "results": results}

        return await answer(texts, build)


_DOC = dict(response_model=TagResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES,
            dependencies=[JSONBody])


@router.post("/segment", summary="Word segmentation", **_DOC)
async def segment(body: TagRequest, service: ServiceDep) -> JSONResponse:
    """Words of each text. Uses a seg model, or a pos model (tags dropped) when no seg model is loaded."""
    return await _tag("segment", body, service)


@router.post("/pos", summary="Joint segmentation and POS tagging", **_DOC)
async def pos(body: TagRequest, service: ServiceDep) -> JSONResponse:
    """Words with their POS tag (``pos``). Dictionary entries may carry a tag to force it."""
    return await _tag("pos", body, service)


@router.post("/ner", summary="Named entities", **_DOC)
async def ner(body: TagRequest, service: ServiceDep) -> JSONResponse:
    """Entities with their type. Dictionary entries may carry a type (``label``) to force it."""
    return await _tag("ner", body, service)


@router.post("/analyze", summary="Everything the loaded models can do", **_DOC)
async def analyze(body: TagRequest, service: ServiceDep) -> JSONResponse:
    """Tokens (from the default pos model, with tags, else the default seg model) and entities (from the
    default ner model) together. ``model`` may list models to use instead, comma-separated. The response's
    ``model`` and ``version`` are maps from task to model name / version. Dictionary entries without a
    label and with a POS label go to the token model, entries with an entity label to the ner model.
    """
    settings, store = service.settings, service.store
    deadline = time.monotonic() + settings.request_timeout_s
    texts = request_texts(body, settings)
    with service.admit(request_cost(texts, body.dictionary)) as ticket:
        spec = await dictionary_spec(body.dictionary, settings, store, body.dictionary_mode,
                                      body.dictionary_words_only)
        return await _analyze(texts, body, spec, service, deadline, ticket.low_priority)


async def _analyze(texts: list[str], body: TagRequest, spec: DictionarySpec | None, service: Service,
                   deadline: float, low_priority: bool) -> JSONResponse:
    settings, registry, store, metrics = service.settings, service.registry, service.store, service.metrics
    token_model = registry.default_for("pos") or registry.default_for("seg")
    ner_model = registry.default_for("ner")
    if body.model is not None:
        chosen: dict[str, LoadedModel] = {}
        for name in (n.strip() for n in body.model.split(",")):
            model = _named_model(registry, name)
            kind = "ner" if model.task == "ner" else "tokens"
            if kind in chosen:
                raise ServiceError(422, "invalid_request", f"models {chosen[kind].name!r} and {name!r} both "
                                   f"give {kind}; name at most one of each")
            chosen[kind] = model
        token_model = chosen.get("tokens", token_model)
        ner_model = chosen.get("ner", ner_model)
    if token_model is None and ner_model is None:
        raise ServiceError(503, "no_model", "no model is loaded; see GET /v1/models")
    models = [m for m in (token_model, ner_model) if m is not None]
    with contextlib.ExitStack() as leases:
        for model in models:
            leases.enter_context(model.lease())
        token_spec, ner_spec = await split_dictionary(spec, token_model, ner_model, store)
        by_model: dict[str, list] = {}
        entities = None
        if ner_model is not None:  # entities first: the tokens are then cut around them, never through one
            ner_job = Job(ner_model, texts, await compile_dictionary(ner_spec, ner_model, store))
            [by_model[ner_model.name]] = await run_jobs([ner_job], settings=settings, metrics=metrics,
                                                        scores=body.scores, deadline=deadline,
                                                        low_priority=low_priority)
            entities = [[Span(a, z) for a, z, _, _ in table.records()] for table in by_model[ner_model.name]]
        if token_model is not None:
            token_job = Job(token_model, texts, await compile_dictionary(token_spec, token_model, store), entities)
            [by_model[token_model.name]] = await run_jobs([token_job], settings=settings, metrics=metrics,
                                                          scores=body.scores, deadline=deadline,
                                                          low_priority=low_priority)
    utf16 = body.offsets == "utf16"

    def build() -> dict:
        results = []
        for i, text in enumerate(texts):
            tokens = (token_dicts(text, by_model[token_model.name][i], with_pos=token_model.task == "pos",
                                  utf16=utf16) if token_model is not None else [])
            entities = (entity_dicts(text, by_model[ner_model.name][i], utf16=utf16) if ner_model is not None
                        else [])
            results.append({"tokens": tokens, "entities": entities})
        return {"model": {m.task: m.name for m in models}, "version": {m.task: m.version for m in models},
                "results": results}

    return await answer(texts, build)
