"""Reloading models is safe: a checkpoint that went bad on disk is refused with a clear JSON error
naming the problem while the previous version keeps serving, and a reload during concurrent tagging
fails no request."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file, save_file

from seqtag.service.app import create_app
from tests.service.conftest import assert_error, async_client

SENTENCES = ["我们喜欢图书馆。", "张伟明在北京工作。", "他常常看电影！", "iPhone15很贵"]


# ---- ways a checkpoint goes bad -----------------------------------------------------------------


def _truncate_weights(d: Path, trained) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _truncate_to_nothing(d: Path, trained) -> None:
    (d / "model.safetensors").write_bytes(b"")


def _truncate_header(d: Path, trained) -> None:
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:20])


def _garbage_weights(d: Path, trained) -> None:
    (d / "model.safetensors").write_bytes(os.urandom(4096))


def _corrupt_header_json(d: Path, trained) -> None:
    data = bytearray((d / "model.safetensors").read_bytes())
    data[8:40] = b"#" * 32  # inside the JSON header
    (d / "model.safetensors").write_bytes(bytes(data))


def _huge_header_length(d: Path, trained) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + data[8:])


def _nan_weights(d: Path, trained) -> None:
    """Bytes flipped inside the tensor data: the file parses, the numbers are NaN / inf."""
    state = load_file(str(d / "model.safetensors"))
    state["project.weight"][0, 0] = float("nan")
    state["crf.transitions"][0, 0] = float("inf")
    save_file(state, str(d / "model.safetensors"))


def _wrong_shape(d: Path, trained) -> None:
    shutil.copy(trained["ner"] / "model.safetensors", d / "model.safetensors")


def _missing_tensor(d: Path, trained) -> None:
    state = load_file(str(d / "model.safetensors"))
    del state["project.weight"]
    save_file(state, str(d / "model.safetensors"))


def _extra_tensor(d: Path, trained) -> None:
    state = load_file(str(d / "model.safetensors"))
    state["backdoor.weight"] = state["project.weight"].clone()
    save_file(state, str(d / "model.safetensors"))


def _config_disagrees(d: Path, trained) -> None:
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["tagger"]["hidden"] = config["tagger"]["hidden"] * 2
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _newer_format(d: Path, trained) -> None:
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["format_version"] = 99
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _config_not_json(d: Path, trained) -> None:
    (d / "config.json").write_text('{"format_version": 1, "task": ', encoding="utf-8")


def _config_not_utf8(d: Path, trained) -> None:
    (d / "config.json").write_bytes(b"\xff\xfe\x00garbage")


def _config_wrong_types(d: Path, trained) -> None:
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["tags"] = "BMES"
    config["tagger"] = ["hidden", 16]
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _unknown_task(d: Path, trained) -> None:
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["task"] = "parse"
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _tokenizer_truncated(d: Path, trained) -> None:
    data = (d / "tokenizer.json").read_bytes()
    (d / "tokenizer.json").write_bytes(data[: len(data) // 2])


def _codec_bad_charmap(d: Path, trained) -> None:
    codec = json.loads((d / "codec.json").read_text(encoding="utf-8"))
    codec["charmap"] = {"Ａ": "AA"}  # would move offsets
    (d / "codec.json").write_text(json.dumps(codec), encoding="utf-8")


def _files_from_another_model(d: Path, trained) -> None:
    shutil.copy(trained["ner"] / "tokenizer.json", d / "tokenizer.json")
    shutil.copy(trained["ner"] / "codec.json", d / "codec.json")


class _Exploit:
    """Unpickling this runs code: it would leave a marker file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle was loaded"))


def _pickle_only(d: Path, trained) -> None:
    marker = d.parent.parent / "PWNED"
    (d / "model.safetensors").unlink()
    for name in ("pytorch_model.bin", "model.pt", "model.ckpt"):
        (d / name).write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}))


def _pickle_next_to_garbage(d: Path, trained) -> None:
    _pickle_only(d, trained)
    (d / "model.safetensors").write_bytes(b"\x00" * 16)


def _directory_emptied(d: Path, trained) -> None:
    for p in d.iterdir():
        p.unlink()


