"""Lexicon features: which lexicon words cover each unit, by position and type, computed on flat arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqtag.models.checkpoint import build_tagger, load_checkpoint, save_checkpoint, ModelMeta
from seqtag.models.codec import Codec, CodecConfig
from seqtag.models.dictionary import DictionaryError
from seqtag.models.lexicon import Lexicon, LexiconSource, group_of
from seqtag.models.pipeline import Pipeline
from seqtag.models.schemes import TagScheme, tag_vocabulary
from seqtag.models.tagger import TaggerConfig

TEXTS = ["北京大学生在杭州工作", "我喜欢iPhone15手机", "张三 丰在 北京"]
ENTRIES = [("北京", "ns"), ("北京大学", "nt"), ("大学生", "n"), ("杭州", "ns"), ("张三丰", "nr"), ("iphone15", ""),
           ("工作", "vn"), ("学", "")]


def _codec(typed: bool = True) -> Codec:
    codec = Codec.build(TEXTS, CodecConfig(lexicon_typed=typed))
    codec.set_lexicon(ENTRIES, LexiconSource("test", "CC0", len(ENTRIES)))
    return codec


def _names(codec: Codec, bits: int) -> set[str]:
    return {name for i, name in enumerate(codec.lexicon.feature_names) if bits >> i & 1}


def _brute_force(codec: Codec, text: str) -> list[set[str]]:
    """Every lexicon word at every unit position, found by comparing strings."""
    enc = codec.encode([text])
    offsets = enc.offsets[0]
    normed = codec.normalize(text)
    lex = codec.lexicon
    out: list[set[str]] = [set() for _ in offsets]
    for i in range(len(offsets)):
        for j in range(i, len(offsets)):
            word = normed[offsets[i, 0] : offsets[j, 1]]
            mask = lex.words.get(word, 0)
            for g, group in enumerate(lex.groups):
                if not mask >> g & 1:
                    continue
                if i == j:
                    out[i].add(f"S-{group}")
                    continue
                out[i].add(f"B-{group}")
                out[j].add(f"E-{group}")
                for k in range(i + 1, j):
                    out[k].add(f"M-{group}")
    return out


def test_features_match_a_brute_force_search():
    codec = _codec()
    enc = codec.encode(TEXTS)
    for k, text in enumerate(TEXTS):
        got = [_names(codec, int(b)) for b in enc.lexicon[k]]
        assert got == _brute_force(codec, text), text


def test_typed_groups_come_from_the_tags():
    codec = _codec()
    bits = codec.encode(["北京大学生"]).lexicon[0]
    assert _names(codec, int(bits[0])) == {"B-LOC", "B-ORG"}  # 北京 (ns), 北京大学 (nt)
    assert _names(codec, int(bits[3])) == {"S-WORD", "E-ORG", "M-WORD"}  # 学; end of 北京大学; inside 大学生
    assert group_of("nrfg", True) == "PER" and group_of("nz", True) == "WORD" and group_of("nr", False) == "WORD"


def test_untyped_lexicon_has_four_features():
    codec = _codec(typed=False)
    assert codec.num_lexicon_features == 4
    assert _names(codec, int(codec.encode(["杭州"]).lexicon[0][0])) == {"B-WORD"}


def test_words_do_not_match_across_whitespace_or_texts():
    codec = _codec()
    enc = codec.encode(["张三 丰", "北", "京"])
    assert not any(enc.flat_lexicon)  # 张三丰 split by a space; 北|京 in two texts


def test_latin_runs_match_as_normalised_units():
    codec = _codec()
    bits = codec.encode(["买ＩＰＨＯＮＥ１５"]).lexicon[0]  # full width, upper case: normalised to iphone15
    assert _names(codec, int(bits[1])) == {"S-WORD"}


def test_the_array_and_tokenizer_paths_agree():
    codec = _codec()
    short = codec.encode(["北京大学生"])  # under the array splitter's threshold: the tokenizer
    long = codec.encode(["北京大学生" + "。" * 80])
    np.testing.assert_array_equal(short.lexicon[0], long.lexicon[0][:5])


def test_soft_overlay_adds_bits_and_leaves_the_stored_index_alone():
    codec = _codec()
    plain = codec.encode(["马云在杭州"]).flat_lexicon
    soft = codec.soft_lexicon([("马云", "PER")])
    with_soft = codec.encode(["马云在杭州"], soft).flat_lexicon
    assert _names(codec, int(with_soft[0])) == {"B-PER"} and _names(codec, int(with_soft[1])) == {"E-PER"}
    np.testing.assert_array_equal(with_soft[2:], plain[2:])
    assert "马云" not in codec.lexicon.words
    np.testing.assert_array_equal(codec.encode(["马云在杭州"]).flat_lexicon, plain)


def test_soft_lexicon_needs_a_lexicon():
    codec = Codec.build(TEXTS, CodecConfig())
    assert codec.encode(TEXTS).flat_lexicon is None
    with pytest.raises(ValueError, match="without lexicon features"):
        codec.soft_lexicon(["马云"])


def test_lexicon_round_trips_through_json():
    codec = _codec()
    again = Lexicon.from_json(codec.lexicon.to_json())
    assert again.words == codec.lexicon.words and again.groups == codec.lexicon.groups
    assert again.sources[0].as_dict() == {"name": "test", "licence": "CC0", "words": len(ENTRIES)}


@pytest.mark.parametrize("data", [{"groups": ["PER"], "words": {}}, {"groups": ["WORD"], "words": {"4": "x"}}])
def test_malformed_lexicon_json_is_refused(data):
    with pytest.raises(ValueError):
        Lexicon.from_json(data)


def _pipeline(codec: Codec, tmp_path, task: str = "seg") -> Pipeline:
    scheme = TagScheme.BMES
    tags = tag_vocabulary(scheme, [""], outside=False)
    tagger = build_tagger(TaggerConfig(unit_dim=8, bigram_dim=4, hidden=8, lexicon_dim=4), codec, scheme, tags)
    with torch.no_grad():  # the lexicon decides: a word's first unit is B, its last E, a single S
        tagger.lexicon_proj.weight.zero_()
        tagger.lexicon_proj.bias.zero_()
    save_checkpoint(tmp_path / "m", tagger, codec, ModelMeta(task, scheme, tags, seen={"北京"}))
    return Pipeline.load(tmp_path / "m", device="cpu")


def test_checkpoint_stores_the_lexicon_and_the_training_words(tmp_path):
    codec = _codec()
    pipeline = _pipeline(codec, tmp_path)
    assert (tmp_path / "m" / "lexicon.json").exists()
    assert pipeline.codec.lexicon.words == codec.lexicon.words
    assert pipeline.tagger.use_lexicon and pipeline.meta.seen == {"北京"}
    _, again, meta = load_checkpoint(tmp_path / "m")
    np.testing.assert_array_equal(again.encode(TEXTS).flat_lexicon, codec.encode(TEXTS).flat_lexicon)


def test_the_tagger_reads_the_features(tmp_path):
    pipeline = _pipeline(_codec(), tmp_path)
    enc = pipeline.codec.encode(["马云在杭州"])
    batch = pipeline.codec.batch(enc)
    with torch.no_grad():
        pipeline.tagger.lexicon_proj.bias.fill_(0.5)
        pipeline.tagger.lexicon_proj.weight.normal_()
        before = pipeline.tagger.emissions(batch)
        batch.lexicon = torch.zeros_like(batch.lexicon)
        after = pipeline.tagger.emissions(batch)
    assert not torch.allclose(before, after)


def test_soft_mode_in_predict(tmp_path):
    pipeline = _pipeline(_codec(), tmp_path)
    with torch.no_grad():
        pipeline.tagger.lexicon_proj.weight.normal_()
    text = "马云在杭州"
    plain = pipeline.predict([text])
    hard = pipeline.predict([text], dictionary=["马云在"])
    assert (0, 3) in [(s.start, s.end) for s in hard[0]]  # hard always wins
    soft = pipeline.predict([text], dictionary=["马云在"], dictionary_mode="soft")
    assert soft == pipeline.predict([text], dictionary=pipeline.soft_lexicon(["马云在"]))
    assert pipeline.predict([text], dictionary=[], dictionary_mode="soft") == plain
    # soft evidence goes through the model: with the lexicon's weights at zero, it changes nothing
    with torch.no_grad():
        pipeline.tagger.lexicon_proj.weight.zero_()
    assert pipeline.predict([text], dictionary=["马云在"], dictionary_mode="soft") == pipeline.predict([text])


def test_soft_mode_without_a_lexicon_is_a_dictionary_error(tmp_path):
    codec = Codec.build(TEXTS, CodecConfig())
    scheme = TagScheme.BMES
    tags = tag_vocabulary(scheme, [""], outside=False)
    tagger = build_tagger(TaggerConfig(unit_dim=8, bigram_dim=4, hidden=8), codec, scheme, tags)
    assert not tagger.use_lexicon
    save_checkpoint(tmp_path / "m", tagger, codec, ModelMeta("seg", scheme, tags))
    pipeline = Pipeline.load(tmp_path / "m", device="cpu")
    with pytest.raises(DictionaryError, match="without lexicon features"):
        pipeline.predict(["马云"], dictionary=["马云"], dictionary_mode="soft")


def test_a_segmenter_uses_a_labelled_entry_s_word(tmp_path):
    pipeline = _pipeline(_codec(), tmp_path)
    got = pipeline.predict(["马云在杭州"], dictionary=[("马云在", "nr")])
    assert (0, 3) in [(s.start, s.end) for s in got[0]]


def test_a_later_typed_entry_re_types_a_word():
    """A curated gazetteer listed after jieba corrects jieba's loose tags (巴格达 tagged nr is a place); an
    untyped entry only adds its bit, and a word's plain-word bit survives a re-typing."""
    codec = _codec()
    codec.set_lexicon([("张三丰", "LOC"), ("工作", "LOC"), ("杭州", ""), ("北京", "nt")])
    words, groups = codec.lexicon.words, codec.lexicon.groups

    def named(word: str) -> set[str]:
        return {g for i, g in enumerate(groups) if words[word] >> i & 1}

    assert named("张三丰") == {"LOC"}  # was PER
    assert named("工作") == {"WORD", "LOC"}  # jieba's vn made it a plain word
    assert named("杭州") == {"LOC", "WORD"}  # untyped: added
    assert named("北京") == {"ORG"}
    codec.set_lexicon([("北京", "ns"), ("北京", "nt")])  # within one call, the tags add up
    assert named("北京") == {"LOC", "ORG"}


