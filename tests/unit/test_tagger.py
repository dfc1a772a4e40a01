"""The network and the inference pipeline: shapes, initialisation, training a step,
batch invariance, empty inputs, and growing tags / vocabularies in place."""

from __future__ import annotations

import copy

import pytest
import torch

from seqtag.models.checkpoint import ModelMeta, build_tagger
from seqtag.models.codec import Codec, CodecConfig, is_space
from seqtag.models.pipeline import Pipeline, plan_batches
from seqtag.models.schemes import TagScheme, allowed_transitions, spans_to_tags, tag_vocabulary
from seqtag.models.spans import Span
from seqtag.models.tagger import ConvEncoder, Tagger, TaggerConfig

CORPUS = [
    "我爱北京天安门",
    "iPhone15 发布于 2024 年，售价 3.5 万元",
    "张三在上海工作",
    "COVID-19 疫情",
    "你好，世界！",
]

SMALL = dict(unit_dim=12, bigram_dim=6, hidden=10, layers=2, embed_dropout=0.2, dropout=0.2)

# Texts of very different lengths, with empty and whitespace-only ones among them.
TEXTS = [
    "我爱北京天安门",
    "",
    "张三",
    "iPhone15 发布于 2024 年，售价 3.5 万元，张三在上海工作，你好世界",
    " \u3000\t\n",
    "好",
    "COVID-19 疫情在上海",
    "我爱北京天安门",  # a duplicate
    "你好，世界！😀 未知字",
]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.build(CORPUS, CodecConfig(bigram_min_freq=1))


def make_tagger(codec: Codec, scheme=TagScheme.BMES, labels=("",), seed=0, outside=None, **overrides):
    torch.manual_seed(seed)
    outside = scheme is not TagScheme.BMES if outside is None else outside
    tags = tag_vocabulary(scheme, labels, outside=outside)
    config = TaggerConfig(**{**SMALL, **overrides})
    return build_tagger(config, codec, scheme, tags), tags


def randomise_crf(tagger: Tagger, scale: float = 1.0) -> None:
    """Untrained CRF scores are nearly flat; make transitions matter."""
    with torch.no_grad():
        for p in tagger.crf.parameters():
            p.normal_(0.0, scale)
        tagger.project.weight.mul_(5.0)


def pipeline_for(tagger: Tagger, codec: Codec, task: str, scheme: TagScheme, tags: list[str]) -> Pipeline:
    return Pipeline(tagger, codec, ModelMeta(task, scheme, tags), torch.device("cpu"))


def gold_tags(codec: Codec, texts: list[str], tags: list[str], scheme: TagScheme) -> torch.Tensor:
    """Deterministic valid gold tags: words of two units (segmentation)."""
    enc = codec.encode(texts)
    width = max(max(enc.lengths), 1)
    out = torch.zeros(len(texts), width, dtype=torch.long)
    for row, n in enumerate(enc.lengths):
        spans = [(i, min(i + 2, n), "") for i in range(0, n, 2)]
        out[row, :n] = torch.tensor([tags.index(t) for t in spans_to_tags(spans, n, scheme)], dtype=torch.long)
    return out


# --------------------------------------------------------------------------- shapes / init


def test_emissions_shape(codec):
    tagger, tags = make_tagger(codec)
    enc = codec.encode(TEXTS)
    batch = codec.batch(enc)
    scores = tagger.eval().emissions(batch)
    assert scores.shape == (len(TEXTS), max(enc.lengths), len(tags))
    assert torch.isfinite(scores).all()
    assert tagger.num_tags == len(tags)
    # Without bigram features, and unidirectional: same outer shape.
    plain, _ = make_tagger(codec, bigram_dim=0, bidirectional=False, layers=1)
    assert not plain.use_bigrams
    assert plain.eval().emissions(batch).shape == scores.shape
    # The model does not need the codec's bigrams when it has no bigram features.
    no_bi = Codec.build(CORPUS, CodecConfig(bigrams=False))
    t, _ = make_tagger(no_bi)
    assert not t.use_bigrams
    assert t.eval().emissions(no_bi.batch(no_bi.encode(TEXTS))).shape == scores.shape


