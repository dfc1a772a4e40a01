"""CRF against brute-force enumeration of every tag path on tiny instances."""

from __future__ import annotations

import itertools

import pytest
import numpy as np
import torch

from seqtag.models.crf import CRF
from seqtag.models.schemes import TagScheme, allowed_transitions, tag_vocabulary

LENGTHS = [3, 0, 1, 4, 2]  # deliberately unequal, with an empty sentence


def _constraint(name: str) -> tuple[int, torch.Tensor | None]:
    if name.startswith("free"):
        return int(name[-1]), None
    scheme, labels, outside = {
        "bioes": (TagScheme.BIOES, ["A"], True),  # O B-A I-A E-A S-A
        "bio": (TagScheme.BIO, ["A"], True),  # O B-A I-A
        "bmes": (TagScheme.BMES, [""], False),  # B M E S
    }[name]
    tags = tag_vocabulary(scheme, labels, outside=outside)
    return len(tags), allowed_transitions(scheme, tags)


CASES = ["free3", "free4", "bioes", "bio", "bmes"]


def _crf(name: str, seed: int, dtype=torch.float64) -> CRF:
    num_tags, allowed = _constraint(name)
    torch.manual_seed(seed)
    crf = CRF(num_tags, allowed).to(dtype)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0.0, 1.5)  # large enough that constraints and transitions matter
    return crf


