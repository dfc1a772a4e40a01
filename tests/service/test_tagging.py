"""Tagging endpoints through the app: shapes, offsets, scores, batch invariance, long texts."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from seqtag.models.codec import is_space
from seqtag.models.textsplit import split_text
from tests.fixtures import ADVERBS, NOUNS, PRONOUNS, PUNCT, VERBS
from tests.service.conftest import TEXTS, spans_ok

ODD = [
    "",
    " ",
    "\u3000\u3000",
    "我们😀喜欢👨‍👩‍👧音乐",  # emoji and a ZWJ sequence (astral)
    "café cafe\u0301 naïve",  # precomposed and combining marks
    "北京\u3000上海\t广州\n西安",
    "\u200f\u05e9\u05dc\u05d5\u05dd\u200e 世界",  # RTL marks and Hebrew
    "a\x00b\x00中",  # NUL
    "\ufffd\ufffd错误",
    "Ｆｕｌｌ１２３全角！",
    "𠀀𠀁𪚥 rare CJK (astral)",
    "混合English和123.45数字",
    "\U0001F1E8\U0001F1F3 flags \u2028 line sep",
    "ок Русский 日本語 한국어",
]


def post(client, endpoint, **body):
    response = client.post(f"/v1/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def strip_scores(results):
    return [{k: [{f: v for f, v in item.items() if f != "score"} for item in r[k]] for k in r} for r in results]


@pytest.mark.parametrize("endpoint", ["segment", "pos", "ner", "analyze"])
def test_each_endpoint_answers_one_result_per_text_in_order(client, endpoint):
    body = post(client, endpoint, texts=TEXTS)
    assert len(body["results"]) == len(TEXTS)
    for text, result in zip(TEXTS, body["results"]):
        assert set(result) == {"tokens", "entities"}
        spans_ok(text, result["tokens"])
        spans_ok(text, result["entities"])
        if not text.strip():
            assert result == {"tokens": [], "entities": []}
    # order: each result is the one the text gets alone
    for text, result in zip(TEXTS, body["results"]):
        assert post(client, endpoint, text=text)["results"] == [result]


def test_response_shapes_per_endpoint(client):
    text = "我们喜欢图书馆。"
    seg = post(client, "segment", text=text)
    assert seg["model"] == "zh-seg" and isinstance(seg["version"], str) and len(seg["version"]) == 12
    tokens = seg["results"][0]["tokens"]
    assert "".join(t["text"] for t in tokens) == text
    assert all(set(t) == {"text", "start", "end"} for t in tokens)  # no pos, no score keys

    pos = post(client, "pos", text=text)
    assert pos["model"] == "zh-pos"
    assert all(isinstance(t["pos"], str) and t["pos"] for t in pos["results"][0]["tokens"])

    ner = post(client, "ner", texts=["张伟明在北京工作。", "李娜明天去上海。"])
    assert ner["model"] == "zh-ner"
    assert all(r["tokens"] == [] for r in ner["results"])
    entities = [e for r in ner["results"] for e in r["entities"]]
    assert entities, "the tiny NER model should find at least one entity"
    assert all(set(e) == {"text", "label", "start", "end"} and e["label"] in {"PER", "LOC"} for e in entities)

    both = post(client, "analyze", text="张伟明在北京工作。")
    assert both["model"] == {"pos": "zh-pos", "ner": "zh-ner"}
    assert set(both["version"]) == {"pos", "ner"}
    result = both["results"][0]
    assert result["tokens"] == post(client, "pos", text="张伟明在北京工作。")["results"][0]["tokens"]
    assert result["entities"] == post(client, "ner", text="张伟明在北京工作。")["results"][0]["entities"]


def test_named_models(client):
    assert post(client, "segment", text="我们", model="zh-pos")["model"] == "zh-pos"
    tokens = post(client, "segment", text="我们喜欢音乐", model="zh-pos")["results"][0]["tokens"]
    assert all("pos" not in t for t in tokens)  # a pos model used for segmentation: tags dropped
    body = post(client, "analyze", text="我们", model="zh-seg,zh-ner")
    assert body["model"] == {"seg": "zh-seg", "ner": "zh-ner"}


@pytest.mark.parametrize("endpoint", ["segment", "pos", "ner", "analyze"])
def test_offsets_on_odd_unicode(client, endpoint):
    body = post(client, endpoint, texts=ODD, scores=True)
    for text, result in zip(ODD, body["results"]):
        spans_ok(text, result["tokens"])
        spans_ok(text, result["entities"])
        if endpoint in ("segment", "pos", "analyze"):
            # every unit in exactly one token (a word of several units may hold the space between them)
            visible = lambda s: "".join(ch for ch in s if not is_space(ch))  # noqa: E731
            assert visible("".join(t["text"] for t in result["tokens"])) == visible(text)
            ends = [(t["start"], t["end"]) for t in result["tokens"]]
            assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))


def test_lone_surrogates_and_nul_round_trip(client):
    texts = ["a\ud800b中", "\udfff", "x\x00y"]
    raw = json.dumps({"texts": texts})  # ASCII escapes: a lone surrogate is valid JSON
    response = client.post("/v1/segment", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    for text, result in zip(texts, json.loads(response.content)["results"]):
        spans_ok(text, result["tokens"])
        assert result["tokens"]


@pytest.mark.parametrize("endpoint", ["segment", "ner", "analyze"])
def test_utf16_offsets(client, endpoint):
    texts = ["😀我们在北京😀工作。", "𠀀张伟明𪚥去上海。", "无表情符号"]
    plain = post(client, endpoint, texts=texts)
    wide = post(client, endpoint, texts=texts, offsets="utf16")
    for text, a, b in zip(texts, plain["results"], wide["results"]):
        units = text.encode("utf-16-le")
        for key in ("tokens", "entities"):
            assert [x["text"] for x in a[key]] == [x["text"] for x in b[key]]
            for item in b[key]:
                assert units[2 * item["start"]:2 * item["end"]].decode("utf-16-le") == item["text"]
    # astral characters count 2: the last token of the first text ends at len + 2
    last = wide["results"][0]["tokens"] or wide["results"][0]["entities"]
    if endpoint != "ner":
        assert last[-1]["end"] == len(texts[0]) + 2
    # no astral characters: same numbers
    assert plain["results"][2] == wide["results"][2]


def test_scores_only_when_asked_and_between_0_and_1(client):
    for endpoint in ("segment", "pos", "ner", "analyze"):
        without = post(client, endpoint, texts=TEXTS)
        scored = post(client, endpoint, texts=TEXTS, scores=True)
        items = lambda body: [i for r in body["results"] for k in ("tokens", "entities") for i in r[k]]  # noqa: E731
        assert all("score" not in i for i in items(without))
        assert all(0.0 <= i["score"] <= 1.0 for i in items(scored))
        assert strip_scores(scored["results"]) == without["results"]


def _mixed_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(PRONOUNS), rng.choice(ADVERBS), rng.choice(VERBS), rng.choice(NOUNS)]
        out.append("".join(words[: rng.randint(1, 4)]) * rng.randint(1, 3) + rng.choice(PUNCT))
    return out


def test_batch_invariance_together_vs_one_per_request(client):
    texts = _mixed_texts(24, seed=5)
    together = post(client, "analyze", texts=texts, scores=True)["results"]
    alone = [post(client, "analyze", text=t, scores=True)["results"][0] for t in texts]
    assert strip_scores(together) == strip_scores(alone)
    for a, b in zip(together, alone):
        for key in ("tokens", "entities"):
            assert [x["score"] for x in a[key]] == pytest.approx([x["score"] for x in b[key]], abs=1e-5)


def test_batch_invariance_across_batch_sizes(make_client):
    texts = _mixed_texts(40, seed=9)
    one = make_client(max_batch_size=1)
    many = make_client(max_batch_size=64, max_wait_ms=20)
    for endpoint in ("segment", "pos", "ner"):
        a = post(one, endpoint, texts=texts, scores=True)["results"]
        b = post(many, endpoint, texts=texts, scores=True)["results"]
        assert strip_scores(a) == strip_scores(b)


def _long_text(chars: int, seed: int) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    sentences: list[str] = []
    while sum(map(len, sentences)) < chars:
        words = [rng.choice(PRONOUNS), rng.choice(ADVERBS), rng.choice(VERBS), rng.choice(NOUNS)]
        sentences.append("".join(words) + rng.choice(PUNCT))
    return "".join(sentences), sentences


@pytest.mark.parametrize("scores", [False, True])
def test_long_text_is_tagged_in_windows_with_exact_offsets(client, scores):
    text, sentences = _long_text(5000, seed=3)
    assert len(text) >= 5000
    for endpoint in ("segment", "pos", "ner"):
        whole = post(client, endpoint, text=text, scores=scores)["results"][0]
        key = "entities" if endpoint == "ner" else "tokens"
        spans_ok(text, whole[key])
        assert all(("score" in item) == scores for item in whole[key])  # scores travel with joined windows
        if endpoint != "ner":
            assert "".join(t["text"] for t in whole["tokens"]) == text  # covers it exactly, in order
        # the same as tagging each sentence alone, shifted to its place
        pieces = post(client, endpoint, texts=sentences, scores=scores)["results"]
        expected, start = [], 0
        for sentence, result in zip(sentences, pieces):
            for item in result[key]:
                expected.append(item | {"start": item["start"] + start, "end": item["end"] + start})
            start += len(sentence)
        # (scores: equal up to float rounding, which may differ between batch shapes)
        assert [{**i, "score": None} for i in whole[key]] == [{**i, "score": None} for i in expected]
        assert [i.get("score", 0) for i in whole[key]] == pytest.approx([i.get("score", 0) for i in expected],
                                                                         abs=1e-5)


def test_long_text_without_sentence_ends_uses_fixed_windows(client):
    rng = random.Random(4)
    text = "".join(rng.choice("".join(NOUNS + VERBS)) for _ in range(5000)) + " iPhone15 " + "我们" * 100
    whole = post(client, "segment", text=text)["results"][0]["tokens"]
    spans_ok(text, whole)
    assert "".join(t["text"] for t in whole).replace(" ", "") == text.replace(" ", "")
    windows = split_text(text, 256)
    assert len(windows) > 15
    alone = post(client, "segment", texts=[text[a:b] for a, b in windows])["results"]
    expected = [t | {"start": t["start"] + a, "end": t["end"] + a}
                for (a, _), r in zip(windows, alone) for t in r["tokens"]]
    assert whole == expected


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_offsets_property(client, texts):
    raw = json.dumps({"texts": texts, "offsets": "codepoints"})
    response = client.post("/v1/analyze", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    for text, result in zip(texts, json.loads(response.content)["results"]):
        spans_ok(text, result["tokens"])
        spans_ok(text, result["entities"])
        starts = [t["start"] for t in result["tokens"]]
        assert starts == sorted(starts)


def test_pipeline_with_a_window_answers_as_the_service(client, models_dir):
    """``Pipeline.predict(..., window=SEQTAG_WINDOW_UNITS)`` (what ``seqtag predict`` does) cuts texts as the
    service does, so a text gets the same spans from the command line, Python and HTTP."""
    from seqtag.models.pipeline import Pipeline

    long_text, _ = _long_text(1500, seed=5)
    texts = ["张伟明在北京工作。李娜明天去上海！他常常看电影", long_text, "", "  ", "我们。。"]
    rng = random.Random(6)
    texts.append("".join(rng.choice("".join(NOUNS + VERBS)) for _ in range(700)))  # no sentence end at all
    for endpoint, name in (("segment", "zh-seg"), ("pos", "zh-pos"), ("ner", "zh-ner")):
        pipeline = Pipeline.load(models_dir / name, device="cpu")
        key = "entities" if endpoint == "ner" else "tokens"
        served = [[(i["start"], i["end"], i.get("pos") or i.get("label") or "") for i in r[key]]
                  for r in post(client, endpoint, texts=texts)["results"]]
        local = [[(s.start, s.end, s.label) for s in spans] for spans in pipeline.predict(texts, window=256)]
        assert local == served, endpoint
        assert sum(map(len, served)) > 100 and (endpoint == "segment" or all(lab for r in served for *_, lab in r))
