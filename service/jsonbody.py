"""One way to read a JSON request body, shared by every route that reads one itself.

It parses as FastAPI does (Python's ``json``: a lone surrogate escape is text too) and fails the same way, as
a :class:`~fastapi.exceptions.RequestValidationError` the app's handler answers: 400 for a body that is not
JSON (nested too deeply for the parser included: never a 500), 400 for an empty body, 422 for JSON that
does not fit the model.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _invalid(error: str, position: int | None = None) -> RequestValidationError:
    loc = ("body",) if position is None else ("body", position)
    return RequestValidationError([{"type": "json_invalid", "loc": loc, "msg": "JSON decode error", "input": {},
                                    "ctx": {"error": error}}])


def parse_json_body(body: bytes, model: type[M]) -> M:
    if not body.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                       "input": None}])
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _invalid(exc.msg, exc.pos) from None
    except UnicodeDecodeError as exc:
        raise _invalid(exc.reason) from None
    except RecursionError:
        raise _invalid("nested too deeply") from None
    except ValueError:  # e.g. an integer of more digits than Python converts
        raise _invalid("a value the JSON parser refuses") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    except RecursionError:
        raise _invalid("nested too deeply") from None
