"""Prometheus metrics of one app, in its own registry (so several apps, e.g. in tests, never clash).

Every stage is measured here and only here:

=========================================  =========  =====================
name                                       type       labels
=========================================  =========  =====================
seqtag_requests_total                      counter    endpoint, status
seqtag_request_duration_seconds            histogram  endpoint, status
seqtag_tokenize_seconds                    histogram  model
seqtag_queue_wait_seconds                  histogram  model
seqtag_inference_seconds                   histogram  model
seqtag_batch_size                          histogram  model
seqtag_batch_padded_units                  histogram  model
seqtag_queue_depth                         gauge      model
seqtag_rejected_total                      counter    model, reason
seqtag_queue_age_seconds                   gauge      model
seqtag_request_wait_seconds                histogram  model, lane
seqtag_admitted_cost_total                 counter    lane
seqtag_refused_cost_total                  counter    lane, stage
seqtag_in_flight_cost                      gauge      lane
seqtag_model_load_seconds                  gauge      model
seqtag_models_loaded                       gauge
=========================================  =========  =====================

``endpoint`` is the route template (``/v1/dictionaries/{name}``), never the raw path. Costs are characters
(see ``service/admission.py``); ``lane`` is ``normal`` or ``large`` (the low-priority lane), ``stage`` is
``body`` (refused from the body's size, before parsing) or ``parsed``. For ``seqtag_in_flight_cost`` the
large lane counts requests, not characters.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_UNITS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("seqtag_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram(
            "seqtag_request_duration_seconds", "HTTP request latency", ["endpoint", "status"],
            buckets=_LATENCY, registry=r,
        )
        self.tokenize_seconds = Histogram(
            "seqtag_tokenize_seconds",
            "Time to cut a request's texts into pieces and find dictionary words (pieces are encoded per batch, "
            "inside inference)", ["model"],
            buckets=_LATENCY, registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "seqtag_queue_wait_seconds", "Time a piece waited in the queue before its batch ran", ["model"],
            buckets=_LATENCY, registry=r,
        )
        self.inference_seconds = Histogram(
            "seqtag_inference_seconds", "Time of one batch's forward pass and decoding", ["model"],
            buckets=_LATENCY, registry=r,
        )
        self.batch_size = Histogram(
            "seqtag_batch_size", "Pieces per batch", ["model"], buckets=_SIZES, registry=r
        )
        self.batch_padded_units = Histogram(
            "seqtag_batch_padded_units", "Padded units per batch (longest piece x pieces)", ["model"],
            buckets=_UNITS, registry=r,
        )
        self.queue_depth = Gauge("seqtag_queue_depth", "Pieces waiting", ["model"], registry=r)
        self.rejected = Counter(
            "seqtag_rejected", "Pieces refused or dropped (overloaded, deadline, cancelled)", ["model", "reason"],
            registry=r,
        )
        self.queue_age_seconds = Gauge(
            "seqtag_queue_age_seconds", "Age of the oldest queued piece when the last batch was taken", ["model"],
            registry=r,
        )
        self.request_wait_seconds = Histogram(
            "seqtag_request_wait_seconds", "Per request: time from queueing until its last piece went into a batch",
            ["model", "lane"], buckets=_LATENCY, registry=r,
        )
        self.admitted_cost = Counter(
            "seqtag_admitted_cost", "Characters of work admitted", ["lane"], registry=r
        )
        self.refused_cost = Counter(
            "seqtag_refused_cost", "Characters of work refused with 503 (estimated when refused before parsing)",
            ["lane", "stage"], registry=r,
        )
        self.in_flight_cost = Gauge(
            "seqtag_in_flight_cost", "Work admitted and not yet answered: characters (normal), requests (large)",
            ["lane"], registry=r,
        )
        self.model_load_seconds = Gauge(
            "seqtag_model_load_seconds", "Time to load the model's checkpoint", ["model"], registry=r
        )
        self.models_loaded = Gauge("seqtag_models_loaded", "Models being served", registry=r)

    def forget_model(self, name: str) -> None:
        """Drop the per-model series of a model that is no longer served."""
        for metric in (self.queue_depth, self.model_load_seconds, self.queue_age_seconds):
            try:
                metric.remove(name)
            except KeyError:
                pass

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Counts requests and their latency by route template and status (a pure ASGI middleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            labels = (endpoint, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - start)
