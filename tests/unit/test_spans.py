"""SpanTable: many texts' spans as flat arrays."""

from __future__ import annotations

import numpy as np

from seqtag.models.spans import Span, SpanTable

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


def test_split_rows_join_pieces_and_records():
    table = SpanTable.from_lists(ROWS, ["LOC", "PER"])
    rows = table.split_rows()
    assert [len(r) for r in rows] == [1, 1, 1] and [r.to_lists()[0] for r in rows] == ROWS
    assert list(rows[0].records()) == [(0, 2, "PER", None), (3, 5, "LOC", None)]
    # a text cut into pieces: each piece's spans shifted by where the piece starts
    whole = SpanTable.joined([(0, rows[0]), (10, rows[1]), (20, rows[2])], ["LOC", "PER"])
    assert whole.to_lists() == [ROWS[0] + [Span(21, 24, "PER")]]
    assert SpanTable.joined([(0, rows[2])], ["LOC", "PER"]) is rows[2]  # one piece at the start: as it is
    assert SpanTable.joined([], ["LOC", "PER"]).to_lists() == [[]]  # a text with no pieces (blank)
    assert list(SpanTable.joined([], []).records()) == []


def test_without_scores_and_scored_records():
    scored = SpanTable.from_lists([[Span(0, 1, "", 0.5), Span(1, 3, "", 0.25)]])
    assert list(scored.records()) == [(0, 1, "", 0.5), (1, 3, "", 0.25)]
    plain = scored.without_scores()
    assert plain.scores is None and scored.scores is not None
    assert [sp.score for sp in plain.to_lists()[0]] == [None, None]
    assert plain.without_scores() is plain
    pieces = SpanTable.joined([(0, scored), (5, plain)], [""])
    assert pieces.scores is None and pieces.to_lists()[0][-1] == Span(6, 8)