def _directory_became_a_file(d: Path, trained) -> None:
    shutil.rmtree(d)
    d.write_text("not a directory", encoding="utf-8")


def _weights_are_a_directory(d: Path, trained) -> None:
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()


def _dangling_symlink(d: Path, trained) -> None:
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").symlink_to(d / "nowhere.safetensors")


DAMAGE: dict[str, tuple[Callable[[Path, dict], None], tuple[str, ...]]] = {
    # name: (what is done to zh-seg on disk, words one of which the error message must contain)
    "truncated weights": (_truncate_weights, ("model.safetensors",)),
    "empty weights": (_truncate_to_nothing, ("model.safetensors",)),
    "truncated header": (_truncate_header, ("model.safetensors",)),
    "random bytes": (_garbage_weights, ("model.safetensors",)),
    "corrupt header": (_corrupt_header_json, ("model.safetensors",)),
    "huge header length": (_huge_header_length, ("model.safetensors",)),
    "NaN weights": (_nan_weights, ("NaN", "finite")),
    "wrong shape": (_wrong_shape, ("do not match",)),
    "missing tensor": (_missing_tensor, ("project.weight",)),
    "extra tensor": (_extra_tensor, ("backdoor.weight",)),
    "config disagrees with weights": (_config_disagrees, ("do not match",)),
    "newer format": (_newer_format, ("newer", "format_version")),
    "config not JSON": (_config_not_json, ("config.json",)),
    "config not UTF-8": (_config_not_utf8, ("config.json",)),
    "config wrong types": (_config_wrong_types, ("config",)),
    "unknown task": (_unknown_task, ("task",)),
    "tokenizer truncated": (_tokenizer_truncated, ("tokenizer", "config")),
    "codec bad charmap": (_codec_bad_charmap, ("charmap",)),
    "files from another model": (_files_from_another_model, ("do not match",)),
    "pickle only": (_pickle_only, ("pickle",)),
    "pickle next to garbage": (_pickle_next_to_garbage, ("model.safetensors",)),
    "directory emptied": (_directory_emptied, ("missing", "not a seqtag checkpoint")),
    "weights are a directory": (_weights_are_a_directory, ("model.safetensors",)),
    "dangling symlink": (_dangling_symlink, ("model.safetensors",)),
}


def tag_all(client) -> list[dict]:
    out = []
    for endpoint in ("segment", "analyze"):
        response = client.post(f"/v1/{endpoint}", json={"texts": SENTENCES, "scores": True})
        assert response.status_code == 200, response.text
        out.append(response.json())
    return out


def listed(client) -> dict:
    body = client.get("/v1/models").json()
    return {m["name"]: m["version"] for m in body["models"]} | {"failed": body["failed"]}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_checkpoint_on_reload_keeps_the_previous_model(make_client, own_models_dir, trained, damage):
    client = make_client(models_dir=own_models_dir)
    before, models_before = tag_all(client), listed(client)
    assert models_before["failed"] == {}
    break_it, words = DAMAGE[damage]
    break_it(own_models_dir / "zh-seg", trained)

    response = client.post("/v1/models/reload")
    error = assert_error(response, 409)
    assert error["code"] == "reload_failed"
    message = error["details"]["failed"]["zh-seg"]
    assert "zh-seg" in error["message"] and "zh-seg" in message
    assert any(w.lower() in message.lower() for w in words), message
    assert "previous version keeps serving" in message
    assert "Traceback" not in response.text and len(message) < 2000
    assert error["details"]["models"] == ["zh-ner", "zh-pos", "zh-seg"]
    assert set(error["details"]["unchanged"]) == {"zh-ner", "zh-pos"} and error["details"]["loaded"] == []

    # the previous version keeps serving, and is still listed (with the failure next to it)
    assert tag_all(client) == before
    now = listed(client)
    assert {k: v for k, v in now.items() if k != "failed"} == {k: v for k, v in models_before.items()
                                                                if k != "failed"}
    assert set(now["failed"]) == {"zh-seg"}
    assert client.get("/readyz").status_code == 200
    assert not (own_models_dir.parent / "PWNED").exists()  # no pickle was ever loaded

    # a second reload with the same damage says the same, and changes nothing
    again = assert_error(client.post("/v1/models/reload"), 409)
    assert again["details"]["failed"]["zh-seg"] == message
    assert tag_all(client) == before

    # repaired on disk: the next reload takes it and clears the failure
    target = own_models_dir / "zh-seg"
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    shutil.copytree(trained["seg"], target)
    fixed = client.post("/v1/models/reload")
    assert fixed.status_code == 200, fixed.text
    assert listed(client)["failed"] == {}
    assert tag_all(client) == before  # same files as at the start: the same answers


