"""The Batcher alone, with a fake pipeline: when batches close, what fails, what survives."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from seqtag.models.spans import Span, SpanTable
from seqtag.service.batcher import (
    Batcher,
    BatcherStopped,
    BatchFailed,
    DeadlineExceeded,
    Overloaded,
)
from seqtag.models.engine import Piece


class FakePipeline:
    """Answers each piece with one span covering it, labelled with the piece's first id; records batches."""

    def __init__(self, delay: float = 0.0, fail: int = 0, drop_one: bool = False):
        self.batches: list[list[int]] = []  # lengths per batch, in the order given to the model
        self.times: list[float] = []
        self.delay = delay
        self.fail = fail  # how many calls raise
        self.drop_one = drop_one
        self.gate: threading.Event | None = None
        self.scores_seen: list[bool] = []
        self.forced_seen: list[object] = []

    def tag_encoded(self, encoded, order, scores=False, forced=None):
        if self.gate is not None:
            assert self.gate.wait(5), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        self.times.append(time.monotonic())
        self.batches.append([len(encoded.ids[i]) for i in order])
        self.scores_seen.append(scores)
        self.forced_seen.append(forced)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")
        out = []
        for i in order:
            n = len(encoded.ids[i])
            out.append([Span(0, n, str(int(encoded.ids[i][0])), 0.5 if scores else None)])
        return SpanTable.from_lists(out[:-1] if self.drop_one else out)


def spans(table: SpanTable) -> list[Span]:
    """The spans of a piece's result (a single-text table)."""
    [row] = table.to_lists()
    return row


def piece(tag: int, length: int, forced=()) -> Piece:
    ids = np.full(length, tag, dtype=np.int64)
    offsets = np.stack([np.arange(length), np.arange(length) + 1], axis=1)
    return Piece("x" * length, forced=tuple(forced), ids=ids, offsets=offsets)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def started(pipeline, **kw) -> Batcher:
    kw.setdefault("max_wait_ms", 5.0)
    b = Batcher(pipeline, name="fake", **kw)
    await b.start()
    return b


def test_results_go_back_to_their_own_piece_after_sorting():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_wait_ms=20)
        futures = b.submit([piece(k, length) for k, length in enumerate([3, 9, 1, 5], start=10)])
        results = await asyncio.gather(*futures)
        await b.stop()
        return fake, results

    fake, results = run(main())
    assert fake.batches == [[9, 5, 3, 1]]  # one batch, longest first
    assert [spans(r)[0].label for r in results] == ["10", "11", "12", "13"]
    assert [spans(r)[0].end for r in results] == [3, 9, 1, 5]


def test_batch_closes_on_size_without_waiting():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_batch_size=4, max_wait_ms=800, wait_policy="always")
        t0 = time.monotonic()
        futures = b.submit([piece(1, 3) for _ in range(10)])
        await asyncio.gather(*futures)
        await b.stop()
        return fake, t0

    fake, t0 = run(main())
    assert [len(x) for x in fake.batches] == [4, 4, 2]
    assert fake.times[1] - t0 < 0.6  # full batches did not wait for max_wait
    assert fake.times[2] - t0 >= 0.79  # the last, partial one waited


def test_batch_closes_on_padded_unit_budget():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_batch_size=64, max_batch_units=20, max_wait_ms=50)
        await asyncio.gather(*b.submit([piece(1, 5) for _ in range(10)]))
        # padding counts: a long piece first makes the budget run out sooner
        await asyncio.gather(*b.submit([piece(1, 10), piece(1, 2), piece(1, 2)]))
        # a piece longer than the budget still runs, alone
        await asyncio.gather(*b.submit([piece(1, 30)]))
        await b.stop()
        return fake

    fake = run(main())
    assert fake.batches == [[5] * 4, [5] * 4, [5] * 2, [10, 2], [2], [30]]


def test_batch_closes_on_max_wait_and_collects_late_arrivals():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_batch_size=64, max_wait_ms=100, wait_policy="always")
        t0 = time.monotonic()
        first = b.submit([piece(1, 2)])
        await asyncio.sleep(0.02)
        second = b.submit([piece(2, 3)])
        await asyncio.gather(*first, *second)
        elapsed = time.monotonic() - t0
        third = b.submit([piece(3, 1)])
        await asyncio.gather(*third)
        await b.stop()
        return fake, elapsed

    fake, elapsed = run(main())
    assert fake.batches == [[3, 2], [1]]
    assert 0.09 <= elapsed < 1.0


def test_adaptive_wait_takes_a_lone_request_at_once():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_wait_ms=10_000)  # default policy: adaptive
        t0 = time.monotonic()
        await asyncio.gather(*b.submit([piece(1, 2)]))
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.05)  # a quiet gap: the next request is alone too
        await asyncio.gather(*b.submit([piece(2, 3)]))
        total = time.monotonic() - t0
        await b.stop()
        return fake, elapsed, total

    fake, elapsed, total = run(main())
    assert fake.batches == [[2], [3]]
    assert elapsed < 5 and total < 5  # not held back for max_wait (10 s)


