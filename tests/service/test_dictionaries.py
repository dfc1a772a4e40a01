"""User dictionaries: forcing words, tags and entities; stored dictionaries; the admin token."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from seqtag.service.app import create_app
from tests.service.conftest import assert_error, spans_ok

SENTENCE = "我们喜欢图书馆。"
PERSON = "张伟明在北京工作。"


def tag(client, endpoint, text, dictionary=None, **extra):
    body = {"text": text, **extra}
    if dictionary is not None:
        body["dictionary"] = dictionary
    response = client.post(f"/v1/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    spans_ok(text, result["tokens"])
    spans_ok(text, result["entities"])
    return result


def words(result):
    return [(t["text"], t["start"], t["end"]) for t in result["tokens"]]


def test_segmentation_forced_and_restored(client):
    baseline = tag(client, "segment", SENTENCE)
    assert ("喜欢图书馆", 2, 7) not in words(baseline)
    forced = tag(client, "segment", SENTENCE, ["喜欢图书馆"])
    assert ("喜欢图书馆", 2, 7) in words(forced)
    assert tag(client, "segment", SENTENCE) == baseline  # without the entry: the model's own output
    assert tag(client, "segment", SENTENCE, []) == baseline


def test_overlapping_entries_leftmost_longest(client):
    longest = tag(client, "segment", SENTENCE, ["喜欢图", "喜欢图书馆", "图书"])
    assert ("喜欢图书馆", 2, 7) in words(longest)
    leftmost = tag(client, "segment", SENTENCE, ["图书馆。", "喜欢图"])
    assert ("喜欢图", 2, 5) in words(leftmost)
    assert all(w[0] != "图书馆。" for w in words(leftmost))  # overlapped an earlier match: skipped


def test_entries_are_matched_on_normalised_text(client):
    text = "我们喜欢ＡＢＣ电脑"
    result = tag(client, "segment", text, ["abc电脑"])
    assert ("ＡＢＣ电脑", 4, 9) in words(result)


def test_entry_off_unit_boundaries_is_skipped(client):
    text = "他买iPhone15很贵"
    baseline = tag(client, "segment", text)
    assert tag(client, "segment", text, ["Phone"]) == baseline  # half a Latin run: not forced, no error
    assert ("iPhone15", 2, 10) in words(tag(client, "segment", text, ["iPhone15"]))


def test_pos_forced_with_a_tag(client):
    baseline = tag(client, "pos", SENTENCE)
    result = tag(client, "pos", SENTENCE, [{"text": "我们", "label": "VERB"}, {"text": "图书馆", "label": "NOUN"}])
    tokens = {(t["text"], t["start"]): t["pos"] for t in result["tokens"]}
    assert tokens[("我们", 0)] == "VERB"
    assert tokens[("图书馆", 4)] == "NOUN"
    # an entry without a label forces the word only
    plain = tag(client, "pos", SENTENCE, ["喜欢"])
    assert ("喜欢", 2, 4) in words(plain)
    assert tag(client, "pos", SENTENCE) == baseline


def test_ner_forced_with_a_label_and_without(client):
    baseline = tag(client, "ner", PERSON)
    result = tag(client, "ner", PERSON, [{"text": "在北京", "label": "PER"}, "工作"])
    entities = {(e["text"], e["start"], e["end"]): e["label"] for e in result["entities"]}
    assert entities[("在北京", 3, 6)] == "PER"
    assert entities[("工作", 6, 8)] in {"PER", "LOC"}
    assert tag(client, "ner", PERSON) == baseline


def test_analyze_routes_entries_by_label(client):
    result = tag(client, "analyze", PERSON, ["明在北", {"text": "工作", "label": "LOC"}, {"text": "张伟", "label": "VERB"}])
    assert ("明在北", 2, 5) in words(result)  # plain entry: a word
    assert {"text": "工作", "label": "LOC", "start": 6, "end": 8} in result["entities"]
    assert {"text": "张伟", "start": 0, "end": 2, "pos": "VERB"} in result["tokens"]
    assert not any(e["text"] == "明在北" for e in result["entities"])  # plain entries are not entities
    error = assert_error(client.post("/v1/analyze", json={"text": PERSON, "dictionary": [
        {"text": "工作", "label": "NOPE"}]}), 422)
    assert "NOPE" in error["message"]


@pytest.mark.parametrize("endpoint,label", [("pos", "PER"), ("ner", "NOUN")])
def test_label_not_in_the_models_labels_is_422(client, endpoint, label):
    response = client.post(f"/v1/{endpoint}", json={"text": PERSON, "dictionary": [{"text": "北京", "label": label}]})
    error = assert_error(response, 422)
    assert label in error["message"]


def test_a_segmenter_takes_a_labelled_entry_s_word(client):
    """A seg model has no labels: a labelled entry (jieba's "word FREQ TAG") forces its word."""
    response = client.post("/v1/segment", json={"text": PERSON, "model": "zh-seg",
                                                "dictionary": [{"text": "明在北", "label": "NOUN"}]})
    assert response.status_code == 200
    assert ("明在北", 2, 5) in words(response.json()["results"][0])


@pytest.mark.parametrize("entries", [[""], ["  "], [" 北京"], ["x" * 65], [{"text": ""}], [{"label": "PER"}],
                                     [{"text": "北京", "extra": 1}], [3], "bad/name", {"a": 1}])
def test_bad_dictionaries_are_4xx(client, entries):
    response = client.post("/v1/segment", json={"text": PERSON, "dictionary": entries})
    assert_error(response, (404, 422))


def test_stored_dictionary_lifecycle(make_client, make_settings, tmp_path):
    client = make_client()
    directory = make_settings().dictionaries_path
    assert client.get("/v1/dictionaries").json() == {"dictionaries": []}
    assert_error(client.post("/v1/segment", json={"text": SENTENCE, "dictionary": "mine"}), 404)

    entries = ["喜欢图书馆", {"text": "我们", "label": "VERB"}]
    created = client.put("/v1/dictionaries/mine", json={"entries": entries})
    assert created.status_code == 201, created.text
    saved = json.loads((directory / "mine.json").read_text(encoding="utf-8"))
    assert saved["entries"] == entries
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temp files left

    assert client.get("/v1/dictionaries").json() == {"dictionaries": ["mine"]}
    assert client.get("/v1/dictionaries/mine").json() == {"name": "mine", "entries": entries}
    pos = tag(client, "pos", SENTENCE, "mine")
    assert {"text": "我们", "start": 0, "end": 2, "pos": "VERB"} in pos["tokens"]
    assert ("喜欢图书馆", 2, 7) in words(pos)
    # a stored label the model lacks is the same 422 as an inline one
    assert_error(client.post("/v1/ner", json={"text": SENTENCE, "dictionary": "mine"}), 422)
    # a segmenter takes the stored entries' words (it has no labels to check)
    assert ("我们", 0, 2) in words(tag(client, "segment", SENTENCE, "mine"))

    replaced = client.put("/v1/dictionaries/mine", json={"entries": ["图书馆"]})
    assert replaced.status_code == 200
    result = tag(client, "segment", SENTENCE, "mine")
    assert ("图书馆", 4, 7) in words(result) and ("喜欢图书馆", 2, 7) not in words(result)

    # persisted: a new app on the same directory sees it
    with TestClient(create_app(make_settings())) as other:
        assert other.get("/v1/dictionaries/mine").json()["entries"] == ["图书馆"]

    assert client.delete("/v1/dictionaries/mine").status_code == 204
    assert not (directory / "mine.json").exists()
    assert_error(client.get("/v1/dictionaries/mine"), 404)
    assert_error(client.delete("/v1/dictionaries/mine"), 404)
    assert_error(client.post("/v1/segment", json={"text": SENTENCE, "dictionary": "mine"}), 404)
    assert tag(client, "segment", SENTENCE) == tag(client, "segment", SENTENCE, [])


def test_stored_dictionary_bad_bodies(client):
    assert_error(client.put("/v1/dictionaries/d1", json={"entries": [""]}), 422)
    assert_error(client.put("/v1/dictionaries/d1", json={"entries": "x"}), 422)
    assert_error(client.put("/v1/dictionaries/d1", json=["x"]), 422)
    assert_error(client.put("/v1/dictionaries/d1", content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error(client.put("/v1/dictionaries/d1", content=b"x", headers={"content-type": "application/xml"}), 415)
    assert_error(client.put("/v1/dictionaries/d1", content=b"x"), 415)
    assert_error(client.put("/v1/dictionaries/d1", json={"entries": ["x"], "other": 1}), 422)
    assert_error(client.put("/v1/dictionaries/d1", json={"entries": [{"text": "x", "label": 5}]}), 422)


def test_stored_dictionary_from_dictionary_lines(client):
    """text/plain: the lines `seqtag predict --dictionary` reads (word, word LABEL, jieba's word FREQ TAG, tabs
    when a word has spaces, # comments); stored and answered as JSON entries."""
    lines = "\ufeff# brands\n华星公司 ORG\n\n阿里云 100 nz\r\n图书馆\t3\nNew York\tLOC\n"
    created = client.put("/v1/dictionaries/lines", content=lines.encode("utf-8"),
                         headers={"content-type": "text/plain; charset=utf-8"})
    assert created.status_code in (200, 201), created.text
    expected = [{"text": "华星公司", "label": "ORG"}, {"text": "阿里云", "label": "nz"}, "图书馆",
                {"text": "New York", "label": "LOC"}]
    assert created.json()["entries"] == expected
    assert client.get("/v1/dictionaries/lines").json()["entries"] == expected
    error = assert_error(client.put("/v1/dictionaries/lines", content="a\nb c d\n".encode("utf-8"),
                                    headers={"content-type": "text/plain"}), 422)
    assert "line 2" in error["message"]
    error = assert_error(client.put("/v1/dictionaries/lines", content=b"\xff\xfe\x00",
                                    headers={"content-type": "text/plain"}), 400)
    assert "UTF-8" in error["message"]
    assert client.get("/v1/dictionaries/lines").json()["entries"] == expected  # a refused body changes nothing


def test_stored_dictionary_size_limit(make_client):
    client = make_client(max_dictionary_entries=3)
    for body, headers in ((b"a\nb\nc\nd\ne\n", {"content-type": "text/plain"}),
                          (b'{"entries": ["a", "b", "c", "d"]}', {"content-type": "application/json"})):
        assert_error(client.put("/v1/dictionaries/big", content=body, headers=headers), 413)
    assert client.put("/v1/dictionaries/big", content=b"a\nb\nc\n", headers={"content-type": "text/plain"}
                      ).status_code == 201


@pytest.mark.parametrize("name", ["..", ".hidden", "a" * 65, "-x", "a b", "ü", "x%2F..%2F..%2Fetc", "..%2Fetc"])
def test_path_traversal_and_bad_names_rejected(client, name, tmp_path):
    for method in ("get", "put", "delete"):
        kwargs = {"json": {"entries": ["北京"]}} if method == "put" else {}
        response = getattr(client, method)(f"/v1/dictionaries/{name}", **kwargs)
        assert_error(response, (404, 405, 422))
    assert_error(client.post("/v1/segment", json={"text": "a", "dictionary": "../etc/passwd"}), 422)
    assert_error(client.post("/v1/segment", json={"text": "a", "model": "../zh-seg"}), 422)
    assert_error(client.post("/v1/segment", json={"text": "a", "model": "zh-seg/../zh-seg"}), 422)


def test_admin_token(make_client):
    client = make_client(admin_token="s3cret-token")
    requests = [
        ("post", "/v1/models/reload", {}),
        ("get", "/v1/dictionaries", {}),
        ("put", "/v1/dictionaries/adm", {"json": {"entries": ["北京"]}}),
        ("get", "/v1/dictionaries/adm", {}),
        ("delete", "/v1/dictionaries/adm", {}),
    ]
    for method, path, kwargs in requests:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Basic s3cret-token"}, {"Authorization": "Bearer "}):
            response = getattr(client, method)(path, headers=headers, **kwargs)
            error = assert_error(response, 401)
            assert "s3cret" not in json.dumps(error)
            assert response.headers.get("www-authenticate") == "Bearer"
        ok = getattr(client, method)(path, headers={"Authorization": "Bearer s3cret-token"}, **kwargs)
        assert ok.status_code in (200, 201, 204), (path, ok.text)
    # tagging needs no token, even with a stored dictionary
    assert client.post("/v1/segment", json={"text": "北京"}).status_code == 200


@pytest.mark.parametrize("entries", [[1], [None], [["a", "b", "c"]], "not a list"])
def test_hand_edited_stored_dictionary_is_a_clear_error(make_client, make_settings, entries):
    """A stored file edited by hand into something that is not entries: 422 naming the problem, never a 500."""
    client = make_client()
    assert client.put("/v1/dictionaries/edited", json={"entries": ["图书馆"]}).status_code == 201
    path = make_settings().dictionaries_path / "edited.json"
    path.write_text(json.dumps({"name": "edited", "entries": entries}), encoding="utf-8")
    for response in (client.post("/v1/segment", json={"text": SENTENCE, "dictionary": "edited"}),
                     client.get("/v1/dictionaries/edited")):
        assert response.status_code in (404, 422), response.text
        assert response.json()["error"]["message"]