def test_bad_checkpoint_at_start_up_is_reported_not_served(make_client, own_models_dir, trained):
    _nan_weights(own_models_dir / "zh-seg", trained)
    _newer_format(own_models_dir / "zh-pos", trained)
    client = make_client(models_dir=own_models_dir)
    body = client.get("/v1/models").json()
    assert [m["name"] for m in body["models"]] == ["zh-ner"]
    assert set(body["failed"]) == {"zh-seg", "zh-pos"}
    assert "newer" in body["failed"]["zh-pos"]
    error = assert_error(client.post("/v1/segment", json={"text": "北京"}), 503)
    assert error["code"] == "no_model"
    assert client.post("/v1/ner", json={"text": "北京"}).status_code == 200


def test_the_finite_weights_check_accepts_int8_models(make_client, own_models_dir, trained):
    """Dynamically quantised models hold packed parameters (not tensors) in their state: the NaN
    check must look past them, not refuse every int8 model."""
    import torch

    if not [e for e in torch.backends.quantized.supported_engines if e != "none"]:
        pytest.skip("no quantised engine in this torch build")
    client = make_client(models_dir=own_models_dir, device="cpu")
    target = own_models_dir / "seg-int8"
    shutil.copytree(trained["seg"], target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    config["inference"] = {"quantize": "int8"}
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    response = client.post("/v1/models/reload")
    assert response.status_code == 200, response.text
    assert response.json()["loaded"] == ["seg-int8"]
    answer = client.post("/v1/segment", json={"text": SENTENCES[0], "model": "seg-int8"})
    assert answer.status_code == 200 and answer.json()["results"][0]["tokens"]
    described = {m["name"]: m["precision"] for m in client.get("/v1/models").json()["models"]}
    assert described["seg-int8"] == "int8" and described["zh-seg"] == "float32"


def test_int8_can_be_switched_off(make_client, own_models_dir, trained):
    """SEQTAG_INT8=false serves a model marked for int8 in float32 (a text's tags then never depend on
    the requests batched with it)."""
    target = own_models_dir / "seg-int8"
    shutil.copytree(trained["seg"], target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    config["inference"] = {"quantize": "int8"}
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    client = make_client(models_dir=own_models_dir, device="cpu", int8=False)
    described = {m["name"]: m["precision"] for m in client.get("/v1/models").json()["models"]}
    assert described["seg-int8"] == "float32"
    answer = client.post("/v1/segment", json={"text": SENTENCES[0], "model": "seg-int8"})
    assert answer.status_code == 200 and answer.json()["results"][0]["tokens"]


def test_a_new_model_that_is_bad_is_not_added(make_client, own_models_dir, trained):
    client = make_client(models_dir=own_models_dir)
    shutil.copytree(trained["seg"], own_models_dir / "seg-new")
    _wrong_shape(own_models_dir / "seg-new", trained)
    error = assert_error(client.post("/v1/models/reload"), 409)
    assert "seg-new" in error["details"]["failed"]
    assert "previous version" not in error["details"]["failed"]["seg-new"]  # there was none
    assert "seg-new" not in error["details"]["models"]
    assert_error(client.post("/v1/segment", json={"text": "北京", "model": "seg-new"}), 404)


def test_checkpoint_replaced_while_it_loads(make_client, own_models_dir, trained, monkeypatch):
    """Files swapped one by one during the load (not an atomic directory rename) could mix two
    checkpoints: the reload notices the content changed under it and keeps the previous version."""
    import seqtag.service.registry
    from seqtag.models.pipeline import Pipeline

    client = make_client(models_dir=own_models_dir)
    before = tag_all(client)
    seg = own_models_dir / "zh-seg"
    shutil.rmtree(seg)
    shutil.copytree(trained["seg2"], seg)
    real_load = Pipeline.load

    def racing_load(directory, *args, **kwargs):
        pipeline = real_load(directory, *args, **kwargs)
        if Path(directory).name == "zh-seg":  # a writer replaces the weights right after we read them
            shutil.copy(trained["seg"] / "model.safetensors", Path(directory) / "model.safetensors")
        return pipeline

    monkeypatch.setattr(seqtag.service.registry.Pipeline, "load", racing_load)
    error = assert_error(client.post("/v1/models/reload"), 409)
    assert "changed on disk while it was being loaded" in error["details"]["failed"]["zh-seg"]
    assert tag_all(client) == before
    monkeypatch.setattr(seqtag.service.registry.Pipeline, "load", real_load)
    assert client.post("/v1/models/reload").status_code == 200  # settled: the next reload takes it


# ---- reloads while requests are running ---------------------------------------------------------------


def test_reloads_during_concurrent_tagging_fail_no_request(make_settings, own_models_dir, trained):
    """Workers tag without pause while the checkpoint is swapped, broken, repaired and reloaded
    several times: every request answers 200, from the old or the new version, never a mix."""
    app = create_app(make_settings(models_dir=own_models_dir, max_wait_ms=1))
    seg = own_models_dir / "zh-seg"

    def swap_to(source: Path) -> None:
        tmp = own_models_dir / ".incoming"
        shutil.copytree(source, tmp)
        old = own_models_dir / ".old"
        os.replace(seg, old)
        os.replace(tmp, seg)
        shutil.rmtree(old)

    async def main():
        async with async_client(app) as http:
            stop = asyncio.Event()
            answers: list = []

            async def worker(k: int) -> None:
                i = 0
                while not stop.is_set():
                    endpoint = ("segment", "analyze", "pos")[(k + i) % 3]
                    body = {"texts": [SENTENCES[(k + i) % 4] * (1 + i % 3), SENTENCES[i % 4]], "scores": i % 2 == 0}
                    answers.append((endpoint, await http.post(f"/v1/{endpoint}", json=body)))
                    i += 1

            workers = [asyncio.create_task(worker(k)) for k in range(6)]
            await asyncio.sleep(0.2)
            reloads = []
            steps = [
                lambda: swap_to(trained["seg2"]),  # a new version
                lambda: _truncate_weights(seg, trained),  # broken in place: the old one stays
                lambda: swap_to(trained["seg"]),  # repaired
                lambda: None,  # nothing changed
                lambda: _newer_format(seg, trained),
                lambda: swap_to(trained["seg2"]),
            ]
            for step in steps:
                await asyncio.to_thread(step)
                reloads.append(await http.post("/v1/models/reload"))
                await asyncio.sleep(0.1)
            # concurrent reloads: serialised by the registry's lock
            reloads.extend(await asyncio.gather(*(http.post("/v1/models/reload") for _ in range(3))))
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*workers)
            final = await http.get("/v1/models")
            return answers, reloads, final

    started = time.monotonic()
    answers, reloads, final = asyncio.run(main())
    failed = [(e, a.status_code, a.text[:200]) for e, a in answers if a.status_code != 200]
    assert not failed, failed
    assert len(answers) > 30, len(answers)
    assert [r.status_code for r in reloads] == [200, 409, 200, 200, 409, 200, 200, 200, 200]
    assert "format_version" in reloads[4].json()["error"]["message"]
    # every answer is internally consistent: valid offsets, one version per answer
    for endpoint, answer in answers:
        body = answer.json()
        assert isinstance(body["version"], (str, dict))
        for result in body["results"]:
            for item in result["tokens"] + result["entities"]:
                assert item["start"] < item["end"]
    seg_versions = {a.json()["version"] for e, a in answers if e == "segment"}
    assert len(seg_versions) == 2, seg_versions  # seg and seg2 were both served
    assert final.json()["failed"] == {}
    assert time.monotonic() - started < 60