def test_adaptive_wait_waits_for_company_under_dense_traffic():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_batch_size=64, max_wait_ms=300)
        for k in range(10):  # requests 10 ms apart: the moving gap falls below max_wait
            await asyncio.gather(*b.submit([piece(k, 1)]))
            await asyncio.sleep(0.01)
        fake.batches.clear()
        first = b.submit([piece(7, 2)])
        await asyncio.sleep(0.05)  # arrives while the first waits for company
        second = b.submit([piece(8, 3)])
        await asyncio.gather(*first, *second)
        await b.stop()
        return fake

    fake = run(main())
    assert fake.batches == [[3, 2]]


def test_wait_policy_is_checked():
    with pytest.raises(ValueError, match="wait_policy"):
        Batcher(FakePipeline(), wait_policy="sometimes")


def test_max_batch_size_one_disables_batching():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_batch_size=1, max_wait_ms=1000)
        t0 = time.monotonic()
        await asyncio.gather(*b.submit([piece(k, k) for k in range(1, 6)]))
        elapsed = time.monotonic() - t0
        await b.stop()
        return fake, elapsed

    fake, elapsed = run(main())
    assert fake.batches == [[1], [2], [3], [4], [5]]
    assert elapsed < 0.9  # a batch of one never waits (max_wait is 1 s)


def test_output_count_mismatch_fails_every_member_and_worker_goes_on():
    async def main():
        fake = FakePipeline(drop_one=True)
        b = await started(fake, max_wait_ms=10)
        futures = b.submit([piece(1, 2), piece(2, 3), piece(3, 4)])
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        fake.drop_one = False
        after = await asyncio.gather(*b.submit([piece(4, 2)]))
        await b.stop()
        return outcomes, after

    outcomes, after = run(main())
    assert all(isinstance(o, BatchFailed) for o in outcomes)
    assert "3" in str(outcomes[0]) and "2" in str(outcomes[0])
    assert len({id(o) for o in outcomes}) == 3  # one exception object per member
    assert spans(after[0])[0].label == "4"


def test_inference_error_fails_the_batch_only():
    async def main():
        fake = FakePipeline(fail=1)
        b = await started(fake, max_wait_ms=10)
        outcomes = await asyncio.gather(*b.submit([piece(1, 2), piece(2, 2)]), return_exceptions=True)
        after = await asyncio.gather(*b.submit([piece(3, 2)]))
        running = b.running
        await b.stop()
        return outcomes, after, running

    outcomes, after, running = run(main())
    assert all(isinstance(o, BatchFailed) and "boom" in str(o) for o in outcomes)
    assert spans(after[0])[0].label == "3" and running


def test_full_queue_refuses_at_once():
    async def main():
        fake = FakePipeline()
        fake.gate = threading.Event()
        b = await started(fake, max_batch_size=1, max_queue=2)
        running = b.submit([piece(1, 2)])
        await asyncio.sleep(0.05)  # the worker took it and is blocked in the model
        queued = b.submit([piece(2, 2), piece(3, 2)])
        assert b.queue_depth == 2
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as info:
            b.submit([piece(4, 2)])
        refused_in = time.monotonic() - t0
        fake.gate.set()
        results = await asyncio.gather(*running, *queued)
        await b.stop()
        return info.value, refused_in, results

    error, refused_in, results = run(main())
    assert refused_in < 0.5 and error.retry_after >= 1
    assert [spans(r)[0].label for r in results] == ["1", "2", "3"]


def test_pieces_past_their_deadline_are_dropped_before_inference():
    async def main():
        fake = FakePipeline()
        fake.gate = threading.Event()
        b = await started(fake, max_batch_size=1)
        first = b.submit([piece(1, 2)])
        await asyncio.sleep(0.05)
        late = b.submit([piece(2, 7)], deadline=time.monotonic() + 0.05)
        await asyncio.sleep(0.1)
        fake.gate.set()
        outcomes = await asyncio.gather(*first, *late, return_exceptions=True)
        await b.stop()
        return fake, outcomes

    fake, outcomes = run(main())
    assert isinstance(outcomes[1], DeadlineExceeded)
    assert fake.batches == [[2]]  # the late piece never reached the model


def test_cancelled_pieces_are_skipped():
    async def main():
        fake = FakePipeline()
        fake.gate = threading.Event()
        b = await started(fake, max_batch_size=8)
        first = b.submit([piece(1, 2)])
        await asyncio.sleep(0.05)
        gone = b.submit([piece(2, 6)])
        kept = b.submit([piece(3, 4)])
        gone[0].cancel()
        fake.gate.set()
        await asyncio.gather(*first, *kept)
        await b.stop()
        return fake

    fake = run(main())
    assert fake.batches == [[2], [4]]