@pytest.mark.parametrize("layers, bidirectional", [(1, True), (2, True), (3, False)])
def test_lstm_forget_gate_bias_is_one(codec, layers, bidirectional):
    hidden = 7
    tagger, _ = make_tagger(codec, layers=layers, bidirectional=bidirectional, hidden=hidden)
    params = dict(tagger.encoder.named_parameters())
    suffixes = ["", "_reverse"] if bidirectional else [""]
    names = [f"l{k}{s}" for k in range(layers) for s in suffixes]
    assert sorted(n for n in params if n.startswith("bias_ih")) == sorted(f"bias_ih_{n}" for n in names)
    for name in names:
        ih, hh = params[f"bias_ih_{name}"], params[f"bias_hh_{name}"]
        assert ih.shape == (4 * hidden,)  # gates i, f, g, o
        expected = torch.zeros(4 * hidden)
        expected[hidden : 2 * hidden] = 1.0
        assert torch.equal(ih.detach(), expected), name
        assert torch.equal(hh.detach(), torch.zeros(4 * hidden)), name


def test_gru_has_no_forget_bias_rewrite(codec):
    tagger, _ = make_tagger(codec, encoder="gru")
    assert isinstance(tagger.encoder, torch.nn.GRU)
    # PyTorch's default init: biases are not all zero / one.
    ih = tagger.encoder.bias_ih_l0.detach()
    assert not torch.all((ih == 0) | (ih == 1))


@pytest.mark.parametrize("embed_init, bound", [("scaled", lambda dim: (3 / dim) ** 0.5), ("small", lambda dim: 0.1)])
def test_embedding_init_range(codec, embed_init, bound):
    torch.manual_seed(0)
    tagger, _ = make_tagger(codec, embed_init=embed_init)
    for embed in (tagger.unit_embed, tagger.bigram_embed):
        weight, limit = embed.weight.detach(), bound(embed.embedding_dim)
        assert weight.abs().max() <= limit and weight.abs().max() > 0.8 * limit


# --------------------------------------------------------------------------- training / decoding


@pytest.mark.parametrize(
    "encoder, decoder",
    [("lstm", "crf"), ("gru", "crf"), ("cnn", "crf"), ("lstm", "softmax"), ("gru", "softmax"), ("cnn", "softmax")],
)
def test_train_one_step_and_decode(codec, encoder, decoder):
    scheme = TagScheme.BMES
    tagger, tags = make_tagger(codec, scheme, encoder=encoder, decoder=decoder)
    assert (tagger.crf is None) == (decoder == "softmax")
    texts = [t for t in TEXTS if t.strip()]
    batch = codec.batch(codec.encode(texts))
    gold = gold_tags(codec, texts, tags, scheme)

    tagger.train()
    optim = torch.optim.SGD(tagger.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in tagger.state_dict().items()}
    loss = tagger.loss(batch, gold)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    optim.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tagger.parameters() if p.grad is not None)
    first = "encoder.input.weight" if encoder == "cnn" else "encoder.weight_ih_l0"
    assert tagger.get_parameter(first).grad.abs().sum() > 0
    optim.step()
    changed = [k for k, v in tagger.state_dict().items() if not torch.equal(v, before[k])]
    assert "project.weight" in changed and first in changed
    if decoder == "crf":
        assert "crf.transitions" in changed

    tagger.eval()
    with torch.no_grad():
        assert tagger.loss(batch, gold).item() < loss.item()  # one step on the same batch helps
    pred, marginals = tagger.decode(batch, with_marginals=True)
    assert pred.shape == batch.unit_ids.shape and pred.dtype == torch.long
    assert ((pred >= 0) & (pred < len(tags))).all()
    assert marginals.shape == (*batch.unit_ids.shape, len(tags))
    lengths = batch.lengths
    for row, n in enumerate(lengths.tolist()):
        # float32 forward-backward: ~1e-5 error on long sentences is rounding, not a bug.
        assert torch.allclose(marginals[row, :n].sum(-1), torch.ones(n), atol=1e-4)
        assert (marginals[row, n:] == 0).all()
        assert (pred[row, n:] == 0).all()
    # And through the pipeline: every visible character is in exactly one word
    # (a word may span whitespace between its units, e.g. "2024 年").
    pipe = pipeline_for(tagger, codec, "seg", scheme, tags)
    for text, words in zip(TEXTS, pipe.predict(TEXTS, scores=True)):
        covered = [0] * len(text)
        for w in words:
            assert not is_space(text[w.start]) and not is_space(text[w.end - 1])
            for k in range(w.start, w.end):
                covered[k] += 1
        assert all(c == 1 for ch, c in zip(text, covered) if not is_space(ch))
        assert all(c <= 1 for c in covered)
        assert all(0.0 <= w.score <= 1.0 + 1e-4 for w in words), [w.score for w in words]


