"""``bench.load`` runs end to end in --smoke mode against real uvicorn processes. No timing is checked, only
behaviour: an overloaded server refuses with 503 + Retry-After and nothing else, and then serves a lone client."""

from __future__ import annotations

import re

from bench import load
from bench.run import main


def section(text: str, title: str) -> str:
    assert f"\n## {title}\n" in text, title
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def rows(text: str) -> list[list[str]]:
    """The table's body rows as cells (header and separator left out)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def statuses(cell: str) -> dict[str, int]:
    """``200: 6; 503: 329`` -> {"200": 6, "503": 329}."""
    return {key.strip(): int(value.replace(",", "")) for key, value in re.findall(r"([^;:]+): ([\d,]+)", cell)}


def test_load_smoke_run(tmp_path):
    out = tmp_path / "LOAD.md"
    assert main(["--smoke", "--only", "load", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert ": failed\n" not in text
    for title in load.TITLES:
        table = section(text, title)
        assert "| measure | target | measured | pass |" in table, title
        assert rows(table), title

    overload = {(row[0], row[1]): row for row in rows(section(text, "Load: overload and recovery"))}
    shed = statuses(overload[("overload", "answers by status")][3])
    assert set(shed) <= {"200", "503"}, shed  # every refusal is a 503; no 500, 504 or transport error
    assert shed.get("503", 0) > 0, shed  # concurrency 8 against a queue of 2 does overflow it
    assert overload[("overload", "503 without a Retry-After")][3] == "0"
    assert overload[("overload", "other statuses or transport errors")][3] == "0"
    recovered = statuses(overload[("recovery", "answers by status")][3])
    assert set(recovered) == {"200"}, recovered  # a lone client after the overload: only 200s


def test_statuses_cell_parsing():
    assert statuses("200: 1,234; 503: 5") == {"200": 1234, "503": 5}
    assert statuses("200: 3; transport error: 2") == {"200": 3, "transport error": 2}


def test_retry_after_must_be_delay_seconds():
    assert load.usable_retry_after("1") and load.usable_retry_after(" 30 ")
    assert not load.usable_retry_after(None)
    assert not load.usable_retry_after("")
    assert not load.usable_retry_after("-1")
    assert not load.usable_retry_after("soon")