def _emissions(num_tags: int, seed: int, dtype=torch.float64, lengths=LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    lengths_t = torch.tensor(lengths)
    em = torch.randn(len(lengths), max(lengths), num_tags, generator=gen, dtype=dtype) * 2
    padding = torch.arange(max(lengths))[None, :] >= lengths_t[:, None]
    em[padding] = 1e4  # padding must never be read
    return em, lengths_t


def _all_paths(crf: CRF, em: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every allowed path (P, n) of one sentence ``em`` (n, T) and its score (P,)."""
    n, t = em.shape
    paths = torch.tensor(list(itertools.product(range(t), repeat=n)), dtype=torch.long).reshape(-1, n)
    a, T = crf.allowed, crf.num_tags
    ok = a[T, paths[:, 0]] & a[paths[:, -1], T + 1] & a[paths[:, :-1], paths[:, 1:]].all(1)
    paths = paths[ok]
    trans, start, end = (p.detach().double() for p in (crf.transitions, crf.start_transitions, crf.end_transitions))
    score = (
        em.double()[torch.arange(n), paths].sum(1)
        + start[paths[:, 0]]
        + end[paths[:, -1]]
        + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    )
    return paths, score


def _sentences(crf: CRF, em: torch.Tensor, lengths: torch.Tensor):
    for b, n in enumerate(lengths.tolist()):
        yield (b, n, *_all_paths(crf, em[b, :n])) if n else (b, 0, None, None)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES)
def test_nll_is_log_partition_minus_gold_score(case, seed):
    crf = _crf(case, seed)
    em, lengths = _emissions(crf.num_tags, seed)
    gen = torch.Generator().manual_seed(seed)
    tags = torch.full(lengths.shape + (em.shape[1],), -100)  # padding tags are arbitrary
    expected = torch.zeros(len(lengths), dtype=torch.float64)
    for b, n, paths, scores in _sentences(crf, em, lengths):
        if n:
            gold = int(torch.randint(len(paths), (1,), generator=gen))
            tags[b, :n] = paths[gold]
            expected[b] = torch.logsumexp(scores, 0) - scores[gold]
    torch.testing.assert_close(crf.nll(em, tags, lengths, reduction="none"), expected)
    torch.testing.assert_close(crf.nll(em, tags, lengths), expected.sum())
    torch.testing.assert_close(crf.nll(em, tags, lengths, reduction="mean"), expected.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES)
def test_viterbi_is_argmax_path(case, seed):
    crf = _crf(case, seed)
    em, lengths = _emissions(crf.num_tags, seed)
    tags, scores = crf.viterbi(em, lengths)
    assert tags.dtype == torch.long and tags.shape == em.shape[:2]
    for b, n, paths, path_scores in _sentences(crf, em, lengths):
        assert tags[b, n:].eq(0).all()
        if not n:
            assert scores[b] == 0
            continue
        best = path_scores.argmax()
        assert tags[b, :n].tolist() == paths[best].tolist()
        torch.testing.assert_close(scores[b], path_scores[best])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES)
def test_marginals_are_path_posteriors(case, seed):
    crf = _crf(case, seed)
    em, lengths = _emissions(crf.num_tags, seed)
    marginals = crf.marginals(em, lengths)
    expected = torch.zeros_like(marginals)
    for b, n, paths, scores in _sentences(crf, em, lengths):
        if n:
            probs = torch.softmax(scores, 0)  # (P,)
            for i in range(n):
                expected[b, i].index_add_(0, paths[:, i], probs)
    torch.testing.assert_close(marginals, expected)
    real = torch.arange(em.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(marginals.sum(-1), real.double())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("case", CASES)
def test_constrained_viterbi_is_best_path_satisfying_mask(case, seed):
    crf = _crf(case, seed)
    em, lengths = _emissions(crf.num_tags, seed)
    gen = torch.Generator().manual_seed(seed)
    tag_mask = torch.rand(em.shape, generator=gen) < 0.7
    tag_mask[0, 1] = False  # an all-False row means "anything goes"
    effective = tag_mask | ~tag_mask.any(-1, keepdim=True)
    tags, scores = crf.viterbi(em, lengths, tag_mask)
    checked = 0
    for b, n, paths, path_scores in _sentences(crf, em, lengths):
        assert tags[b, n:].eq(0).all()
        if not n:
            continue
        keep = effective[b, torch.arange(n), paths].all(1)
        if not keep.any():  # constraints contradict the scheme: any path, but no crash
            assert torch.isfinite(scores[b])
            continue
        best = path_scores[keep].argmax()
        assert tags[b, :n].tolist() == paths[keep][best].tolist()
        torch.testing.assert_close(scores[b], path_scores[keep][best])
        checked += 1
    assert checked >= 1


def test_tag_mask_forces_a_word():
    num_tags, allowed = _constraint("bmes")  # B M E S
    crf = _crf("bmes", 0)
    em, lengths = _emissions(num_tags, 0, lengths=[4])
    tag_mask = torch.zeros(1, 4, num_tags, dtype=torch.bool)
    tag_mask[0, 0, 0] = tag_mask[0, 1, 1] = tag_mask[0, 2, 2] = True  # B M E, last free
    tags, _ = crf.viterbi(em, lengths, tag_mask)
    assert tags[0, :3].tolist() == [0, 1, 2]
    assert tags[0, 3].item() == 3  # after E, only S can also end the sentence


@pytest.mark.parametrize("case", ["free4", "bioes"])
def test_sentence_result_does_not_depend_on_batch(case):
    crf = _crf(case, 3, dtype=torch.float32)
    em, lengths = _emissions(crf.num_tags, 3, dtype=torch.float32, lengths=[4, 0, 1, 7, 3])
    em[torch.arange(em.shape[1])[None, :] >= lengths[:, None]] = float("nan")  # garbage padding
    tags = torch.randint(crf.num_tags, em.shape[:2])
    batch_tags, batch_scores = crf.viterbi(em, lengths)
    batch_nll = crf.nll(em, tags, lengths, reduction="none")
    batch_marg = crf.marginals(em, lengths)
    for b, n in enumerate(lengths.tolist()):
        one = (em[b : b + 1, :n], lengths[b : b + 1])
        alone_tags, alone_score = crf.viterbi(*one)
        assert torch.equal(alone_tags[0], batch_tags[b, :n])
        torch.testing.assert_close(alone_score[0], batch_scores[b], rtol=0, atol=1e-5)
        torch.testing.assert_close(crf.nll(one[0], tags[b : b + 1, :n], one[1])[()], batch_nll[b], rtol=0, atol=1e-4)
        torch.testing.assert_close(crf.marginals(*one)[0], batch_marg[b, :n], rtol=0, atol=1e-6)
    for out in (batch_scores, batch_nll, batch_marg):
        assert torch.isfinite(out).all()


def test_gradients_are_finite_even_for_impossible_gold_paths():
    crf = _crf("bioes", 0, dtype=torch.float32)
    em, lengths = _emissions(crf.num_tags, 0, dtype=torch.float32)
    em[0, 3:] = float("nan")
    em.requires_grad_(True)
    tags = torch.zeros(em.shape[:2], dtype=torch.long)
    tags[0, :3] = torch.tensor([2, 2, 2])  # I-A I-A I-A: disallowed from START
    loss = crf.nll(em, tags, lengths)
    assert torch.isfinite(loss) and loss > 1000  # penalised, not infinite
    loss.backward()
    assert torch.isfinite(em.grad).all()
    assert em.grad[0, 3:].eq(0).all() and em.grad[1].eq(0).all()  # padding, empty sentence
    for p in crf.parameters():
        assert torch.isfinite(p.grad).all()
    n = crf.num_tags
    assert crf.transitions.grad[~crf.allowed[:n, :n]].eq(0).all()  # constraints are not learned


def test_empty_inputs():
    crf = CRF(3)
    lengths = torch.zeros(2, dtype=torch.long)
    for em in (torch.randn(2, 0, 3), torch.randn(2, 5, 3)):
        tags, scores = crf.viterbi(em, lengths)
        assert tags.shape == em.shape[:2] and tags.eq(0).all() and scores.eq(0).all()
        assert crf.marginals(em, lengths).eq(0).all()
        tags_in = torch.zeros(em.shape[:2], dtype=torch.long)
        assert crf.nll(em, tags_in, lengths).item() == 0
        assert crf.nll(em, tags_in, lengths, reduction="none").eq(0).all()


def test_low_precision_emissions_are_computed_in_float32():
    crf = _crf("bio", 0, dtype=torch.float32)
    em, lengths = _emissions(crf.num_tags, 0, dtype=torch.float32)
    tags = torch.zeros(em.shape[:2], dtype=torch.long)
    for dtype in (torch.float16, torch.bfloat16):
        low = em.clamp(-100, 100).to(dtype)
        ref = low.float()
        assert crf.nll(low, tags, lengths).dtype == torch.float32
        torch.testing.assert_close(crf.nll(low, tags, lengths), crf.nll(ref, tags, lengths))
        assert crf.viterbi(low, lengths)[1].dtype == torch.float32
        assert crf.marginals(low, lengths).dtype == torch.float32


def test_extend_keeps_old_scores_and_replaces_constraints():
    old_tags = tag_vocabulary(TagScheme.BIO, ["A"])
    new_tags = old_tags + ["B-B", "I-B"]  # new labels are appended
    crf = _crf("bio", 0, dtype=torch.float32)
    before = {k: v.clone() for k, v in crf.state_dict().items()}
    crf.extend(2, allowed_transitions(TagScheme.BIO, new_tags))
    assert crf.num_tags == 5 and crf.allowed.shape == (7, 7)
    assert torch.equal(crf.allowed, allowed_transitions(TagScheme.BIO, new_tags))
    torch.testing.assert_close(crf.transitions[:3, :3], before["transitions"], rtol=0, atol=0)
    torch.testing.assert_close(crf.start_transitions[:3], before["start_transitions"], rtol=0, atol=0)
    torch.testing.assert_close(crf.end_transitions[:3], before["end_transitions"], rtol=0, atol=0)
    assert crf.transitions[3:].eq(0).all() and crf.transitions[:, 3:].eq(0).all()
    assert crf.start_transitions[3:].eq(0).all() and crf.end_transitions[3:].eq(0).all()
    assert all(p.requires_grad for p in crf.parameters())
    # A sentence using only old tags keeps its gold score; the new tags are usable.
    em = torch.randn(1, 3, 5)
    em[..., 3:] = -50.0
    before_crf = _crf("bio", 0, dtype=torch.float32)
    old_path = torch.tensor([[1, 2, 0]])
    torch.testing.assert_close(
        crf.nll(em, old_path, torch.tensor([3])), before_crf.nll(em[..., :3], old_path, torch.tensor([3]))
    )
    em[0, :, 3] = 50.0
    assert crf.viterbi(em, torch.tensor([3]))[0].tolist() == [[3, 3, 3]]  # B-B B-B B-B
    crf.extend(1, None)
    assert crf.allowed.all() and crf.allowed.shape == (8, 8)


def test_constraints_travel_with_the_state_dict():
    num_tags, allowed = _constraint("bioes")
    saved = CRF(num_tags, allowed).state_dict()
    assert "allowed" in saved
    restored = CRF(num_tags)
    restored.load_state_dict(saved)
    assert torch.equal(restored.allowed, allowed)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        CRF(3, torch.ones(4, 4, dtype=torch.bool))
    crf = CRF(3)
    em, lengths = torch.randn(1, 2, 3), torch.tensor([2])
    with pytest.raises(ValueError):
        crf.nll(em, torch.zeros(1, 2, dtype=torch.long), lengths, reduction="avg")
    with pytest.raises(ValueError):
        crf.viterbi(torch.randn(1, 2, 4), lengths)


@pytest.mark.parametrize("longest_first", [True, False])
@pytest.mark.parametrize("constrained", [True, False])
def test_numpy_and_tensor_viterbi_agree(longest_first, constrained):
    """CPU decoding runs the numpy recursion, CUDA the tensor one: same paths, same scores."""
    from seqtag.models.crf import _viterbi_numpy, _viterbi_torch

    gen = torch.Generator().manual_seed(3)
    num_tags = 5
    allowed = torch.rand(num_tags + 2, num_tags + 2, generator=gen) > 0.3 if constrained else None
    crf = CRF(num_tags, allowed)
    with torch.no_grad():
        crf.transitions.normal_(generator=gen)
    for _ in range(20):
        lengths = torch.randint(0, 12, (9,), generator=gen)
        if longest_first:
            lengths = lengths.sort(descending=True).values
        em = torch.randn(9, 12, num_tags, generator=gen, dtype=torch.float64)
        em, lengths, mask = crf._prepare(em, lengths)
        trans, start, end = (x.detach() for x in crf._scores(em.dtype))
        tags, scores = _viterbi_numpy(em.numpy(), lengths.numpy(), trans.numpy(), start.numpy(), end.numpy())
        want_tags, want_scores = _viterbi_torch(em, lengths, mask, trans, start, end)
        assert tags.tolist() == want_tags.tolist()
        assert np.allclose(scores, want_scores.numpy())


def _many_tags(scheme: TagScheme, labels: int) -> tuple[int, torch.Tensor | None]:
    tags = tag_vocabulary(scheme, [f"L{i}" for i in range(labels)], outside=scheme is not TagScheme.BMES)
    return len(tags), allowed_transitions(scheme, tags)


def _orphan(num_tags: int) -> torch.Tensor:
    """Random constraints in which tag 0 may follow no tag (only start a sentence)."""
    gen = torch.Generator().manual_seed(5)
    allowed = torch.rand(num_tags + 2, num_tags + 2, generator=gen) > 0.4
    allowed[:num_tags, 0] = False
    allowed[num_tags, 0] = True
    return allowed


@pytest.mark.parametrize("constraint", ["bmes", "bioes", "bio", "none", "orphan"])
@pytest.mark.parametrize("masked", [False, True])
def test_sparse_viterbi_is_the_dense_one(constraint, masked):
    """Many tags: the CPU Viterbi that scores only allowed predecessors gives exactly the dense recursion's
    paths and scores, with tag masks too (conflicting ones included, where a disallowed transition can win)."""
    from seqtag.models.crf import NEG, _viterbi_numpy, _viterbi_numpy_sparse

    num_tags, allowed = {
        "bmes": lambda: _many_tags(TagScheme.BMES, 9),  # 36 tags
        "bioes": lambda: _many_tags(TagScheme.BIOES, 9),  # 37
        "bio": lambda: _many_tags(TagScheme.BIO, 20),  # 41
        "none": lambda: (33, None),
        "orphan": lambda: (34, _orphan(34)),
    }[constraint]()
    gen = torch.Generator().manual_seed(11)
    crf = CRF(num_tags, allowed).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0.0, 1.5, generator=gen)
    for trial in range(12):
        lengths = torch.randint(0, 15, (10,), generator=gen)
        if trial % 2:
            lengths = lengths.sort(descending=True).values
        em = torch.randn(10, 15, num_tags, generator=gen, dtype=torch.float64) * 3
        em, lengths, _ = crf._prepare(em, lengths)
        if masked:  # most tags ruled out at each position, as forced spans do (without a common path)
            em = em.masked_fill(torch.rand(em.shape, generator=gen) < 0.8, NEG)
        trans, start, end = (x.detach().numpy() for x in crf._scores(em.dtype))
        arrays = (em.numpy(), lengths.numpy(), trans, start, end)
        tags, scores = _viterbi_numpy_sparse(*arrays, crf._predecessor_groups())
        want_tags, want_scores = _viterbi_numpy(*arrays)
        assert tags.tolist() == want_tags.tolist()
        assert np.array_equal(scores, want_scores)


def test_cpu_viterbi_goes_sparse_for_many_tags_and_big_batches(monkeypatch):
    import seqtag.models.crf as crf_module

    calls = []
    sparse = crf_module._viterbi_numpy_sparse
    monkeypatch.setattr(crf_module, "_viterbi_numpy_sparse", lambda *a: calls.append(1) or sparse(*a))
    many, allowed = _many_tags(TagScheme.BMES, 9)
    assert many >= crf_module.SPARSE_MIN_TAGS
    big, few = crf_module.SPARSE_MIN_BATCH, crf_module.SPARSE_MIN_BATCH - 1
    CRF(many, allowed).viterbi(torch.randn(big, 6, many), torch.full((big,), 6))
    assert calls == [1]
    CRF(many, allowed).viterbi(torch.randn(few, 6, many), torch.full((few,), 6))
    CRF(4).viterbi(torch.randn(big, 6, 4), torch.full((big,), 6))
    assert calls == [1]


def test_predecessor_groups_follow_the_constraints():
    num_tags, allowed = _many_tags(TagScheme.BMES, 9)
    crf = CRF(num_tags, allowed)
    groups = crf._predecessor_groups()
    assert sorted(np.concatenate([tags for tags, _ in groups]).tolist()) == list(range(num_tags))
    for tags, preds in groups:
        for tag, row in zip(tags, preds):
            assert row.tolist() == torch.nonzero(allowed[:num_tags, tag]).flatten().tolist()
    assert sorted(preds.shape[1] for _, preds in groups) == [2, 18]  # M-/E- after B-/M-; B-/S- after E-/S-
    crf.extend(4, allowed_transitions(TagScheme.BMES, tag_vocabulary(TagScheme.BMES, [f"L{i}" for i in range(10)],
                                                                     outside=False)))
    assert sum(len(tags) for tags, _ in crf._predecessor_groups()) == num_tags + 4  # rebuilt after a change