def test_cnn_encoder_windows_and_config():
    enc = ConvEncoder(in_dim=4, channels=6, layers=3, kernel=3, dropout=0.0)
    h = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6)
    windows = enc._windows(h, 2)  # units t-2, t, t+2; zeros outside the sentence
    assert windows.shape == (2, 5, 18)
    assert torch.equal(windows[:, 2, :6], h[:, 0]) and torch.equal(windows[:, 2, 6:12], h[:, 2])
    assert torch.equal(windows[:, 2, 12:], h[:, 4]) and (windows[:, 0, :6] == 0).all()
    assert (windows[:, 4, 12:] == 0).all()
    # the output past a sentence's end is zero
    mask = torch.ones(2, 5, 1)
    mask[1, 3:] = 0
    out = enc(enc.input(torch.randn(2, 5, 4)), mask)
    assert out.shape == (2, 5, 6) and (out[1, 3:] == 0).all()
    with pytest.raises(ValueError, match="odd"):
        TaggerConfig(encoder="cnn", kernel=4)


def test_decode_honours_tag_mask(codec):
    tagger, tags = make_tagger(codec, TagScheme.BMES)
    randomise_crf(tagger)
    batch = codec.batch(codec.encode(["我爱北京天安门"]))
    mask = torch.zeros(1, batch.unit_ids.shape[1], len(tags), dtype=torch.bool)
    mask[..., tags.index("S")] = True
    pred, _ = tagger.eval().decode(batch, tag_mask=mask)
    assert pred[0].tolist() == [tags.index("S")] * 7


# --------------------------------------------------------------------------- batch invariance


@pytest.mark.parametrize(
    "encoder, scheme, labels",
    [
        ("lstm", TagScheme.BMES, ("",)),
        ("gru", TagScheme.BIOES, ("LOC", "PER")),
        ("lstm", TagScheme.BIO, ("PER",)),
        ("cnn", TagScheme.BMES, ("",)),
    ],
)
def test_tensor_level_batch_invariance(codec, encoder, scheme, labels):
    extra = {"layers": 3} if encoder == "cnn" else {}
    tagger, tags = make_tagger(codec, scheme, labels, seed=3, encoder=encoder, **extra)
    randomise_crf(tagger)
    tagger.eval()
    enc = codec.encode(TEXTS)
    together = codec.batch(enc)
    em_all = tagger.emissions(together)
    tags_all, marg_all = tagger.decode(together, with_marginals=True)
    for i, n in enumerate(enc.lengths):
        alone = codec.batch(enc, [i])
        em = tagger.emissions(alone)
        t, m = tagger.decode(alone, with_marginals=True)
        assert torch.allclose(em[0, :n], em_all[i, :n], atol=1e-5)
        assert t[0, :n].tolist() == tags_all[i, :n].tolist()
        assert torch.allclose(m[0, :n], marg_all[i, :n], atol=1e-5)


