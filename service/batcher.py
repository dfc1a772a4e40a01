"""Dynamic batching for one model: a fair queue of encoded pieces and one worker.

The :class:`Batcher` owns the queue, the :class:`~models.pipeline.Pipeline` and its
device. Handlers encode their pieces (sentences or windows of a text) and
:meth:`Batcher.submit` them, one request per call. One background asyncio task cuts
batches: it takes one piece from each waiting request in turn (round robin across
requests, a request's own pieces in the order given), until the batch has
``max_batch_size`` pieces, or one more would push the padded size (longest piece x
pieces, padding counted) past ``max_batch_units``, or the oldest piece has waited
``max_wait_ms``, whichever comes first. So a small request behind a huge one is in the
next batch, not behind all of the huge one's pieces. Requests submitted as
``low_priority`` (the service's large requests) are a second lane: they fill what room
the normal lane leaves, and at most ``low_priority_units`` padded units of any batch,
so a batch holding their pieces stays short and light traffic never waits long behind one.

The wait only applies while requests arrive closer together than ``max_wait_ms`` (a moving average of
the gaps between requests): then company is likely to come, and under load pieces queue
behind the running batch anyway; a lone request on a quiet model is taken at once, so
batching costs light traffic nothing (``wait_policy="always"`` restores the plain rule). The batch
runs off the event loop in a one-thread executor (so inference for one model is
never concurrent with itself), sorted by length inside the batch.

Failure rules: a full normal lane refuses a request at once (:class:`Overloaded`); the
pieces of a request past its deadline (:class:`DeadlineExceeded`) or given up (its futures
cancelled: timeout, client gone, a sibling piece failed) are dropped before they cost a
batch; a batch whose inference raises, or returns a different number of results than
it was given, fails every member (:class:`BatchFailed`) and the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from seqtag.models import engine
from seqtag.models.codec import Codec, Encoded
from seqtag.models.engine import Piece
from seqtag.models.spans import SpanTable

log = logging.getLogger("seqtag.batcher")


#: Weight of the newest gap between requests in their moving average (about the last 5 requests count).
GAP_WEIGHT = 0.3
#: How often (at most) the worker hands freed heap memory back to the OS after a batch.
TRIM_EVERY_S = 5.0
#: "adaptive": wait for company only while requests arrive closer together than max_wait (default);
#: "always": the oldest piece always waits up to max_wait for the batch to fill.
WAIT_POLICIES = ("adaptive", "always")


class BatcherError(Exception):
    """Base of the errors a submitted piece can end with."""


class Overloaded(BatcherError):
    def __init__(self, model: str, depth: int, retry_after: int = 1):
        super().__init__(f"model {model!r} is overloaded ({depth} pieces waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(BatcherError):
    pass


class BatchFailed(BatcherError):
    pass


class BatcherStopped(BatcherError):
    pass


class Predictor(Protocol):
    """What the batcher needs of a pipeline (a fake in tests): what :func:`models.engine.run` uses, the codec
    (for pieces still in text) and :meth:`~models.pipeline.Pipeline.tag_encoded`."""

    codec: Codec

    def tag_encoded(
        self, encoded: Encoded, order: Sequence[int], scores: bool = False, forced: Any = None
    ) -> SpanTable: ...


@dataclass(eq=False)
class _Work:
    piece: Piece
    future: asyncio.Future = field(repr=False)
    request: "_Request" = field(repr=False)

    @property
    def scores(self) -> bool:
        return self.request.scores

    @property
    def enqueued(self) -> float:
        return self.request.enqueued


@dataclass(eq=False)
class _Request:
    """The queued pieces of one submitted request."""

    scores: bool
    deadline: float | None
    enqueued: float
    low_priority: bool
    works: deque = field(default_factory=deque)  # of _Work, in the order given

    def given_up(self) -> bool:
        """Every piece's future is done: the request timed out, was cancelled or failed."""
        return all(work.future.done() for work in self.works)