def test_scores_and_forced_spans_are_per_request():
    async def main():
        fake = FakePipeline()
        b = await started(fake, max_wait_ms=30)
        plain = b.submit([piece(1, 3)], scores=False)
        scored = b.submit([piece(2, 4, forced=(Span(0, 2),))], scores=True)
        results = await asyncio.gather(*plain, *scored)
        await b.stop()
        return fake, results

    fake, results = run(main())
    assert len(fake.batches) == 1 and fake.scores_seen == [True]
    assert fake.forced_seen == [[[Span(0, 2)], []]]  # in the model's (length) order
    assert spans(results[0])[0].score is None and spans(results[1])[0].score == 0.5


def test_stop_drains_or_fails_pending_and_refuses_new_work():
    async def main():
        fake = FakePipeline(delay=0.02)
        b = await started(fake, max_batch_size=1)
        drained = b.submit([piece(1, 2), piece(2, 2), piece(3, 2)])
        await b.stop(drain=True)
        assert not b.running
        with pytest.raises(BatcherStopped):
            b.submit([piece(9, 1)])
        drained_results = [spans(f.result())[0].label for f in drained]

        fake2 = FakePipeline()
        fake2.gate = threading.Event()
        b2 = await started(fake2, max_batch_size=1)
        busy = b2.submit([piece(1, 2)])
        await asyncio.sleep(0.05)
        pending = b2.submit([piece(2, 2)])
        stopping = asyncio.create_task(b2.stop(drain=False))
        await asyncio.sleep(0.02)
        fake2.gate.set()
        await stopping
        return drained_results, busy[0].result(), pending[0].exception()

    drained, busy, pending_error = run(main())
    assert drained == ["1", "2", "3"]
    assert spans(busy)[0].label == "1"  # the batch already running finished
    assert isinstance(pending_error, BatcherStopped)


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Batcher(FakePipeline(), max_batch_size=0)


def test_release_free_memory_never_raises():
    from seqtag.service.batcher import release_free_memory

    assert release_free_memory() in (True, False)


def test_text_pieces_are_encoded_per_batch_and_misaligned_forced_spans_dropped():
    """The service submits text; the worker encodes the batch with the pipeline's codec and keeps only
    forced spans on unit boundaries (half of the Latin run "ab12" is not one)."""
    from seqtag.models.codec import Codec

    async def main():
        fake = FakePipeline()
        fake.codec = Codec.build(["我们在北京", "ab12 工作"])
        b = await started(fake, max_wait_ms=20)
        good, half = Span(2, 4, ""), Span(0, 1, "")
        texts = ["我们在北京", "ab12 工作"]
        futures = b.submit([Piece(texts[0], forced=(good,)), Piece(texts[1], forced=(half,))])
        results = await asyncio.gather(*futures)
        await b.stop()
        return fake, results

    fake, results = run(main())
    assert fake.batches == [[5, 3]]  # units: 5 characters; "ab12", "工", "作"
    assert fake.forced_seen == [[[Span(2, 4, "")], []]]
    assert [spans(r)[0].end for r in results] == [5, 3]
    assert Piece("ab12 工作").length == 7  # characters before encoding


def test_requests_take_turns_so_a_small_one_is_not_stuck_behind_a_big_one():
    async def main():
        fake = FakePipeline()
        fake.gate = threading.Event()
        b = await started(fake, max_batch_size=4, max_wait_ms=0)
        first = b.submit([piece(1, 2)])  # runs (held at the gate) while the others queue
        await asyncio.sleep(0.05)
        big = b.submit([piece(2, 3) for _ in range(40)])
        small = b.submit([piece(3, 5), piece(3, 5)])
        fake.gate.set()
        await asyncio.gather(*first, *big, *small)
        await b.stop()
        return fake

    fake = run(main())
    # the second batch holds both of the small request's pieces, interleaved with the big one's
    assert sorted(fake.batches[1]) == [3, 3, 5, 5]
    assert sum(len(x) for x in fake.batches) == 43


def test_low_priority_pieces_fill_only_a_capped_part_of_each_batch():
    async def main():
        fake = FakePipeline()
        fake.gate = threading.Event()
        b = await started(fake, max_batch_size=64, max_batch_units=4096, max_wait_ms=0, low_priority_units=40)
        huge = b.submit([piece(2, 10) for _ in range(30)], low_priority=True)
        await asyncio.sleep(0.05)  # the first low-priority batch is running (at the gate)
        light = b.submit([piece(3, 4)])
        assert b.queue_depth == 26 + 1  # 4 pieces of 10 went (the lane may fill 40 padded units), the light one waits
        fake.gate.set()
        await asyncio.gather(*light, *huge)
        await b.stop()
        return fake

    fake = run(main())
    assert 4 in fake.batches[1]  # the light piece went into the very next batch
    assert all(sum(1 for n in batch if n == 10) <= 4 for batch in fake.batches)  # <= 40 units of the lane
    assert sum(len(x) for x in fake.batches) == 31