@pytest.mark.parametrize(
    "task, scheme, labels, decoder",
    [
        ("seg", TagScheme.BMES, ("",), "crf"),
        ("ner", TagScheme.BIOES, ("LOC", "PER"), "crf"),
        ("ner", TagScheme.BIO, ("LOC", "PER"), "softmax"),
    ],
)
def test_pipeline_batch_invariance(codec, task, scheme, labels, decoder):
    tagger, tags = make_tagger(codec, scheme, labels, seed=11, decoder=decoder)
    if tagger.crf is not None:
        randomise_crf(tagger)
    tagger.eval()
    pipe = pipeline_for(tagger, codec, task, scheme, tags)
    alone = pipe.predict(TEXTS, scores=True, max_batch=1)
    together = pipe.predict(TEXTS, scores=True, max_batch=64)
    squeezed = pipe.predict(TEXTS, scores=True, max_batch=64, max_units=20)  # other groupings
    assert len(alone) == len(together) == len(TEXTS)
    for a, b, c in zip(alone, together, squeezed):
        assert [(s.start, s.end, s.label) for s in a] == [(s.start, s.end, s.label) for s in b]
        assert [(s.start, s.end, s.label) for s in a] == [(s.start, s.end, s.label) for s in c]
        for x, y, z in zip(a, b, c):
            assert x.score is not None
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert x.score == pytest.approx(z.score, abs=1e-5)
    # A duplicate text gets the same answer as its twin in the same batch.
    assert together[0] == together[7]
    assert [s.score for s in together[0]] == pytest.approx([s.score for s in together[7]], abs=1e-5)
    # The model is left in the mode it was in.
    assert not tagger.training
    if task == "seg":
        assert any(len(words) > 0 for words in together)
    # Scores off: same spans, no scores.
    plain = pipe.predict(TEXTS, max_batch=64)
    assert plain == together
    assert all(s.score is None for spans in plain for s in spans)


def test_pipeline_restores_training_mode(codec):
    tagger, tags = make_tagger(codec)
    pipe = pipeline_for(tagger, codec, "seg", TagScheme.BMES, tags)
    tagger.train()
    first = pipe.predict(TEXTS[:3], scores=True)
    assert tagger.training
    assert pipe.predict(TEXTS[:3], scores=True) == first  # eval inside: no dropout noise


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_empty_and_whitespace_texts(codec, decoder):
    tagger, tags = make_tagger(codec, decoder=decoder)
    pipe = pipeline_for(tagger, codec, "seg", TagScheme.BMES, tags)
    assert pipe.predict([]) == []
    assert pipe.predict([""]) == [[]]
    assert pipe.predict(["", " \u3000\t\n\xa0"], scores=True) == [[], []]
    mixed = pipe.predict(["", "我爱", "   "], scores=True, max_batch=64)
    assert mixed[0] == [] and mixed[2] == [] and len(mixed[1]) >= 1
    # Tensor level: an all-empty batch decodes to nothing without error.
    batch = codec.batch(codec.encode(["", " "]))
    assert batch.lengths.tolist() == [0, 0]
    pred, marginals = tagger.eval().decode(batch, with_marginals=True)
    assert pred.shape[0] == 2 and (pred == 0).all() and (marginals == 0).all()
    gold = torch.zeros_like(batch.unit_ids)
    assert tagger.loss(batch, gold).item() == 0.0


def test_plan_batches():
    lengths = [3, 0, 10, 5, 5, 1]
    batches = plan_batches(lengths, max_batch=2, max_units=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 for b in batches)
    assert batches[0][0] == 2  # longest first
    tight = plan_batches(lengths, max_batch=64, max_units=10)
    assert all(max(lengths[i] for i in b) * len(b) <= 10 or len(b) == 1 for b in tight)
    assert plan_batches([], 4, 100) == []


