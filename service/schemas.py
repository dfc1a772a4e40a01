"""Request and response bodies of the HTTP API (they are also the OpenAPI schema at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator


class DictionaryEntry(BaseModel):
    """A dictionary word with the POS tag or entity type it must get."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(description="the word or entity to force (1..64 characters, not blank)")
    label: StrictStr | None = Field(None, description="POS tag (pos models) or entity type (ner models); "
                                                      "omit to force only the boundaries")


Entry = Annotated[StrictStr | DictionaryEntry, Field(union_mode="left_to_right")]


class TagRequest(BaseModel):
    """Texts to tag: ``text`` (one) or ``texts`` (several), exactly one of them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["我们在北京工作。", "张伟明喜欢音乐。"], "scores": True}]},
    )

    text: StrictStr | None = Field(None, description="one text (the response still has a one-item results list)")
    texts: list[StrictStr] | None = Field(None, min_length=1, description="several texts, answered in order")
    model: StrictStr | None = Field(
        None,
        description="model name (default: zh-<task>, else the first model of the task). For /v1/analyze, "
        "a comma-separated list of models replacing the default of their tasks.",
    )
    dictionary: list[Entry] | StrictStr | None = Field(
        None,
        description="user dictionary: a list of entries (a word, or {text, label}), or the name of a stored "
        "dictionary. Matches are leftmost-longest; matches not on unit boundaries are skipped.",
    )
    dictionary_mode: Literal["hard", "soft"] = Field(
        "hard", description="hard: the dictionary's words are forced; soft: they are evidence the model weighs "
        "against the context (models trained with a lexicon; others answer 422)")
    dictionary_words_only: StrictBool = Field(
        False, description="use the dictionary's words without their labels (e.g. a jieba dictionary's tags, "
        "which are not the model's)")
    scores: StrictBool = Field(False, description="add each span's confidence (min CRF marginal over its units)")
    offsets: Literal["codepoints", "utf16"] = Field(
        "codepoints", description="unit of start/end: Unicode code points (default) or UTF-16 code units"
    )

    @model_validator(mode="after")
    def _one_of_text_texts(self) -> "TagRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a non-empty list of strings)")
        return self

    @property
    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Token(BaseModel):
    text: str
    start: int
    end: int
    pos: str | None = Field(None, description="POS tag (pos models only)")
    score: float | None = Field(None, description="confidence 0..1 (only when scores=true)")


class Entity(BaseModel):
    text: str
    label: str
    start: int
    end: int
    score: float | None = Field(None, description="confidence 0..1 (only when scores=true)")


class Result(BaseModel):
    tokens: list[Token] = Field(description="words (seg/pos models; empty from /v1/ner)")
    entities: list[Entity] = Field(description="named entities (ner models; empty from /v1/segment and /v1/pos)")


class TagResponse(BaseModel):
    model: str | dict[str, str] = Field(
        description="the model used; for /v1/analyze a map from task (seg/pos/ner) to model name"
    )
    version: str | dict[str, str] = Field(description="content hash of the model's checkpoint (a map for analyze)")
    results: list[Result] = Field(description="one per input text, in order")


class DictionaryBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"entries": ["图书馆", {"text": "华星公司", "label": "ORG"}]}]
    })

    entries: list[Entry] = Field(description="words, or {text, label} objects")


class DictionaryOut(BaseModel):
    name: str
    entries: list[str | DictionaryEntry]


class DictionaryNames(BaseModel):
    dictionaries: list[str]


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_units: int
    max_wait_ms: float
    wait_policy: str
    max_queue: int
    queue_depth: int
    running: bool


class ModelInfo(BaseModel):
    name: str
    task: str
    scheme: str
    labels: list[str]
    version: str
    saved_at: str | None = None
    architecture: str | None = None
    dev_metrics: dict[str, Any] | None = None
    device: str
    precision: str = Field(description='what the encoder computes in: "int8" (dynamic, CPU), "float32", '
                           '"float16" or "bfloat16" (CUDA)')
    load_seconds: float
    batching: BatchingInfo


class ModelList(BaseModel):
    models: list[ModelInfo]
    failed: dict[str, str] = Field(description="model directories that did not load, and why")


class ReloadResult(BaseModel):
    loaded: list[str]
    unchanged: list[str]
    removed: list[str]
    failed: dict[str, str]
    models: list[str]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "bad request (invalid JSON, wrong task for the model)",
        404: "unknown model or stored dictionary",
        413: "too many texts / characters",
        415: "body is not JSON",
        422: "invalid request body or dictionary label",
        503: "overloaded (with Retry-After) or no model for the task",
        504: "deadline exceeded",
    }.items()
}
