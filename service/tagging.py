"""What a tagging request does between validation and the response body.

decode -> split into pieces -> encode (timed) -> dictionary matches per piece ->
submit every piece of every text to the model's batcher -> await -> shift spans
back by their piece's start -> response dicts (code point or UTF-16 offsets).
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from seqtag.models import engine
from seqtag.models.dictionary import Dictionary, DictionaryError, Entry, to_entries, without_labels
from seqtag.models.lexicon import Lexicon
from seqtag.models.spans import Span, SpanTable
from seqtag.service.batcher import BatcherError, BatcherStopped, BatchFailed, DeadlineExceeded, Overloaded
from seqtag.service.dictionaries import DictionaryNotFound, DictionaryStore, valid_name
from seqtag.models.dictionary import clip
from seqtag.service.errors import ServiceError
from seqtag.service.metrics import Metrics
from seqtag.service.registry import LoadedModel
from seqtag.service.responses import JSONResponse
from seqtag.service.schemas import DictionaryEntry, TagRequest
from seqtag.service.settings import Settings

# Above this many characters, splitting, dictionary matching, joining spans and building the answer run in
# a worker thread, not on the event loop (a 1M-character text's answer took the loop ~1 s to build).
_OFFLOAD_CHARS = 20_000
# Above this many inline entries, a dictionary is checked and compiled in the dictionary thread: 200k entries
# took the event loop 0.3 s, and /healthz with it.
_OFFLOAD_ENTRIES = 2_000
#: Inline dictionary entries that cost one character of the admission budget: compiling 200k entries took
#: ~0.27 s on 2 cores, the time zh-seg takes to tag ~17k characters (one per ~12 entries, rounded to 8).
DICTIONARY_ENTRIES_PER_CHAR = 8


def request_cost(texts: Sequence[str], dictionary: object) -> int:
    """Characters of work a request asks for: its texts, and its inline dictionary's entries (at their rate)."""
    cost = sum(map(len, texts))
    if isinstance(dictionary, list):
        cost += len(dictionary) // DICTIONARY_ENTRIES_PER_CHAR
    return cost