def test_jionlp_places_reads_the_package_s_files_without_importing_it(tmp_path, monkeypatch):
    import zipfile

    from seqtag.models import lexicon as lexicon_module

    folder = tmp_path / "jionlp" / "dictionary"
    folder.mkdir(parents=True)
    (folder / "world_location.txt").write_text("亚洲:\n伊拉克\t伊拉克共和国\t巴格达\t巴士拉/摩苏尔\n", encoding="utf-8")
    china = "甘肃省\t620000\t甘肃\n\t武威市\t620600\t武威\n\t\t凉州区\t620602\t凉州\n\t\t\t某某镇\n\t\t\t\t某某村\n"
    with zipfile.ZipFile(folder / "china_location.zip", "w") as archive:
        archive.writestr("china_location.txt", china)
    monkeypatch.setattr(lexicon_module, "_package_dir", lambda name, hint: tmp_path / "jionlp")
    entries, source = lexicon_module.lexicon_entries("jionlp-places")
    assert {w for w, _ in entries} == {"伊拉克", "伊拉克共和国", "巴格达", "巴士拉", "摩苏尔", "甘肃省", "甘肃", "武威市",
                                        "武威", "凉州区", "凉州"}
    assert {t for _, t in entries} == {"LOC"} and source.licence == "Apache-2.0" and source.words == 11


def test_jionlp_places_without_the_package_says_what_to_install(monkeypatch):
    import importlib.util

    from seqtag.models.lexicon import lexicon_entries

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="pip install jionlp"):
        lexicon_entries("jionlp-places")
