"""SpanTable: many texts' spans as flat arrays."""

from __future__ import annotations

import numpy as np

from models.spans import Span, SpanTable

ROWS = [[Span(0, 2, "PER"), Span(3, 5, "LOC")], [], [Span(1, 4, "PER")]]


def test_from_lists_and_back():
    table = SpanTable.from_lists(ROWS)
    assert table.label_names == ["LOC", "PER"] and len(table) == 3
    assert table.counts.tolist() == [2, 0, 1] and table.scores is None
    assert table.to_lists() == ROWS


def test_take_reorders_rows_and_concat_appends_them():
    table = SpanTable.from_lists(ROWS, ["LOC", "PER"])
    assert table.take([2, 0, 1]).to_lists() == [ROWS[2], ROWS[0], ROWS[1]]
    assert table.take(np.zeros(0, dtype=np.int64)).to_lists() == []
    both = SpanTable.concat([table, table.take([0])], ["LOC", "PER"])
    assert both.to_lists() == ROWS + [ROWS[0]]
    assert SpanTable.concat([], ["LOC"]).to_lists() == []


def test_scores_travel_with_their_spans():
    rows = [[Span(0, 1, "", 0.5)], [Span(0, 2, "", 0.25), Span(2, 3, "", 1.0)]]
    table = SpanTable.from_lists(rows)
    back = table.take([1, 0]).to_lists()
    assert [[sp.score for sp in row] for row in back] == [[0.25, 1.0], [0.5]]
