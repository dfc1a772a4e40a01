"""Tag schemes: span <-> tag conversion, repair, detection and transition tables."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.models.schemes import (
    END,
    JOINED,
    START,
    TagTable,
    TagScheme,
    allowed_transitions,
    convert_tags,
    detect_scheme,
    spans_to_tags,
    split_tag,
    tag_vocabulary,
    tags_to_spans,
)

BMES, BIOES, BIO = TagScheme.BMES, TagScheme.BIOES, TagScheme.BIO

# (scheme, length, spans, tags)
ROUND_TRIPS = [
    (BMES, 6, [(0, 1, ""), (1, 3, ""), (3, 6, "")], ["S", "B", "E", "B", "M", "E"]),
    (BMES, 4, [(0, 2, "X"), (3, 4, "Y")], ["B-X", "E-X", "O", "S-Y"]),
    (BMES, 0, [], []),
    (BIOES, 6, [(0, 3, "PER"), (3, 4, "PER"), (5, 6, "LOC")], ["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC"]),
    (BIOES, 3, [], ["O", "O", "O"]),
    (BIO, 6, [(0, 3, "PER"), (3, 4, "PER"), (5, 6, "LOC")], ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC"]),
    (BIO, 3, [(1, 3, "GPE.NAM")], ["O", "B-GPE.NAM", "I-GPE.NAM"]),
]


@pytest.mark.parametrize("scheme, length, spans, tags", ROUND_TRIPS)
def test_spans_to_tags_and_back(scheme, length, spans, tags):
    assert spans_to_tags(spans, length, scheme) == tags
    assert tags_to_spans(tags) == spans


@pytest.mark.parametrize(
    "spans, length",
    [([(0, 2, "X"), (1, 3, "Y")], 4), ([(0, 2, "X"), (0, 2, "X")], 2), ([(2, 5, "X")], 4), ([(1, 1, "X")], 3)],
)
def test_spans_to_tags_rejects_overlap_and_out_of_range(spans, length):
    with pytest.raises(ValueError):
        spans_to_tags(spans, length, BIOES)


# Invalid (or mixed-scheme) sequences and their repair, per the module docstring.
REPAIRS = [
    (["I-X", "E-X"], [(0, 2, "X")]),  # inside without a begin opens a span
    (["B-X", "B-Y"], [(0, 1, "X"), (1, 2, "Y")]),  # open span closed by the next B
    (["M"], [(0, 1, "")]),
    (["E-PER", "O"], [(0, 1, "PER")]),
    (["B-X", "I-Y", "E-Y"], [(0, 1, "X"), (1, 3, "Y")]),  # label change opens a new span
    (["B-X", "E-Y"], [(0, 1, "X"), (1, 2, "Y")]),
    (["B-X", "I-X", "O", "I-X"], [(0, 2, "X"), (3, 4, "X")]),  # O closes
    (["B", "M"], [(0, 2, "")]),  # still open at the end
    (["S-X", "I-X", "E-X"], [(0, 1, "X"), (1, 3, "X")]),  # S closes at once
    (["E", "E", "M", "S"], [(0, 1, ""), (1, 2, ""), (2, 3, ""), (3, 4, "")]),
    (["B-X", "M-X", "I-X", "E-X"], [(0, 4, "X")]),  # mixed schemes
    (["B-X", "B-X", "O", "O"], [(0, 1, "X"), (1, 2, "X")]),
]


@pytest.mark.parametrize("tags, spans", REPAIRS)
def test_tags_to_spans_repairs_invalid_sequences(tags, spans):
    assert tags_to_spans(tags) == spans


@pytest.mark.parametrize("tag", ["X-PER", "B-", "-PER", "", "BE"])
def test_split_tag_rejects_non_tags(tag):
    with pytest.raises(ValueError):
        split_tag(tag)


def test_split_tag_keeps_dashes_in_labels():
    assert split_tag("B-PER-NAM") == ("B", "PER-NAM")
    assert split_tag("O") == ("O", "")
    assert split_tag("S") == ("S", "")


@pytest.mark.parametrize(
    "tags, scheme",
    [
        (["B", "M", "E", "S"], BMES),
        (["B-X", "M-X", "E-X", "O"], BMES),
        (["B-X", "I-X", "E-X", "O"], BIOES),
        (["S-X", "O"], BIOES),
        (["B-X", "I-X", "O"], BIO),
        (["O"], BIO),
        ([], BIO),
    ],
)
def test_detect_scheme(tags, scheme):
    assert detect_scheme(tags) is scheme


@pytest.mark.parametrize(
    "tags, scheme, expected",
    [
        (["B-X", "I-X", "I-X", "O", "B-Y"], BIOES, ["B-X", "I-X", "E-X", "O", "S-Y"]),
        (["B-X", "I-X", "E-X", "O", "S-Y"], BIO, ["B-X", "I-X", "I-X", "O", "B-Y"]),
        (["B-X", "I-X", "E-X", "O", "S-Y"], BMES, ["B-X", "M-X", "E-X", "O", "S-Y"]),
        (["I-X", "O"], BIOES, ["S-X", "O"]),  # repaired on the way
        (["B", "B", "M"], BMES, ["S", "B", "E"]),
        ([], BIO, []),
    ],
)
def test_convert_tags(tags, scheme, expected):
    assert convert_tags(tags, scheme) == expected


# ---------------------------------------------------------------- transitions


def _table(scheme: TagScheme, labels: list[str]):
    tags = tag_vocabulary(scheme, labels)
    names = tags + [START, END]
    matrix = allowed_transitions(scheme, tags)
    assert matrix.shape == (len(names), len(names))

    def ok(prev: str, nxt: str) -> bool:
        return bool(matrix[names.index(prev), names.index(nxt)])

    return names, ok


def test_tag_vocabulary_order():
    assert tag_vocabulary(BIOES, ["Y", "X", "X"]) == ["O"] + [f"{p}-{l}" for l in "XY" for p in "BIES"]
    assert tag_vocabulary(BMES, [""], outside=False) == ["B", "M", "E", "S"]
    assert tag_vocabulary(BIO, ["A"]) == ["O", "B-A", "I-A"]


# (prev, next, allowed)
BMES_TABLE = [
    (START, "B-X", True), (START, "S-X", True), (START, "O", True),
    (START, "M-X", False), (START, "E-X", False), (START, END, True),
    ("B-X", "M-X", True), ("B-X", "E-X", True), ("B-X", "E-Y", False), ("B-X", "O", False),
    ("B-X", "B-X", False), ("B-X", "S-X", False), ("B-X", END, False),
    ("M-X", "M-X", True), ("M-X", "E-X", True), ("M-X", "M-Y", False), ("M-X", END, False),
    ("E-X", "B-Y", True), ("E-X", "S-X", True), ("E-X", "O", True), ("E-X", END, True),
    ("E-X", "M-X", False), ("E-X", "E-X", False),
    ("S-X", "B-X", True), ("S-X", "O", True), ("S-X", END, True), ("S-X", "E-X", False),
    ("O", "B-X", True), ("O", "O", True), ("O", END, True), ("O", "M-X", False),
    (END, "O", False), ("O", START, False), (END, END, False), (START, START, False),
]  # fmt: skip

BIOES_TABLE = [
    (START, "B-X", True), (START, "S-X", True), (START, "O", True),
    (START, "I-X", False), (START, "E-X", False),
    ("B-X", "I-X", True), ("B-X", "E-X", True), ("B-X", "I-Y", False), ("B-X", "O", False),
    ("B-X", "B-X", False), ("B-X", END, False),
    ("I-X", "I-X", True), ("I-X", "E-X", True), ("I-X", "E-Y", False), ("I-X", "S-X", False),
    ("I-X", END, False),
    ("E-X", "B-X", True), ("E-X", "S-Y", True), ("E-X", END, True), ("E-X", "I-X", False),
    ("S-X", "S-X", True), ("S-X", "I-X", False), ("O", "E-X", False), ("O", "I-X", False),
    (END, "O", False), ("O", START, False),
]  # fmt: skip

BIO_TABLE = [
    (START, "B-X", True), (START, "O", True), (START, "I-X", False), (START, END, True),
    ("B-X", "I-X", True), ("B-X", "O", True), ("B-X", "B-X", True), ("B-X", "B-Y", True),
    ("B-X", END, True), ("B-X", "I-Y", False),
    ("I-X", "I-X", True), ("I-X", "O", True), ("I-X", END, True), ("I-X", "B-Y", True),
    ("I-X", "I-Y", False),
    ("O", "I-X", False), ("O", "B-X", True), (END, "O", False), ("O", START, False),
]  # fmt: skip


@pytest.mark.parametrize(
    "scheme, table", [(BMES, BMES_TABLE), (BIOES, BIOES_TABLE), (BIO, BIO_TABLE)], ids=["bmes", "bioes", "bio"]
)
def test_allowed_transitions_table(scheme, table):
    _, ok = _table(scheme, ["X", "Y"])
    for prev, nxt, expected in table:
        assert ok(prev, nxt) is expected, (prev, nxt)


def test_allowed_transitions_unlabelled_bmes():
    tags = tag_vocabulary(BMES, [""], outside=False)  # B M E S
    matrix = allowed_transitions(BMES, tags).int().tolist()
    assert matrix == [
        # B  M  E  S  START END
        [0, 1, 1, 0, 0, 0],  # B
        [0, 1, 1, 0, 0, 0],  # M
        [1, 0, 0, 1, 0, 1],  # E
        [1, 0, 0, 1, 0, 1],  # S
        [1, 0, 0, 1, 0, 1],  # START
        [0, 0, 0, 0, 0, 0],  # END
    ]


# ------------------------------------------------------------------- property

LABELS = ["PER", "LOC", "X.Y"]


@st.composite
def spans_and_length(draw, labelled: bool = True):
    """Random non-overlapping spans (gaps allowed) over a random length."""
    pieces = draw(st.lists(st.tuples(st.integers(1, 5), st.booleans()), max_size=8))
    spans, pos = [], 0
    for width, is_span in pieces:
        if is_span:
            label = draw(st.sampled_from(LABELS)) if labelled else ""
            spans.append((pos, pos + width, label))
        pos += width
    return spans, pos


@pytest.mark.parametrize("scheme", list(TagScheme))
@settings(max_examples=150, deadline=None)
@given(data=spans_and_length())
def test_round_trip_labelled(scheme, data):
    spans, length = data
    tags = spans_to_tags(spans, length, scheme)
    assert len(tags) == length
    assert tags_to_spans(tags) == spans
    assert _is_allowed_path(tags, scheme, LABELS)
    for other in TagScheme:
        assert tags_to_spans(convert_tags(tags, other)) == spans


@pytest.mark.parametrize("scheme", list(TagScheme))
@settings(max_examples=100, deadline=None)
@given(data=spans_and_length(labelled=False))
def test_round_trip_unlabelled(scheme, data):
    spans, length = data
    assert tags_to_spans(spans_to_tags(spans, length, scheme)) == spans


ANY_TAG = st.sampled_from(["O"] + [f"{p}-{l}" for p in "BMIES" for l in ("X", "Y")])


@settings(max_examples=200, deadline=None)
@given(tags=st.lists(ANY_TAG, max_size=12))
def test_repair_covers_every_tag_and_yields_valid_paths(tags):
    spans = tags_to_spans(tags)
    covered = [i for s, e, _ in spans for i in range(s, e)]
    assert covered == [i for i, t in enumerate(tags) if t != "O"]  # sorted, disjoint, nothing dropped
    for scheme in TagScheme:
        assert _is_allowed_path(convert_tags(tags, scheme), scheme, ["X", "Y"])


@functools.lru_cache(maxsize=None)
def _vocab_and_matrix(scheme: TagScheme, labels: tuple[str, ...]):
    vocab = tag_vocabulary(scheme, labels)
    return vocab, allowed_transitions(scheme, vocab)


def _is_allowed_path(tags: list[str], scheme: TagScheme, labels: list[str]) -> bool:
    vocab, matrix = _vocab_and_matrix(scheme, tuple(labels))
    idx = [len(vocab)] + [vocab.index(t) for t in tags] + [len(vocab) + 1]
    return all(bool(matrix[a, b]) for a, b in zip(idx, idx[1:]))


@pytest.mark.parametrize("scheme, labels", [(BMES, [""]), (BIOES, ["NUM", "X"]), (BIO, ["NUM", "X"])])
def test_a_joined_span_keeps_boundaries_out_of_its_inside_only(scheme, labels):
    """Every valid tag path that a JOINED span (units 1..3 of 5) allows has units 1-3 in one word, and the
    word may go on past either end (a clock time inside CTB6's "19:45分")."""
    import itertools

    tags = tag_vocabulary(scheme, [lab for lab in labels if lab], outside=scheme is not BMES) if labels != [""] \
        else ["B", "M", "E", "S"]
    table = TagTable(tags, scheme)
    mask = table.forced_mask([[(1, 4, JOINED)]], 5)[0]
    names = table.tags
    allowed = {i: [t for t in range(len(names)) if mask[i, t]] for i in range(5)}
    follows = allowed_transitions(scheme, names)
    extents = set()
    for path in itertools.product(*(allowed[i] for i in range(5))):
        if not all(follows[a, b] for a, b in zip(path, path[1:])):
            continue
        spans = tags_to_spans([names[t] for t in path])
        holding = [(a, b) for a, b, _ in spans if a <= 1 < b]
        assert holding and holding[0][1] >= 4, (path, spans)  # units 1..3 lie in one span
        extents.add(holding[0])
    assert {(1, 4), (0, 4), (1, 5), (0, 5)} <= extents  # whole, or longer on either side
    assert not any(mask[1, t] for t, name in enumerate(names) if name == "O")  # its first unit is in a word