class Batcher:
    def __init__(
        self,
        pipeline: Predictor,
        *,
        name: str = "model",
        max_batch_size: int = 64,
        max_batch_units: int = 8192,
        max_wait_ms: float = 5.0,
        max_queue: int = 2048,
        metrics: Any = None,
        wait_policy: str = "adaptive",
        low_priority_units: int = 2048,
    ):
        if (max_batch_size < 1 or max_batch_units < 1 or max_queue < 1 or max_wait_ms < 0
                or low_priority_units < 1):
            raise ValueError("batcher limits must be positive")
        if wait_policy not in WAIT_POLICIES:
            raise ValueError(f"wait_policy must be one of {', '.join(WAIT_POLICIES)}, not {wait_policy!r}")
        self.wait_policy = wait_policy
        self.pipeline = pipeline
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_batch_units = max_batch_units
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.low_priority_units = low_priority_units
        self.metrics = metrics
        self.batches_run = 0
        self.report_depth = True
        self._lanes: tuple[deque[_Request], deque[_Request]] = (deque(), deque())  # normal, low priority
        self._queued = [0, 0]  # pieces queued per lane
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._last_submit = -math.inf
        self._last_trim = time.monotonic()
        self._gap = math.inf  # moving average of the seconds between requests (inf: no traffic yet)

    # ---- lifecycle -----------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("batcher already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seqtag-{self.name}")
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")
        self._gauge()

    async def stop(self, drain: bool = True) -> None:
        """Stop taking work; run what is queued (``drain``) or fail it, then end the worker."""
        self._closing = True
        if not drain:
            self._fail_pending(BatcherStopped(f"model {self.name!r} was unloaded"))
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._fail_pending(BatcherStopped(f"model {self.name!r} was unloaded"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def queue_depth(self) -> int:
        """Pieces waiting, in both lanes."""
        return self._queued[0] + self._queued[1]

    # ---- submitting ----------------------------------------------------
    def submit(
        self, pieces: Sequence[Piece], *, scores: bool = False, deadline: float | None = None,
        low_priority: bool = False,
    ) -> list[asyncio.Future]:
        """Queue all ``pieces`` of one request (all or none); futures resolve to their spans.

        ``deadline`` is a ``time.monotonic()`` instant. Raises :class:`Overloaded` at once when
        the normal lane already holds ``max_queue`` pieces (a request is admitted whole, so the lane
        can exceed the bound by at most one request; the low-priority lane is bounded by the service's
        admission instead), :class:`BatcherStopped` after ``stop()``.
        """
        if not self.running:
            raise BatcherStopped(f"model {self.name!r} is not running")
        lane = 1 if low_priority else 0
        if not low_priority and self._queued[0] >= self.max_queue:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.name, "overloaded").inc(len(pieces))
            raise Overloaded(self.name, self._queued[0])
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        # gaps past 10 x max_wait all mean "quiet", so dense traffic after a quiet spell counts within ~7 requests
        gap = min(now - self._last_submit, 10 * self.max_wait)
        self._gap = gap if math.isinf(self._gap) else (1 - GAP_WEIGHT) * self._gap + GAP_WEIGHT * gap
        self._last_submit = now
        request = _Request(scores, deadline, now, low_priority)
        futures = []
        for piece in pieces:
            future = loop.create_future()
            request.works.append(_Work(piece, future, request))
            futures.append(future)
        if pieces:
            self._lanes[lane].append(request)
            self._queued[lane] += len(pieces)
            self._gauge()
            self._wake.set()
        return futures

    # ---- the worker ----------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self.queue_depth:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._closing and self._worth_waiting() and not self._batch_full():
                remaining = self._oldest() + self.max_wait - time.monotonic()
                if remaining > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except TimeoutError:
                        pass
                    continue
            batch = self._take()
            if batch:
                try:
                    await self._execute(batch)
                except asyncio.CancelledError:
                    self._fail(batch, BatcherStopped(f"model {self.name!r} was stopped"))
                    raise
                except Exception as exc:  # never let the worker die
                    log.exception("batcher %s: unexpected error", self.name)
                    self._fail(batch, BatchFailed(f"batch failed: {type(exc).__name__}: {exc}"))

    def _worth_waiting(self) -> bool:
        """May the oldest piece wait (up to max_wait) for company? Always, or only under dense traffic."""
        return self.wait_policy == "always" or self._gap < self.max_wait

    def _oldest(self) -> float:
        """When the oldest request still queued was submitted."""
        return min((lane[0].enqueued for lane in self._lanes if lane), default=time.monotonic())

    def _batch_full(self) -> bool:
        """Would a batch taken now stop before the queue's end (size or unit budget reached)?"""
        count, width = 0, 0
        for lane in self._lanes:
            for request in lane:
                for work in request.works:
                    if count >= self.max_batch_size:
                        return True
                    width = max(width, work.piece.length)
                    if count and width * (count + 1) > self.max_batch_units:
                        return True
                    count += 1
        return count >= self.max_batch_size

    def _take(self) -> list[_Work]:
        """The next batch: normal requests round robin, then the low-priority lane in what room is left (at
        most ``low_priority_units``); requests past their deadline or given up are dropped first."""
        now = time.monotonic()
        self._shed(now)
        if self.metrics is not None and self.queue_depth:
            self.metrics.queue_age_seconds.labels(self.name).set(now - self._oldest())
        batch: list[_Work] = []
        width = self._fill(batch, 0, 0, self.max_batch_units)
        if len(batch) < self.max_batch_size:
            self._fill(batch, 1, width, self.low_priority_units)
        self._gauge()
        return batch

    def _fill(self, batch: list[_Work], lane: int, width: int, units: int) -> int:
        """Add pieces of ``lane``'s requests to ``batch``, one per request in turn, while the batch has room
        (its size and unit budget, and ``units`` padded units for this lane's own pieces); the batch's width."""
        requests = self._lanes[lane]
        own = own_width = 0
        now = time.monotonic()
        while requests and len(batch) < self.max_batch_size:
            request = requests[0]
            work = request.works[0]
            if not work.future.done():  # a piece given up since the shedding never costs a batch
                new_width, new_own = max(width, work.piece.length), max(own_width, work.piece.length)
                if batch and new_width * (len(batch) + 1) > self.max_batch_units:
                    break
                if own and new_own * (own + 1) > units:
                    break
                batch.append(work)
                own, width, own_width = own + 1, new_width, new_own
            request.works.popleft()
            self._queued[lane] -= 1
            if request.works:
                requests.rotate(-1)  # the next request's turn
            else:
                requests.popleft()
                self._waited(request, now)
        return width

    def _shed(self, now: float) -> None:
        """Drop requests that are past their deadline (their pieces fail) or that gave up (client gone,
        timed out, a sibling failed), before any of their pieces reach a batch."""
        for lane, requests in enumerate(self._lanes):
            keep: deque[_Request] = deque()
            for request in requests:
                late = request.deadline is not None and now > request.deadline
                if not late and not request.given_up():
                    keep.append(request)
                    continue
                dropped = [w for w in request.works if not w.future.done()]
                self._queued[lane] -= len(request.works)
                reason = "deadline" if late else "cancelled"
                for work in dropped:
                    work.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
                if self.metrics is not None:
                    self.metrics.rejected.labels(self.name, reason).inc(len(dropped) if late else len(request.works))
            if len(keep) != len(requests):
                requests.clear()
                requests.extend(keep)

    def _waited(self, request: _Request, now: float) -> None:
        if self.metrics is not None:
            lane = "large" if request.low_priority else "normal"
            self.metrics.request_wait_seconds.labels(self.name, lane).observe(now - request.enqueued)

    async def _execute(self, batch: list[_Work]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        if self.metrics is not None:
            wait = self.metrics.queue_wait_seconds.labels(self.name)
            for work in batch:
                wait.observe(started - work.enqueued)
            width = max(w.piece.length for w in batch)
            self.metrics.batch_size.labels(self.name).observe(len(batch))
            self.metrics.batch_padded_units.labels(self.name).observe(width * len(batch))
        assert self._executor is not None
        try:
            results = await loop.run_in_executor(self._executor, self._infer, [w.piece for w in batch],
                                                 any(w.scores for w in batch))
        except Exception as exc:
            log.error("batcher %s: a batch of %d failed: %s: %s", self.name, len(batch), type(exc).__name__, exc,
                      exc_info=exc)
            self._fail(batch, BatchFailed(f"inference failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self.batches_run += 1
            if self.metrics is not None:
                self.metrics.inference_seconds.labels(self.name).observe(time.monotonic() - started)
        for work, spans in zip(batch, results):
            if work.future.done():
                continue
            work.future.set_result(spans if work.scores else spans.without_scores())

    def _infer(self, pieces: list[Piece], scores: bool) -> list[SpanTable]:
        """Runs in the executor thread: one forward pass over the batch, longest piece first; each piece's
        spans as a single-text :class:`SpanTable` (arrays: no Python object per span on this thread)."""
        with torch.inference_mode():
            results = engine.run(self.pipeline, pieces, scores).split_rows()
        now = time.monotonic()
        if now - self._last_trim > TRIM_EVERY_S:
            self._last_trim = now
            release_free_memory()
        return results

    # ---- helpers ---------------------------------------------------------
    def _fail(self, batch: Sequence[_Work], error: BatcherError) -> None:
        for work in batch:
            if not work.future.done():
                # one exception object per request: a traceback is never shared across requests
                work.future.set_exception(type(error)(*error.args))

    def _fail_pending(self, error: BaseException) -> None:
        pending = [work for lane in self._lanes for request in lane for work in request.works]
        for lane in self._lanes:
            lane.clear()
        self._queued = [0, 0]
        self._fail(pending, error)  # type: ignore[arg-type]
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None and self.report_depth:
            self.metrics.queue_depth.labels(self.name).set(self.queue_depth)


_libc_trim = None


def release_free_memory() -> bool:
    """glibc's ``malloc_trim(0)``: return freed heap pages to the OS (False where there is no glibc).

    Batches of ever-changing shapes leave freed but unreturned pages behind. The main cause of the service's
    memory growth was oneDNN's per-shape kernel cache (capped in ``service.app``); this keeps the rest flat:
    9.1% vs 13.95% growth over 20,000 requests before the cap was found (see BENCHMARKS.md)."""
    global _libc_trim
    if _libc_trim is None:
        try:
            import ctypes

            _libc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _libc_trim = False
    if not _libc_trim:
        return False
    _libc_trim(0)
    return True