# --------------------------------------------------------------------------- growing in place


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_extend_tags_keeps_old_outputs(codec, decoder):
    scheme = TagScheme.BIOES
    tagger, old_tags = make_tagger(codec, scheme, ("PER",), seed=5, decoder=decoder)
    if tagger.crf is not None:
        randomise_crf(tagger)
    tagger.eval()
    batch = codec.batch(codec.encode(TEXTS))
    before = tagger.emissions(batch)
    crf_before = None if tagger.crf is None else [p.detach().clone() for p in tagger.crf.parameters()]

    new_tags = old_tags + [t for t in tag_vocabulary(scheme, ["LOC"]) if t not in old_tags]
    num_new = len(new_tags) - len(old_tags)
    assert num_new == 4
    tagger.extend_tags(num_new, allowed_transitions(scheme, new_tags))
    assert tagger.num_tags == len(new_tags)
    after = tagger.emissions(batch)
    assert after.shape == (*before.shape[:2], len(new_tags))
    assert torch.allclose(after[..., : len(old_tags)], before, atol=1e-6)
    assert (after[..., len(old_tags) :] == 0).all()  # new tags start neutral
    if crf_before is not None:
        n = len(old_tags)
        trans, start, end = tagger.crf.transitions, tagger.crf.start_transitions, tagger.crf.end_transitions
        assert torch.equal(trans[:n, :n], crf_before[0])
        assert torch.equal(start[:n], crf_before[1]) and torch.equal(end[:n], crf_before[2])
        assert tagger.crf.allowed.shape == (len(new_tags) + 2,) * 2
    # It still trains and decodes with the grown tag set.
    pred, marginals = tagger.decode(batch, with_marginals=True)
    assert marginals.shape[-1] == len(new_tags) and ((pred >= 0) & (pred < len(new_tags))).all()
    tagger.train()
    loss = tagger.loss(batch, torch.full_like(batch.unit_ids, new_tags.index("S-LOC")))
    loss.backward()
    assert torch.isfinite(loss) and tagger.project.weight.grad[len(old_tags) :].abs().sum() > 0


def test_extend_embeddings_keeps_old_outputs():
    codec = Codec.build(CORPUS, CodecConfig(bigram_min_freq=1))
    tagger, tags = make_tagger(codec, seed=9)
    randomise_crf(tagger)
    tagger.eval()
    old_texts = CORPUS + ["我爱上海"]
    old_batch = codec.batch(codec.encode(old_texts))
    emissions = tagger.emissions(old_batch)
    decoded, _ = tagger.decode(old_batch)
    old_units, old_bigrams = codec.num_units, codec.num_bigrams

    # Characters disjoint from the old texts, so their bigrams are untouched.
    added = codec.extend(["深圳南山区腾讯大厦", "深圳南山区腾讯大厦 Shenzhen"])
    assert added[0] > 0 and added[1] > 0
    tagger.extend_embeddings(codec.num_units, codec.num_bigrams)
    assert tagger.unit_embed.num_embeddings == codec.num_units > old_units
    assert tagger.bigram_embed.num_embeddings == codec.num_bigrams > old_bigrams

    new_batch = codec.batch(codec.encode(old_texts))
    assert torch.equal(new_batch.unit_ids, old_batch.unit_ids)
    assert torch.equal(new_batch.bigram_ids, old_batch.bigram_ids)
    assert torch.allclose(tagger.emissions(new_batch), emissions, atol=1e-6)
    assert torch.equal(tagger.decode(new_batch)[0], decoded)
    # New units are usable and not UNK.
    fresh = codec.batch(codec.encode(["深圳 Shenzhen"]))
    assert fresh.unit_ids.min() >= 3 and tagger.emissions(fresh).shape[:2] == (1, 3)
    # Shrinking is a no-op.
    table = tagger.unit_embed
    tagger.extend_embeddings(old_units, old_bigrams)
    assert tagger.unit_embed is table


