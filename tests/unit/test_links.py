"""Links, e-mail addresses and clock times: found in the text (:func:`models.textsplit.find_links`) and kept
whole by segmentation and POS models, through the one engine (Python, CLI, service)."""

from __future__ import annotations

import pytest

from seqtag.models.pipeline import Pipeline
from seqtag.models.spans import Span
from seqtag.models.textsplit import find_links, split_text
from tests.fixtures import words

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, found", [
    ("访问http://weibo.com/1675718025/xkexFsnzO。", ["http://weibo.com/1675718025/xkexFsnzO"]),
    ("原文地址http //weibo.com/16/xk 原文", ["//weibo.com/16/xk"]),  # a scheme-less link
    ("原文地址http//weibo.com/16/xk原文", ["//weibo.com/16/xk"]),  # a scheme that lost its colon keeps "//" apart
    ("///weibo.com", ["weibo.com"]),  # "//" after "/" starts no link
    ("我爱你//@吴水果:能不能", ["//@吴水果"]),  # a repost's mention, closed by its colon
    ("@秦丹DANNY 你好，回复＠李四：好", ["@秦丹DANNY", "＠李四"]),
    ("转发 @张三", ["@张三"]),  # at the text's end, after whitespace
    ("我们@10:30开会", ["10:30"]),  # a clock time's colon closes no mention
    ("http://t.cn/abc//@张三:好", ["http://t.cn/abc", "//@张三"]),  # a path stops before a repost's "//@"
    ("//@吴水果能不能", []),  # run into the text: where it ends is the model's to find
    ("我@张三", []),
    ("a@b 好", []),  # no mention inside a word
    ("看www.baidu.com/s?wd=1,谢谢", ["www.baidu.com/s?wd=1"]),
    ("见 https://example.org:8080/a_b-c~d.html. 吧", ["https://example.org:8080/a_b-c~d.html"]),
    ("Priceline.com公司", ["Priceline.com"]),
    ("www.y2kmfg.gov.tw.", ["www.y2kmfg.gov.tw"]),  # a full stop after a link is not part of it
    ("发邮件到 zhang.san@163.com 吧", ["zhang.san@163.com"]),
    ("ｔｏｍ．ｃｏｍ和ｍａｉｌ＠ｔｏｍ．ｃｏｍ", ["ｔｏｍ．ｃｏｍ", "ｍａｉｌ＠ｔｏｍ．ｃｏｍ"]),  # fullwidth, as CTB6 writes
    ("晚上19:45见，7:05:30到", ["19:45", "7:05:30"]),
    ("１９：４５", ["１９：４５"]),
    ("时间：19:45", ["19:45"]),
    ("19:45-20:30", ["19:45", "20:30"]),
    ("比分6:3，以2:1获胜，98:87", []),  # scores and ratios are the model's (CTB6 writes them apart)
    ("箴28:11", []),  # no hour 28
    ("12:345", []),
    ("v1.2版本涨了3.14%", []),  # versions and decimals are no links
    ("a.b和c@d", []),  # no known top-level domain, no host with a dot
    ("", []),
    ("我们喜欢图书馆。", []),
])
def test_find_links(text, found):
    spans = find_links([text]).get(0, [])
    assert [text[a:b] for a, b in spans] == found


def test_sentence_ends_and_windows_never_cut_a_link():
    text = "你好吗？看www.baidu.com/s?wd=1!真的！"
    assert [text[a:b] for a, b in split_text(text, 256)] == ["你好吗？", "看www.baidu.com/s?wd=1!", "真的！"]
    text = "一二三四五六七八九十看a.cn/s?q=1"
    assert [text[a:b] for a, b in split_text(text, 16)] == ["一二三四五六七八九十看", "a.cn/s?q=1"]
    text = "一二三四五六七八九十看www.baidu.com/s?wd=1"  # a link longer than the window is cut after all
    assert max(b - a for a, b in split_text(text, 16)) <= 16


def test_find_links_maps_hits_to_their_texts():
    texts = ["没有", "a@b.cn", "", "中文 www.x.cn", "12:30", "无"]
    found = find_links(texts)
    assert sorted(found) == [1, 3, 4]
    assert found[1] == [(0, 6)] and found[3] == [(3, 11)] and found[4] == [(0, 5)]


@pytest.fixture(scope="module")
def seg(shipped_model) -> Pipeline:
    return shipped_model("zh-seg")


@pytest.fixture(scope="module")
def pos(shipped_model) -> Pipeline:
    return shipped_model("zh-pos")


TEXTS = ["原文地址http://weibo.com/1675718025/xkexFsnzO请关注", "来信请寄zhang.san@163.com谢谢",
         "晚上19:45在北京见", "访问ｗｗｗ．ｂａｉｄｕ．ｃｏｍ。", "搜索www.baidu.com/s?wd=1!看看", "我们喜欢图书馆。"]
LINKS = ["http://weibo.com/1675718025/xkexFsnzO", "zhang.san@163.com", "19:45", "ｗｗｗ．ｂａｉｄｕ．ｃｏｍ",
         "www.baidu.com/s?wd=1"]


@pytest.mark.parametrize("model", ["seg", "pos"])
def test_word_models_keep_links_whole(model, request):
    pipeline = request.getfixturevalue(model)
    found = words(TEXTS, pipeline.predict(TEXTS))
    for link, text_words in zip(LINKS, found):
        assert link in text_words, text_words
    # the same through every way in: windows (the service's and the CLI's), batches of one, threads
    assert pipeline.predict(TEXTS, window=64) == pipeline.predict(TEXTS)
    assert pipeline.predict_table(TEXTS, max_batch=1, workers=2).to_lists() == pipeline.predict(TEXTS)


def test_the_caller_s_words_win_over_a_link(seg):
    text = ["来信请寄zhang.san@163.com谢谢"]
    # a dictionary word, or a forced span, overlapping the address: the caller's word is kept, the link dropped
    out = words(text, seg.predict(text, dictionary=["寄zhang"]))[0]
    assert "寄zhang" in out and "zhang.san@163.com" not in out
    forced = [[Span(4, 9, "")]]
    out = words(text, seg.predict(text, forced=forced))[0]
    assert "zhang" in out and "zhang.san@163.com" not in out


def test_entity_models_do_not_force_links(shipped_model):
    ner = shipped_model("zh-ner")
    assert all(s.end - s.start < 10 for r in ner.predict(TEXTS) for s in r)


def test_a_clock_time_is_only_kept_from_being_cut(seg):
    """A link, or a clock time, is forced as a word of its own; a time before 分 or 秒 only inside one, so
    that CTB6's one-word "０：０２分" stays within the model's reach (models.schemes.JOINED)."""
    from seqtag.models import engine
    from seqtag.models.schemes import JOINED

    texts = ["比赛于０：０２分开始", "见http://a.cn/x吧，19:45见"]
    _, forced = engine.encode_texts(seg.codec, engine.prepare(texts, None), links=True)
    assert [(texts[i][s.start:s.end], s.label) for i in range(2) for s in forced[i]] == [
        ("０：０２", JOINED), ("http://a.cn/x", ""), ("19:45", "")]
    assert any("０：０２" in w for w in words(texts[:1], seg.predict(texts[:1]))[0])  # within one word
