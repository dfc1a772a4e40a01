"""Schemathesis against the app's own OpenAPI schema, in process: every operation, a bounded number of
generated requests each (valid and invalid by the schema), and no answer may be a 5xx.

Admin endpoints are left open (no token) so that reloads and dictionary writes are exercised too;
the dictionaries live in a temporary directory.
"""

from __future__ import annotations

from typing import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from seqtag.service.app import create_app  # noqa: E402
from seqtag.service.settings import Settings  # noqa: E402

try:  # the check's home in schemathesis 4; older releases exposed it under ``schemathesis.checks`` too
    from schemathesis.checks import not_a_server_error
except ImportError:  # pragma: no cover - a schemathesis without it
    pytest.skip("this schemathesis has no not_a_server_error check", allow_module_level=True)

if not hasattr(schemathesis, "openapi") or not hasattr(schemathesis.openapi, "from_asgi"):
    pytest.skip("needs schemathesis >= 4 (schemathesis.openapi.from_asgi)", allow_module_level=True)

MAX_EXAMPLES = 25
STATUSES: dict[str, list[int]] = {}  # "METHOD /path" -> statuses seen by test_no_server_errors


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, models_dir) -> Iterator[object]:
    settings_ = Settings(models_dir=models_dir, dictionaries_dir=tmp_path_factory.mktemp("st-dicts"),
                         torch_threads=1, max_wait_ms=0, request_timeout_s=30)
    app = create_app(settings_)
    # schemathesis runs the app's lifespan (models load, batchers start) on its own event loop
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        from schemathesis.python.asgi import shutdown_lifespans
    except ImportError:  # pragma: no cover - other schemathesis versions stop it at exit
        return
    shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    response = case.call_and_validate(checks=[not_a_server_error])
    STATUSES.setdefault(f"{case.method.upper()} {case.path}", []).append(response.status_code)


def test_every_operation_is_in_the_schema(api_schema):
    """The run above covers the whole API: every documented operation is generated for."""
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    for expected in [("POST", "/v1/segment"), ("POST", "/v1/pos"), ("POST", "/v1/ner"), ("POST", "/v1/analyze"),
                     ("GET", "/v1/models"), ("POST", "/v1/models/reload"), ("GET", "/v1/dictionaries"),
                     ("GET", "/v1/dictionaries/{name}"), ("PUT", "/v1/dictionaries/{name}"),
                     ("DELETE", "/v1/dictionaries/{name}"), ("GET", "/healthz"), ("GET", "/readyz"),
                     ("GET", "/metrics")]:
        assert expected in operations, (expected, sorted(operations))


def test_the_run_was_not_vacuous():
    """The generated requests reached the loaded models: tagging answered 200s, not only 4xx."""
    if not STATUSES:
        pytest.skip("test_no_server_errors did not run in this session")
    assert all(code < 500 for codes in STATUSES.values() for code in codes), STATUSES
    for operation in ("POST /v1/segment", "POST /v1/pos", "POST /v1/ner", "POST /v1/analyze"):
        codes = STATUSES.get(operation, [])
        assert 200 in codes and any(400 <= c < 500 for c in codes), (operation, sorted(set(codes)))
    assert len(STATUSES) >= 13 and sum(map(len, STATUSES.values())) >= 13 * 10, {
        k: len(v) for k, v in STATUSES.items()}