def test_parallel_batches_give_the_same_answers(codec):
    """predict(workers=N) tags N planned batches at once on threads; answers and their order are unchanged."""
    texts = ["我们在北京工作。", "", "他喜欢音乐和电影，也喜欢看书。", "iPhone15 很贵", "北京", "  ", "我爱北京天安门"] * 3
    tags = tag_vocabulary(TagScheme.BMES, [""], outside=False)
    for encoder in ("lstm", "cnn"):
        torch.manual_seed(0)
        tagger = build_tagger(TaggerConfig(hidden=8, unit_dim=8, bigram_dim=4, encoder=encoder), codec,
                              TagScheme.BMES, tags)
        pipeline = Pipeline(tagger.eval(), codec, ModelMeta("seg", TagScheme.BMES, tags), torch.device("cpu"))
        one = pipeline.predict(texts, max_batch=2, scores=True)
        assert pipeline.predict(texts, max_batch=2, scores=True, workers=4) == one
        assert pipeline.predict(texts, workers=4) == pipeline.predict(texts)  # one batch: no threads needed
        tagger.train()  # a model in training mode (the trainer's own evaluation) is tagged in eval mode, and left
        assert pipeline.predict(texts, max_batch=2, scores=True, workers=4) == one and tagger.training
        tagger.eval()
        # one batch per core for the recurrent encoder on a CPU; the convolutional one shares torch threads
        assert pipeline.batch_workers(6) == (6 if encoder == "lstm" else 1)
    with pytest.raises(ValueError, match="workers"):
        pipeline.predict(texts, workers=0)


def test_words_never_span_whitespace_unless_forced():
    """seg/pos: a unit after whitespace starts a word; a forced dictionary word may still cross it."""
    torch.manual_seed(0)
    texts = ["我 们 在 北 京", "ab cd 12 34"]
    codec = Codec.build(texts, CodecConfig(bigram_min_freq=1))
    tags = tag_vocabulary(TagScheme.BMES, [""], outside=False)
    tagger = build_tagger(TaggerConfig(hidden=8, unit_dim=8, bigram_dim=4), codec, TagScheme.BMES, tags)
    with torch.no_grad():  # make the model love long words, so only the constraint splits them
        tagger.crf.transitions.fill_(0)
        tagger.project.bias.copy_(torch.tensor([0.0, 5.0, 0.0, -5.0]))
    pipeline = Pipeline(tagger.eval(), codec, ModelMeta("seg", TagScheme.BMES, tags), torch.device("cpu"))
    for text in texts:
        [spans] = pipeline.predict([text])
        assert all(" " not in text[s.start:s.end] for s in spans)
    # in one batch (the rule is applied to all rows at once), between empty and blank rows: the same answers
    mixed = ["", texts[0], "  ", texts[1], "我们"]
    assert pipeline.predict(mixed) == [pipeline.predict([t])[0] for t in mixed]
    [forced] = pipeline.predict([texts[0]], forced=[[Span(2, 5)]])
    assert (2, 5) in [(s.start, s.end) for s in forced]


