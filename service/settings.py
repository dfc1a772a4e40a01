"""The service's one typed configuration, read from ``SEQTAG_*`` environment variables.

Every field below can be set as ``SEQTAG_<NAME>`` (e.g. ``SEQTAG_MAX_BATCH_SIZE=32``);
``seqtag serve --models/--host/--port/--device`` override the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import os

from seqtag import models_dir as shipped_models_dir
from seqtag.models.textsplit import DEFAULT_WINDOW

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Settings(BaseSettings):
    """Service settings; the docstring of each field gives its default and meaning."""

    model_config = SettingsConfigDict(
        env_prefix="SEQTAG_", extra="ignore", validate_default=True, use_attribute_docstrings=True
    )

    models_dir: Path = Field(default_factory=shipped_models_dir)
    """Directory of checkpoint directories, one model per subdirectory named after it (a training run's
    directory serves its ``best/``); or one checkpoint or training run, served alone (default: the shipped
    models)."""

    dictionaries_dir: Path | None = None
    """Where stored dictionaries are kept as ``NAME.json`` (default: ``$XDG_DATA_HOME/seqtag/dictionaries``,
    i.e. ``~/.local/share/seqtag/dictionaries``: outside the repository and the installed package)."""

    host: str = "127.0.0.1"
    """Interface uvicorn binds (default 127.0.0.1: local only)."""

    port: int = Field(8000, ge=0, le=65535)
    """TCP port (default 8000)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    workers: int = Field(1, ge=1, le=64)
    """uvicorn worker processes; each has its own models and batchers (stateless replicas) (default 1)."""

    cuda_precision: Literal["float32", "float16", "bfloat16"] = "float32"
    """Encoder precision on CUDA (the CRF always decodes in float32); float16 is faster, and
    tests/integration/test_cuda.py checks that it gives the same tags where CUDA is present. Ignored on CPU
    (default float32)."""

    max_batch_size: int = Field(64, ge=1)
    """Most pieces (sentences/windows) in one forward pass (default 64; 1 disables batching)."""

    max_batch_units: int = Field(8192, ge=1)
    """Padded-unit budget of one batch: longest piece x pieces, padding included (default 8192)."""

    max_wait_ms: float = Field(0.0, ge=0)
    """How long the oldest waiting piece may wait for a batch to fill (default 0: continuous batching, a batch
    starts as soon as the worker is free with whatever is queued, and pieces arriving meanwhile form the next
    one). On 2 CPU cores 0 beat 5 ms both in throughput at concurrency 32 (+15%) and for a lone client, whose
    requests (~4 ms apart) the adaptive rule took for dense traffic and held back (see BENCHMARKS.md)."""

    wait_policy: Literal["adaptive", "always"] = "adaptive"
    """When a batch waits ``max_wait_ms`` (if positive) for more pieces: ``adaptive`` (default) only while
    requests arrive closer together than that; ``always`` for every batch."""

    max_queue: int = Field(2048, ge=1)
    """Pieces waiting per model; a request arriving at a full queue gets 503 at once (default 2048)."""

    queue_budget_chars: int = Field(65_536, ge=1)
    """Admission budget: characters of work (texts and inline dictionary entries) that admitted requests may
    have in flight at once, all models together; a request that does not fit gets 503 with Retry-After at
    once, before its body is parsed where its size already tells (default 65,536: about one second of work
    for zh-seg on 2 CPU cores, so admitted requests wait about that long at most; see BENCHMARKS.md)."""

    large_request_share: float = Field(0.25, gt=0, le=1)
    """A request costing more than this share of ``queue_budget_chars`` is large (default 0.25: over 16,384
    characters): it does not take from the budget, runs in the low-priority lane and never blocks others."""

    max_large_requests: int = Field(2, ge=0)
    """Large requests in flight at once (default 2); one more gets 503 with Retry-After (0: refuse them all)."""

    low_priority_batch_units: int = Field(2048, ge=1)
    """Padded units of a batch that large requests' pieces may fill (default 2048, a quarter of a batch: such a
    batch takes ~15 ms for zh-seg on 2 cores, so a small request arriving meanwhile waits about that long)."""

    retry_after_s: int = Field(1, ge=1)
    """The Retry-After (seconds) of a 503 for overload (default 1)."""

    request_timeout_s: float = Field(30.0, gt=0)
    """Deadline of a tagging request, queueing included; past it the answer is 504 (default 30 s)."""

    keep_alive_s: float = Field(75.0, gt=0)
    """How long uvicorn keeps an idle keep-alive connection open before closing it (default 75 s). Keep it
    longer than the idle timeout of every client and proxy that reuses connections (httpx: 5 s, nginx
    upstream keepalive: 60 s, most load balancers: 60 s), so that the client always retires an idle
    connection first: a server closing one just as the client sends on it costs that request a transport
    error (``Server disconnected``, connection reset), which no status code or retry header can explain."""

    window_units: int = Field(DEFAULT_WINDOW, ge=8)
    """Long texts are cut at sentence ends into pieces of at most this many characters (default 256)."""

    max_text_chars: int = Field(1_000_000, ge=1)
    """Longest single text accepted (default 1,000,000 code points; longer -> 413)."""

    max_texts: int = Field(10_000, ge=1)
    """Most texts in one request (default 10,000; more -> 413)."""

    max_total_chars: int = Field(2_000_000, ge=1)
    """Most characters in all texts of one request together (default 2,000,000; more -> 413)."""

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body read at all (default 64 MiB; larger -> 413 before parsing)."""

    max_dictionary_entries: int = Field(200_000, ge=1)
    """Most entries in one dictionary, stored or sent with a request (default 200,000)."""

    admin_token: SecretStr | None = None
    """Bearer token for the admin endpoints (reload, dictionaries). Unset (default): they are open."""

    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed by CORS, as a JSON list or comma-separated (default empty: CORS off)."""

    int8: bool = True
    """On a CPU, run models marked for dynamic int8 (``seqtag compact --int8``; the shipped zh-seg and zh-pos)
    in int8 (default true). False: float32, slower (zh-seg ~2x in batches) but a text's tags then never
    depend on which other requests share its batch; in int8 a few sentences in a hundred can come out
    differently (1% of CTB6 dev for zh-seg, 3% of UD-GSD dev for zh-pos; see BENCHMARKS.md)."""

    torch_threads: int = Field(0, ge=0)
    """CPU threads torch may use for inference (default 0 = auto: one fewer than the cores this process may
    run on, at least 1, so the event loop that parses requests keeps a core: on 2 cores this doubled both
    throughput and single-request speed, see BENCHMARKS.md)."""

    gil_switch_ms: float = Field(0.2, gt=0, le=100)
    """How long (ms) a Python thread may keep the GIL while another waits for it (default 0.2; Python's own
    default is 5). Each batch's inference thread takes the GIL back between torch calls; with the event loop
    busy parsing requests, 5 ms waits at every step made a batch run 5x slower than alone (see
    BENCHMARKS.md). Applies to the whole process."""

    gc_freeze: bool = True
    """After models load (and after one is unloaded), collect garbage and freeze what is alive (``gc.freeze``),
    so Python's full collections stop walking the models' objects: with the four shipped models that walk took
    74 ms, a stall for every request in flight (default true; applies to the whole process)."""

    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    """Log level of the service and uvicorn (default info)."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("admin_token", mode="after")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value() else value

    @model_validator(mode="after")
    def _default_dictionaries_dir(self) -> "Settings":
        if self.dictionaries_dir is None:
            data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
            self.dictionaries_dir = Path(data) / "seqtag" / "dictionaries"
        return self

    @property
    def dictionaries_path(self) -> Path:
        assert self.dictionaries_dir is not None
        return self.dictionaries_dir
