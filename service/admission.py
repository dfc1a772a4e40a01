"""Cost-aware admission: a request is admitted against a budget of work in flight, or refused at once.

A request's cost is the characters the service must process for it: its texts and the entries of an inline
dictionary. Before the body is parsed, its size gives an estimate (:func:`estimate_cost`); after parsing
the ticket is settled at the exact cost. Normal requests share ``budget`` characters of work in flight
(queued or running, in every model of the process); one that does not fit is answered 503 with
``Retry-After`` at once, before any parsing, splitting or queueing. A request costing more than
``large_share`` of the budget is *large*: it does not take from the budget (it would block every other
request until it is done), but takes one of ``max_large`` slots and runs in the batchers' low-priority lane,
which fills only a small part of each batch while other work waits. When every large slot is taken, a
large request is refused; a normal one never is on its account.
"""

from __future__ import annotations

from typing import Any

from seqtag.service.errors import ServiceError

#: JSON bytes per character assumed before parsing: a CJK character sent as a ``\\uXXXX`` escape (Python's
#: ``json.dumps``, aiohttp, requests) takes 6 bytes, in raw UTF-8 3, ASCII 1; dividing by 6 keeps the
#: estimate at or under the true cost for every BMP text, so the early refusal never turns away a request
#: that would have fitted.
BYTES_PER_CHAR = 6
NORMAL, LARGE = "normal", "large"


def estimate_cost(content_length: int) -> int:
    """A lower estimate of a request's cost from its body size, before parsing."""
    return max(1, content_length // BYTES_PER_CHAR)


class Admission:
    """The process's admission budget (one for all models: they share the CPU)."""

    def __init__(self, budget: int, large_share: float, max_large: int, metrics: Any = None,
                 retry_after_s: int = 1):
        if budget < 1 or not 0 < large_share <= 1 or max_large < 0:
            raise ValueError("admission limits must be positive")
        self.budget = budget
        self.large_above = max(1, int(budget * large_share))
        self.max_large = max_large
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self.in_flight = 0  # characters of admitted normal requests not yet answered
        self.large_in_flight = 0  # large requests not yet answered

    def lane_of(self, cost: int) -> str:
        return LARGE if cost > self.large_above else NORMAL

    def admit(self, cost: int, stage: str = "parsed") -> "Ticket":
        """A ticket for ``cost``; 503 with Retry-After when it does not fit. ``stage``: for the metrics."""
        ticket = Ticket(self)
        ticket.settle(cost, stage)
        return ticket

    # ---- bookkeeping (Ticket calls these) -------------------------------------------------------------
    def _take(self, lane: str, cost: int, grow: int, stage: str) -> None:
        if lane == LARGE:
            if self.large_in_flight >= self.max_large:
                self._refuse(lane, cost, stage, f"{self.large_in_flight} large request(s) are already running "
                             f"(the limit is {self.max_large}; a request over {self.large_above:,} characters "
                             "is large)")
            self.large_in_flight += 1
        else:
            if grow > 0 and self.in_flight + grow > self.budget:
                self._refuse(lane, cost, stage, f"{self.in_flight:,} characters of work are in flight (the budget "
                             f"is {self.budget:,}) and this request needs {cost:,} more")
            self.in_flight += grow
        if self.metrics is not None:
            self.metrics.admitted_cost.labels(lane).inc(max(0, grow) if lane == NORMAL else cost)
        self._gauge()

    def _give_back(self, lane: str, cost: int) -> None:
        if lane == LARGE:
            self.large_in_flight -= 1
        else:
            self.in_flight -= cost
        self._gauge()

    def _refuse(self, lane: str, cost: int, stage: str, why: str) -> None:
        if self.metrics is not None:
            self.metrics.refused_cost.labels(lane, stage).inc(cost)
        raise ServiceError(503, "overloaded", f"the service is busy: {why}; retry in {self.retry_after_s} s",
                           headers={"Retry-After": str(self.retry_after_s)})

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight_cost.labels(NORMAL).set(self.in_flight)
            self.metrics.in_flight_cost.labels(LARGE).set(self.large_in_flight)


class Ticket:
    """One request's share of the budget: settled at a cost (again, when the exact cost is known), released
    once when the request is answered."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.lane: str | None = None
        self.cost = 0

    @property
    def low_priority(self) -> bool:
        return self.lane == LARGE

    def settle(self, cost: int, stage: str = "parsed") -> None:
        """Hold ``cost`` (moving lanes if it changed the request's lane); 503 when it does not fit, and then the
        ticket holds nothing."""
        cost = max(1, int(cost))
        lane = self.admission.lane_of(cost)
        if lane == self.lane:
            grow = cost - self.cost if lane == NORMAL else 0
            try:
                self.admission._take(lane, cost, grow, stage) if grow > 0 else self._shrink(cost)
            except ServiceError:
                self.release()
                raise
            self.cost = cost
            return
        self.release()
        self.admission._take(lane, cost, cost, stage)
        self.lane, self.cost = lane, cost

    def _shrink(self, cost: int) -> None:
        if self.lane == NORMAL:
            self.admission._give_back(NORMAL, self.cost - cost)

    def release(self) -> None:
        if self.lane is not None:
            self.admission._give_back(self.lane, self.cost if self.lane == NORMAL else 1)
            self.lane, self.cost = None, 0

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