def test_cnn_inference_folds_the_input_layer_into_the_tables(codec):
    """No-grad eval emissions (folded tables) equal the plain path, and follow weight changes."""
    config = TaggerConfig(encoder="cnn", hidden=8, layers=2, unit_dim=6, bigram_dim=4)
    tagger = Tagger(config, codec.num_units, codec.num_bigrams, 4).eval()
    batch = codec.batch(codec.encode(["我爱北京天安门", "北京"]))
    plain = tagger.emissions(batch)  # grad enabled: the unfolded path
    with torch.no_grad():
        assert torch.allclose(tagger.emissions(batch), plain, atol=1e-5)
        first = tagger._folded_tables()
        assert tagger._folded_tables() is first  # cached
        tagger.bigram_embed.weight.mul_(2.0)  # an in-place update (an optimizer step, EMA weights)
        changed = tagger.emissions(batch)
    assert torch.allclose(changed, tagger.emissions(batch), atol=1e-5)
    assert not torch.allclose(changed, plain)
    tagger.train()
    tagger.eval()
    assert "_folded" not in tagger.__dict__


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own
@pytest.mark.parametrize("encoder", ["lstm", "gru"])
def test_int8_rnn_calls_the_packed_overload_directly(codec, encoder, monkeypatch):
    """quantize_int8's LSTM/GRU give what torch's own dynamic int8 modules give, without torch's overload
    fallback (which formats every argument into an error message first)."""
    from torch.ao.quantization import quantize_dynamic

    from seqtag.models.runtime import quantize_int8

    tagger, _ = make_tagger(codec, encoder=encoder)
    tagger.eval()
    stock = quantize_dynamic(tagger, {"encoder"}, dtype=torch.qint8)  # a 4-tag projection stays float
    fast = quantize_int8(tagger)
    assert type(fast.encoder) is not type(stock.encoder) and isinstance(fast.encoder, type(stock.encoder))
    batch = codec.batch(codec.encode(TEXTS))
    with torch.no_grad():
        expected = stock.emissions(batch)

        def no_repr(self, *args, **kwargs):
            raise AssertionError("a tensor was formatted during inference")

        monkeypatch.setattr(torch.Tensor, "__repr__", no_repr)
        got = fast.emissions(batch)
        # a hidden state given explicitly still works (and the padded-input path is torch's own)
        h = torch.zeros(2 * SMALL["layers"], len(TEXTS), SMALL["hidden"])
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.randn(len(TEXTS), 5, fast.encoder.input_size), torch.full((len(TEXTS),), 5), batch_first=True)
        fast.encoder(packed, (h, h) if encoder == "lstm" else h)
    assert torch.equal(got, expected)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own
def test_int8_quantises_the_projection_only_when_it_has_many_tags(codec):
    from seqtag.models.runtime import INT8_MIN_LINEAR_OUT, quantize_int8

    few, _ = make_tagger(codec)
    labels = tuple(f"L{i}" for i in range(INT8_MIN_LINEAR_OUT // 4 + 1))
    many, tags = make_tagger(codec, labels=labels)
    assert len(tags) >= INT8_MIN_LINEAR_OUT
    assert type(quantize_int8(few.eval()).project) is torch.nn.Linear
    assert type(quantize_int8(many.eval()).project) is not torch.nn.Linear


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own
@pytest.mark.parametrize("encoder", ["lstm", "gru"])
def test_int8_per_channel_weights(codec, encoder):
    """per_channel=True: one weight scale per output row, in the RNN and a many-tag projection alike; the
    emissions stay close to float32 ones."""
    from seqtag.models.runtime import INT8_MIN_LINEAR_OUT, quantize_int8

    labels = tuple(f"L{i}" for i in range(INT8_MIN_LINEAR_OUT // 4 + 1))
    tagger, _ = make_tagger(codec, encoder=encoder, labels=labels)
    tagger.eval()
    batch = codec.batch(codec.encode(TEXTS))
    with torch.no_grad():
        want = tagger.emissions(batch)
        schemes = {}
        for per_channel in (False, True):
            q = quantize_int8(copy.deepcopy(tagger), per_channel=per_channel)
            weights = q.encoder.get_weight()
            schemes[per_channel] = ({w.qscheme() for w in weights.values() if w.is_quantized},
                                    q.project.weight().qscheme())
            assert torch.allclose(q.emissions(batch), want, atol=0.05)
    assert schemes[False] == ({torch.per_tensor_affine}, torch.per_tensor_affine)
    assert schemes[True] == ({torch.per_channel_affine}, torch.per_channel_affine)
