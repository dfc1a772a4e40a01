"""The Python client against the real app (TestClient is an httpx.Client)."""

from __future__ import annotations

import pytest

from seqtag.service.client import SeqtagClient, SeqtagError


def test_client_round_trip(client):
    api = SeqtagClient(client=client)
    text = "我们在北京工作。"
    [result] = api.segment(text)
    assert "".join(t["text"] for t in result["tokens"]) == text.replace(" ", "")
    assert all(text[t["start"]:t["end"]] == t["text"] for t in result["tokens"])
    assert len(api.ner([text, ""], scores=True)) == 2
    assert {m["task"] for m in api.models()} >= {"seg", "ner"}
    api.put_dictionary("client-test", ["北京工作"])
    assert api.get_dictionary("client-test")["entries"] == ["北京工作"]
    [forced] = api.segment(text, dictionary="client-test")
    assert "北京工作" in [t["text"] for t in forced["tokens"]]
    api.delete_dictionary("client-test")


def test_client_raises_service_errors(client):
    api = SeqtagClient(client=client)
    with pytest.raises(SeqtagError) as info:
        api.segment("x", model="no-such-model")
    assert info.value.status == 404 and info.value.code == "model_not_found"