_dictionary_thread: ThreadPoolExecutor | None = None


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the process's one dictionary thread (bounded: concurrent compiles queue there instead
    of each taking a thread, and the event loop keeps answering meanwhile)."""
    global _dictionary_thread
    if _dictionary_thread is None:
        _dictionary_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqtag-dictionary")
    return await asyncio.get_running_loop().run_in_executor(_dictionary_thread, functools.partial(fn, *args))


# ---- limits -------------------------------------------------------------------


def check_limits(texts: Sequence[str], settings: Settings) -> None:
    """413 for requests over the configured size limits."""
    if len(texts) > settings.max_texts:
        raise ServiceError(413, "too_many_texts",
                           f"{len(texts)} texts in one request; the limit is {settings.max_texts}")
    total = 0
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise ServiceError(413, "text_too_long", f"text {i} has {len(text)} characters; "
                               f"the limit is {settings.max_text_chars} per text")
        total += len(text)
    if total > settings.max_total_chars:
        raise ServiceError(413, "request_too_large", f"the texts have {total} characters together; "
                           f"the limit is {settings.max_total_chars} per request")


# ---- dictionaries -------------------------------------------------------------


@dataclass
class DictionarySpec:
    """A request's dictionary: inline entries, or the name of a stored one."""

    entries: list[Entry] | None = None
    stored: str | None = None
    mode: str = "hard"  # "soft": the words join the model's lexicon for this request instead of being forced
    words_only: bool = False  # the entries' words without their labels

    @classmethod
    def from_request(cls, value: list[str | DictionaryEntry] | str | None, settings: Settings,
                     store: DictionaryStore, mode: str = "hard", words_only: bool = False
                     ) -> "DictionarySpec | None":
        if value is None:
            return None
        if isinstance(value, str):
            if not valid_name(value):
                raise ServiceError(422, "invalid_name", f"invalid dictionary name {clip(value)}: names match "
                                   "[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
            if value not in store.names():
                raise ServiceError(404, "dictionary_not_found", f"no stored dictionary named {clip(value)}")
            return cls(stored=value, mode=mode, words_only=words_only)
        if len(value) > settings.max_dictionary_entries:
            raise ServiceError(413, "dictionary_too_large", f"{len(value)} dictionary entries; the limit is "
                               f"{settings.max_dictionary_entries}")
        raw = [v if isinstance(v, str) else {"text": v.text, "label": v.label} for v in value]
        try:
            return cls(entries=to_entries(raw), mode=mode, words_only=words_only)
        except DictionaryError as exc:
            raise ServiceError(422, "invalid_dictionary", f"dictionary {exc}") from None

    def _all_entries(self, store: DictionaryStore) -> list[Entry]:
        if self.entries is not None:
            return without_labels(self.entries) if self.words_only else self.entries
        assert self.stored is not None
        try:
            entries = store.entries(self.stored)
            return without_labels(entries) if self.words_only else entries
        except DictionaryNotFound:
            raise ServiceError(404, "dictionary_not_found", f"no stored dictionary named {self.stored!r}") from None
        except DictionaryError as exc:
            raise ServiceError(422, "invalid_dictionary", str(exc)) from None

    def compile(self, model: LoadedModel, store: DictionaryStore) -> Dictionary | Lexicon | None:
        """The matcher for ``model`` (hard), or its lexicon overlay (soft); 422 when an entry's label is not one
        of the model's labels (hard), or the model reads no lexicon (soft)."""
        codec = model.pipeline.codec
        if self.mode == "soft":
            try:
                soft = model.pipeline.soft_lexicon(self._all_entries(store))
            except DictionaryError as exc:
                raise ServiceError(422, "soft_dictionary_unsupported", f"model {model.name!r}: {exc}") from None
            return soft if soft.words else None
        if self.stored is not None:
            self._all_entries(store)  # 404 / 422 with a clear message
            try:
                # same name and content hash = same codec, so the same normalisation
                dictionary = store.compiled(self.stored, codec.normalize, key=(model.name, model.version),
                                            normalize_many=codec.normalize_all)
                if self.words_only and dictionary.labels:
                    dictionary = model.pipeline.dictionary(without_labels(dictionary.entries()))
            except DictionaryNotFound:
                raise ServiceError(404, "dictionary_not_found",
                                   f"no stored dictionary named {self.stored!r}") from None
        else:
            dictionary = Dictionary(self._all_entries(store), normalize=codec.normalize,
                                    normalize_many=codec.normalize_all)
        try:
            dictionary = model.pipeline.check_labels(dictionary)
        except DictionaryError as exc:
            raise ServiceError(422, "unknown_label", f"model {model.name!r}: {exc}") from None
        return dictionary if len(dictionary) else None

    def split_for_analyze(self, token_model: LoadedModel | None, ner_model: LoadedModel | None,
                          store: DictionaryStore) -> tuple["DictionarySpec | None", "DictionarySpec | None"]:
        """/v1/analyze: plain words and POS-labelled entries go to the token model,
        entity-labelled entries to the NER model; a label neither model has is a 422."""
        token_labels = set(token_model.labels) if token_model is not None else set()
        ner_labels = set(ner_model.labels) if ner_model is not None else set()
        token_entries: list[Entry] = []
        ner_entries: list[Entry] = []
        for entry in self._all_entries(store):
            label = "" if isinstance(entry, str) else entry[1]
            if not label:
                token_entries.append(entry)
                continue
            if label not in token_labels and label not in ner_labels:
                raise ServiceError(422, "unknown_label", f"dictionary label {clip(label)} is not a label of any "
                                   "model /v1/analyze uses")
            if label in token_labels:
                token_entries.append(entry)
            if label in ner_labels:
                ner_entries.append(entry)
        return (DictionarySpec(entries=token_entries, mode=self.mode) if token_entries else None,
                DictionarySpec(entries=ner_entries, mode=self.mode) if ner_entries else None)


async def dictionary_spec(value: list[str | DictionaryEntry] | str | None, settings: Settings,
                          store: DictionaryStore, mode: str = "hard", words_only: bool = False
                          ) -> DictionarySpec | None:
    """:meth:`DictionarySpec.from_request`, off the event loop for a large inline dictionary."""
    if isinstance(value, list) and len(value) > _OFFLOAD_ENTRIES:
        return await off_loop(DictionarySpec.from_request, value, settings, store, mode, words_only)
    return DictionarySpec.from_request(value, settings, store, mode, words_only)


def _heavy(spec: DictionarySpec) -> bool:
    """Stored dictionaries may need reading and compiling (cached after); large inline ones always do."""
    return spec.stored is not None or len(spec.entries or ()) > _OFFLOAD_ENTRIES


async def compile_dictionary(spec: DictionarySpec | None, model: LoadedModel,
                             store: DictionaryStore) -> Dictionary | Lexicon | None:
    """:meth:`DictionarySpec.compile`, off the event loop unless the dictionary is small and inline."""
    if spec is None:
        return None
    if _heavy(spec):
        return await off_loop(spec.compile, model, store)
    return spec.compile(model, store)


async def split_dictionary(spec: DictionarySpec | None, token_model: LoadedModel | None,
                           ner_model: LoadedModel | None, store: DictionaryStore
                           ) -> tuple[DictionarySpec | None, DictionarySpec | None]:
    """:meth:`DictionarySpec.split_for_analyze`, off the event loop unless the dictionary is small and inline."""
    if spec is None:
        return None, None
    if _heavy(spec):
        return await off_loop(spec.split_for_analyze, token_model, ner_model, store)
    return spec.split_for_analyze(token_model, ner_model, store)


async def answer(texts: Sequence[str], build: Callable[[], dict[str, Any]]) -> JSONResponse:
    """The response of ``build()``; built and encoded in a worker thread for large requests."""
    if sum(map(len, texts)) > _OFFLOAD_CHARS:
        return await asyncio.to_thread(lambda: JSONResponse(build()))
    return JSONResponse(build())


# ---- tagging through the batcher ----------------------------------------------------


class Job:
    """One model over all texts of a request: the engine's pieces (:func:`models.engine.prepare`), submitted to
    the model's batcher, whose worker runs them (:func:`models.engine.run`), and assembled back onto the texts.
    ``dictionary``: forced words (a Dictionary) or a soft lexicon overlay; ``forced``: spans per text that must
    come out whole (/v1/analyze: the entities found, so that tokens never cut one)."""

    def __init__(self, model: LoadedModel, texts: Sequence[str], dictionary: Dictionary | Lexicon | None,
                 forced: Sequence[Sequence[Span]] | None = None):
        self.model = model
        self.texts = texts
        self.dictionary = dictionary
        self.forced = forced
        self.pieces: list[engine.Piece] | None = None
        self.futures: list[asyncio.Future] = []

    def _prepare(self, window: int) -> list[engine.Piece]:
        hard = self.dictionary if isinstance(self.dictionary, Dictionary) else None
        soft = self.dictionary if isinstance(self.dictionary, Lexicon) else None
        return engine.prepare(self.texts, window, hard, self.forced, soft)

    async def prepare(self, settings: Settings, metrics: Metrics) -> None:
        start = time.perf_counter()
        if sum(len(t) for t in self.texts) > _OFFLOAD_CHARS:
            self.pieces = await asyncio.to_thread(self._prepare, settings.window_units)
        else:
            self.pieces = self._prepare(settings.window_units)
        metrics.tokenize_seconds.labels(self.model.name).observe(time.perf_counter() - start)

    def submit(self, scores: bool, deadline: float, low_priority: bool = False) -> None:
        assert self.pieces is not None
        pieces = self.pieces
        if not pieces:
            return
        # Longest first: the batcher takes a request's pieces in this order, one per turn, so the pieces that
        # share a batch have similar lengths and carry little padding (decoding time grows with the longest).
        order = sorted(range(len(pieces)), key=lambda k: -pieces[k].length)
        queued = self.model.batcher.submit([pieces[k] for k in order], scores=scores, deadline=deadline,
                                           low_priority=low_priority)
        futures: list[asyncio.Future] = [queued[0]] * len(pieces)
        for future, k in zip(queued, order):
            futures[k] = future
        self.futures = futures

    def spans(self) -> list[SpanTable]:
        """Per text, a single-text table of its spans with offsets into the whole text."""
        assert self.pieces is not None
        if len(self.pieces) == len(self.texts) and not any(p.start for p in self.pieces):
            return [future.result() for future in self.futures]  # each text one piece (the usual case): as is
        names = self.model.pipeline.label_names
        table = SpanTable.concat([future.result() for future in self.futures], names)
        return engine.assemble(self.pieces, table, len(self.texts)).split_rows()


async def run_jobs(jobs: Sequence[Job], *, settings: Settings, metrics: Metrics, scores: bool,
                   deadline: float, low_priority: bool = False) -> list[list[SpanTable]]:
    """Prepare, submit and await every job; batcher errors become HTTP errors (503, 504, 500). A cancelled
    caller (client gone) cancels its pieces, which the batcher then drops unrun."""
    for job in jobs:
        await job.prepare(settings, metrics)
    futures: list[asyncio.Future] = []
    waiter: asyncio.Future | None = None
    try:
        for job in jobs:
            job.submit(scores, deadline, low_priority)
            futures.extend(job.futures)
        if futures:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("the request's deadline passed before it was queued")
            waiter = asyncio.gather(*futures)
            await asyncio.wait_for(waiter, remaining)
    except (TimeoutError, DeadlineExceeded):
        raise ServiceError(504, "deadline_exceeded", f"the request did not finish within "
                           f"{settings.request_timeout_s:g} s; try fewer or shorter texts") from None
    except Overloaded as exc:
        raise ServiceError(503, "overloaded", str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except BatcherStopped as exc:
        raise ServiceError(503, "model_unavailable", f"{exc}; retry", headers={"Retry-After": "1"}) from None
    except (BatchFailed, BatcherError) as exc:
        raise ServiceError(500, "inference_failed", f"tagging failed: {exc}") from None
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark as retrieved: a sibling's failure already answered
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()  # the gather of a cancelled request holds a CancelledError: retrieved, not logged
    if sum(len(t) for job in jobs for t in job.texts) > _OFFLOAD_CHARS:
        return await asyncio.to_thread(lambda: [job.spans() for job in jobs])
    return [job.spans() for job in jobs]


# ---- response bodies -------------------------------------------------------------


def _utf16_offsets(text: str) -> np.ndarray | None:
    """``table[i]`` = UTF-16 offset of code point ``i``; None when they are the same (no astral chars)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    wide = codes > 0xFFFF
    if not wide.any():
        return None
    table = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(1 + wide.astype(np.int64), out=table[1:])
    return table


def _score(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def token_dicts(text: str, spans: SpanTable, *, with_pos: bool, utf16: bool) -> list[dict[str, Any]]:
    """The ``tokens`` of one text's response from its single-text table."""
    table = _utf16_offsets(text) if utf16 else None
    out = []
    for a, z, label, score in spans.records():
        start, end = (int(table[a]), int(table[z])) if table is not None else (a, z)
        item: dict[str, Any] = {"text": text[a:z], "start": start, "end": end}
        if with_pos and label:
            item["pos"] = label
        if score is not None:
            item["score"] = _score(score)
        out.append(item)
    return out


def entity_dicts(text: str, spans: SpanTable, *, utf16: bool) -> list[dict[str, Any]]:
    """The ``entities`` of one text's response from its single-text table."""
    table = _utf16_offsets(text) if utf16 else None
    out = []
    for a, z, label, score in spans.records():
        start, end = (int(table[a]), int(table[z])) if table is not None else (a, z)
        item: dict[str, Any] = {"text": text[a:z], "label": label, "start": start, "end": end}
        if score is not None:
            item["score"] = _score(score)
        out.append(item)
    return out


def request_texts(request: TagRequest, settings: Settings) -> list[str]:
    texts = request.all_texts
    check_limits(texts, settings)
    return texts
