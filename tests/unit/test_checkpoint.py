"""Checkpoint directories: round trip, metadata, float16 weights, atomic writes, and every way a
checkpoint can be broken turned into one clear :class:`CheckpointError` (never pickle)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from seqtag.models import checkpoint as ckpt_module
from seqtag.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    ModelMeta,
    build_tagger,
    load_checkpoint,
    quantize_rows,
    read_config,
    save_checkpoint,
)
from seqtag.models.codec import Codec, CodecConfig
from seqtag.models.schemes import TagScheme, tag_vocabulary
from seqtag.models.tagger import TaggerConfig
from seqtag.training.config import TrainConfig
from seqtag.training.trainer import fingerprint
from tests.fixtures import write_ner_corpus

TEXTS = ["张伟明在北京工作。", "李娜明天去上海。", "我们在杭州见到了刘洋。", "iPhone15很贵"]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.build(TEXTS, CodecConfig(bigram_min_freq=1))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_ner_corpus(tmp_path_factory.mktemp("corpus"), n=5)


def make_model(codec: Codec, corpus: Path, seed: int = 0):
    torch.manual_seed(seed)
    tags = tag_vocabulary(TagScheme.BIOES, ["LOC", "PER"])
    config = TaggerConfig(unit_dim=8, bigram_dim=4, hidden=6)
    tagger = build_tagger(config, codec, TagScheme.BIOES, tags)
    training = TrainConfig(task="ner", train=str(corpus), out="run", format="column",
                           model=config, label_map={"NR": "PER"})
    extra = {
        "training": json.loads(training.model_dump_json()),
        "corpora": {"train": fingerprint(str(corpus))},
        "dev_metrics": {"f1": 12.5},
    }
    return tagger, ModelMeta("ner", TagScheme.BIOES, tags, extra)


@pytest.fixture
def model(codec, corpus):
    return make_model(codec, corpus)


@pytest.fixture
def saved(tmp_path, codec, model) -> Path:
    tagger, meta = model
    return save_checkpoint(tmp_path / "ckpt", tagger, codec, meta)


def edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")


def expect_error(directory: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(directory)
    message = str(info.value)
    assert "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


# ---- round trip -----------------------------------------------------------------


def test_round_trip_weights_equal(saved, model, codec):
    tagger, meta = model
    loaded, loaded_codec, loaded_meta = load_checkpoint(saved)
    expected = tagger.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
    assert not loaded.training  # ready for inference
    assert loaded_meta.task == "ner"
    assert loaded_meta.scheme is TagScheme.BIOES
    assert loaded_meta.tags == meta.tags
    assert loaded_meta.labels == ["LOC", "PER"]
    assert loaded_codec.num_units == codec.num_units
    assert loaded_codec.bigram_list == codec.bigram_list
    enc_a, enc_b = codec.encode(TEXTS), loaded_codec.encode(TEXTS)
    assert all((a == b).all() for a, b in zip(enc_a.ids, enc_b.ids))


def test_round_trip_same_predictions(saved, model, codec):
    tagger, _ = model
    tagger.eval()
    loaded, loaded_codec, _ = load_checkpoint(saved)
    batch = codec.batch(codec.encode(TEXTS))
    with torch.no_grad():
        assert torch.equal(tagger.decode(batch)[0], loaded.decode(loaded_codec.batch(loaded_codec.encode(TEXTS)))[0])


def test_config_json_contents(saved, model, corpus):
    tagger, meta = model
    config = json.loads((saved / "config.json").read_text(encoding="utf-8"))
    assert config["format_version"] == FORMAT_VERSION
    assert config["architecture"] == "bilstm-crf"
    assert config["task"] == "ner"
    assert config["scheme"] == "bioes"
    assert config["tags"] == meta.tags == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER", "E-PER", "S-PER"]
    assert config["labels"] == ["LOC", "PER"]
    assert config["tagger"] == tagger.config.model_dump()
    assert config["weights_dtype"] == "float32"
    # the training config is stored verbatim, and the extras survive
    assert config["training"] == meta.extra["training"]
    assert config["training"]["label_map"] == {"NR": "PER"}
    assert config["training"]["model"]["hidden"] == 6
    assert config["dev_metrics"] == {"f1": 12.5}
    assert set(config["versions"]) >= {"python", "torch", "tokenizers", "safetensors"}
    assert config["versions"]["torch"] == torch.__version__
    train = config["corpora"]["train"]
    assert train["path"] == str(corpus)
    assert train["bytes"] == corpus.stat().st_size
    import hashlib

    assert train["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert config["saved_at"].endswith("Z")
    # and the loaded meta carries it all too
    _, _, loaded_meta = load_checkpoint(saved)
    assert loaded_meta.extra["training"] == meta.extra["training"]
    assert loaded_meta.extra["corpora"] == config["corpora"]
    assert read_config(saved) == config


def test_files_in_checkpoint(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["codec.json", "config.json", "model.safetensors", "tokenizer.json"]


def test_softmax_architecture(tmp_path, codec, corpus):
    tagger, meta = make_model(codec, corpus)
    tagger = build_tagger(tagger.config.model_copy(update={"decoder": "softmax"}), codec, meta.scheme, meta.tags)
    save_checkpoint(tmp_path / "m", tagger, codec, meta)
    assert read_config(tmp_path / "m")["architecture"] == "bilstm-softmax"
    loaded, _, _ = load_checkpoint(tmp_path / "m")
    assert loaded.crf is None


@pytest.mark.parametrize("update, name", [({"encoder": "cnn"}, "cnn-crf"),
                                          ({"encoder": "gru", "bidirectional": False}, "gru-crf")])
def test_architecture_names_the_encoder(tmp_path, codec, corpus, update, name):
    tagger, meta = make_model(codec, corpus)
    tagger = build_tagger(tagger.config.model_copy(update=update), codec, meta.scheme, meta.tags)
    assert read_config(save_checkpoint(tmp_path / "m", tagger, codec, meta))["architecture"] == name


def test_half_weights(tmp_path, model, codec):
    tagger, meta = model
    directory = save_checkpoint(tmp_path / "half", tagger, codec, meta, half=True)
    assert read_config(directory)["weights_dtype"] == "float16"
    full_size = save_checkpoint(tmp_path / "full", tagger, codec, meta).joinpath("model.safetensors").stat().st_size
    assert (directory / "model.safetensors").stat().st_size < 0.6 * full_size
    with safe_open(str(directory / "model.safetensors"), framework="pt") as fh:
        dtypes = {key: fh.get_tensor(key).dtype for key in fh.keys()}
    assert dtypes["project.weight"] == torch.float16
    assert dtypes["crf.allowed"] == torch.bool  # non-float tensors are left alone
    loaded, _, _ = load_checkpoint(directory)
    for key, value in tagger.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype, key  # back to float32 in memory
        if value.is_floating_point():
            torch.testing.assert_close(got, value, atol=1e-3, rtol=1e-3)
        else:
            assert torch.equal(got, value)


def test_int8_embedding_tables(tmp_path, model, codec):
    tagger, meta = model
    directory = save_checkpoint(tmp_path / "q", tagger, codec, meta, half=True, int8_embeddings=True)
    config = read_config(directory)
    assert config["int8_rows"] == ["bigram_embed.weight", "unit_embed.weight"]
    with safe_open(str(directory / "model.safetensors"), framework="pt") as fh:
        dtypes = {key: fh.get_tensor(key).dtype for key in fh.keys()}
    assert dtypes["unit_embed.weight"] == dtypes["bigram_embed.weight"] == torch.int8
    assert dtypes["unit_embed.weight.row_scale"] == torch.float16
    assert dtypes["project.weight"] == torch.float16  # the rest is only halved
    loaded, _, _ = load_checkpoint(directory)
    for key in config["int8_rows"]:
        want, got = tagger.state_dict()[key], loaded.state_dict()[key]
        assert got.dtype == torch.float32
        step = want.abs().amax(dim=1, keepdim=True) / 127  # one int8 step per row
        assert ((got - want).abs() <= step * 0.51 + 1e-3 * want.abs()).all(), key
    again = save_checkpoint(tmp_path / "again", loaded, codec, meta)
    assert read_config(again)["int8_rows"] == []  # the flag is per save, not sticky
    assert load_checkpoint(again)[0].state_dict()["bigram_embed.weight"].equal(loaded.state_dict()["bigram_embed.weight"])


def test_quantize_rows_zero_rows_and_extremes():
    weight = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [-1e-8, 0.0, 1e-8]])
    q, scale = quantize_rows(weight)
    assert q.dtype == torch.int8 and scale.shape == (3,)
    assert q[0].tolist() == [0, 0, 0] and scale[0] == 1  # no division by zero
    assert q[1].tolist() == [64, -127, 32]  # the largest magnitude maps to +-127
    torch.testing.assert_close(q.float() * scale[:, None], weight, atol=2.0 / 127 / 2 + 1e-6, rtol=0)


@pytest.mark.parametrize("damage", ["drop_scale", "bad_list", "float_table"])
def test_damaged_int8_tables(tmp_path, model, codec, damage):
    tagger, meta = model
    directory = save_checkpoint(tmp_path / "q", tagger, codec, meta, int8_embeddings=True)
    if damage == "bad_list":
        edit_config(directory, int8_rows="unit_embed.weight")
        expect_error(directory, "int8_rows")
        return
    with safe_open(str(directory / "model.safetensors"), framework="pt") as fh:
        state = {key: fh.get_tensor(key) for key in fh.keys()}
    if damage == "drop_scale":
        del state["bigram_embed.weight.row_scale"]
    else:
        state["bigram_embed.weight"] = state["bigram_embed.weight"].float()
    save_file(state, str(directory / "model.safetensors"))
    expect_error(directory, "int8 table bigram_embed.weight")


def test_extra_cannot_override_reserved_keys(tmp_path, model, codec):
    tagger, meta = model
    meta.extra.update(format_version=99, task="seg")
    directory = save_checkpoint(tmp_path / "m", tagger, codec, meta)
    config = read_config(directory)
    assert config["format_version"] == FORMAT_VERSION and config["task"] == "ner"


def test_saved_meta_round_trips_through_a_second_save(tmp_path, saved, codec):
    tagger, codec2, meta = load_checkpoint(saved)
    again = save_checkpoint(tmp_path / "again", tagger, codec2, meta)
    first, second = read_config(saved), read_config(again)
    first.pop("saved_at"), second.pop("saved_at")
    assert first == second


# ---- atomic writes ------------------------------------------------------------


def test_atomic_write_leaves_no_temp_dirs(tmp_path, model, codec):
    tagger, meta = model
    parent = tmp_path / "runs"
    save_checkpoint(parent / "best", tagger, codec, meta)
    save_checkpoint(parent / "best", tagger, codec, meta)
    assert [p.name for p in parent.iterdir()] == ["best"]


def test_replacing_an_existing_checkpoint(tmp_path, codec, corpus):
    first, meta = make_model(codec, corpus, seed=1)
    second, _ = make_model(codec, corpus, seed=2)
    directory = tmp_path / "best"
    save_checkpoint(directory, first, codec, meta)
    (directory / "stale.txt").write_text("from the old checkpoint")
    save_checkpoint(directory, second, codec, meta)
    loaded, _, _ = load_checkpoint(directory)
    for key, value in second.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not (directory / "stale.txt").exists()  # the whole directory was replaced
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch, codec, corpus):
    first, meta = make_model(codec, corpus, seed=1)
    second, _ = make_model(codec, corpus, seed=2)
    directory = tmp_path / "best"
    save_checkpoint(directory, first, codec, meta)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(directory, second, codec, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no temp dir left behind
    loaded, _, _ = load_checkpoint(directory)
    for key, value in first.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_is_readable_by_others(tmp_path, model, codec):
    """A model written by one user (say, a training job) must be servable by another: the
    directory and its files follow the umask, not the private mode of a temp dir."""
    tagger, meta = model
    old = os.umask(0o022)
    try:
        directory = save_checkpoint(tmp_path / "best", tagger, codec, meta)
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    for child in directory.iterdir():
        assert stat.S_IMODE(child.stat().st_mode) == 0o644, child.name


# ---- broken checkpoints -------------------------------------------------------


def test_missing_directory(tmp_path):
    expect_error(tmp_path / "nope", "no such checkpoint directory", "nope")


def test_a_file_is_not_a_directory(tmp_path):
    (tmp_path / "model").write_text("x")
    expect_error(tmp_path / "model", "no such checkpoint directory")


def test_directory_without_config(saved):
    (saved / "config.json").unlink()
    expect_error(saved, "not a seqtag checkpoint", "config.json")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "not a seqtag checkpoint", "model.safetensors", "config.json")


@pytest.mark.parametrize("name", ["codec.json", "tokenizer.json", "model.safetensors"])
def test_missing_required_file(saved, name):
    (saved / name).unlink()
    expect_error(saved, "missing", name)


def test_invalid_json(saved):
    (saved / "config.json").write_text('{"format_version": 1,', encoding="utf-8")
    expect_error(saved, "config.json", "not valid JSON")


def test_config_not_utf8(saved):
    (saved / "config.json").write_bytes(b"\xff\xfe{}")
    expect_error(saved, "config.json", "not valid JSON")


def test_config_json_is_a_directory(saved):
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()
    expect_error(saved, "config.json")


def test_config_without_format_version(saved):
    edit_config(saved, format_version=None)
    expect_error(saved, "no format_version")


def test_config_not_an_object(saved):
    (saved / "config.json").write_text("[1, 2]", encoding="utf-8")
    expect_error(saved, "not a seqtag config")


@pytest.mark.parametrize("version", [0, -1, "1", 1.5, None])
def test_bad_format_version(saved, version):
    if version is None:
        (saved / "config.json").write_text('{"format_version": null}', encoding="utf-8")
    else:
        edit_config(saved, format_version=version)
    expect_error(saved, "format_version")


def test_newer_format_version(saved):
    edit_config(saved, format_version=FORMAT_VERSION + 1)
    expect_error(saved, f"format_version {FORMAT_VERSION + 1}", "newer", "upgrade seqtag")


def test_truncated_weights(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    expect_error(saved, "model.safetensors", "corrupt")


def test_empty_weights(saved):
    (saved / "model.safetensors").write_bytes(b"")
    expect_error(saved, "model.safetensors", "corrupt")


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_weights(saved, seed):
    import random

    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(4096))
    if seed % 2:  # a plausible small header length followed by garbage
        data = (200).to_bytes(8, "little") + data
    (saved / "model.safetensors").write_bytes(data)
    expect_error(saved, "model.safetensors", "corrupt")


def test_wrong_tensor_shapes(saved):
    config = json.loads((saved / "config.json").read_text(encoding="utf-8"))
    config["tagger"]["hidden"] = 12
    (saved / "config.json").write_text(json.dumps(config), encoding="utf-8")
    expect_error(saved, "weights do not match config.json", "encoder.weight_hh_l0")


def test_fewer_tags_than_weights(saved):
    edit_config(saved, tags=["O", "S-PER"])
    expect_error(saved, "weights do not match", "project.weight")


def test_missing_and_unexpected_tensors(saved):
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved / "model.safetensors"))
    state["surprise"] = state.pop("project.bias")
    save_file(state, str(saved / "model.safetensors"))
    expect_error(saved, "weights do not match", "project.bias", "surprise")


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize(
    "changes, words",
    [
        ({"task": "parse"}, ["invalid checkpoint config", "parse"]),
        ({"scheme": "iob9"}, ["invalid checkpoint config", "iob9"]),
        ({"tagger": "big"}, ["invalid checkpoint config"]),
        ({"tagger": {"hidden": 6, "colour": "red"}}, ["invalid checkpoint config", "colour"]),
        ({"tags": None}, ["invalid checkpoint config", "tags"]),
        ({"tags": []}, ["invalid checkpoint config"]),
        ({"tags": ["O", "X-PER"]}, ["invalid checkpoint config", "X-PER"]),
        ({"tags": [None, 3]}, ["invalid checkpoint config"]),
    ],
)
def test_invalid_config_values(saved, changes, words):
    edit_config(saved, **changes)
    expect_error(saved, *words)


def test_corrupt_codec_files(saved):
    (saved / "codec.json").write_text("{", encoding="utf-8")
    expect_error(saved, "invalid checkpoint config")


def test_corrupt_tokenizer(saved):
    (saved / "tokenizer.json").write_text("{}", encoding="utf-8")
    expect_error(saved, "invalid checkpoint config")


def test_only_a_pickle(tmp_path, model):
    tagger, _ = model
    directory = tmp_path / "hf-style"
    directory.mkdir()
    torch.save(tagger.state_dict(), directory / "pytorch_model.bin")
    expect_error(directory, "refusing pickled weights", "model.safetensors")


def test_pickle_instead_of_safetensors(saved):
    (saved / "model.safetensors").unlink()
    (saved / "model.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    expect_error(saved, "refusing pickled weights")


# ---- never unpickle -----------------------------------------------------------


@pytest.fixture
def no_pickle(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must never unpickle anything")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


def test_load_never_unpickles(no_pickle, saved, tmp_path, model, codec):
    tagger, meta = model
    load_checkpoint(saved)
    half = save_checkpoint(tmp_path / "half", tagger, codec, meta, half=True)
    load_checkpoint(half)


def test_pickle_checkpoint_is_refused_without_unpickling(no_pickle, tmp_path):
    directory = tmp_path / "evil"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    expect_error(directory, "refusing pickled weights")


def test_load_to_device_argument(saved):
    tagger, _, _ = load_checkpoint(saved, device=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in tagger.parameters())


def test_compact_prunes_bigrams_keeps_dtype_and_marks_int8(tmp_path):
    from seqtag.models.pipeline import Pipeline
    from tests.fixtures import train_tiny
    from seqtag.cli import main

    run = train_tiny(tmp_path / "t", "seg", epochs=1, extra_flags=["--half-weights"])
    src = run / "best"
    out = tmp_path / "small"
    assert main(["compact", str(src), str(out), "--max-bigrams", "5", "--int8"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["weights_dtype"] == "float16" and config["inference"]["quantize"] == "int8"
    pipeline = Pipeline.load(out, "cpu")
    assert pipeline.codec.num_bigrams == 7
    # the encoder runs int8; a projection to a few tags stays float (int8 is slower there)
    assert "quantized" in type(pipeline.tagger.encoder).__mro__[1].__module__
    assert type(pipeline.tagger.project) is torch.nn.Linear
    assert pipeline.int8 and pipeline.arithmetic == "int8"
    [spans] = pipeline.predict(["我们在北京工作。"])
    assert "".join(t for s in spans for t in "我们在北京工作。"[s.start:s.end]) == "我们在北京工作。"
    # int8=False keeps the mark but runs float32 (answers independent of batch-mates)
    plain = Pipeline.load(out, "cpu", int8=False)
    assert type(plain.tagger.encoder) is torch.nn.LSTM and not plain.int8 and plain.arithmetic == "float32"
    assert plain.meta.extra["inference"]["quantize"] == "int8"
    # per-channel weight scales, recorded per model
    assert {w.qscheme() for w in pipeline.tagger.encoder.get_weight().values()} == {torch.per_tensor_affine}
    channel = tmp_path / "channel"
    assert main(["compact", str(src), str(channel), "--int8", "--int8-weights", "per-channel"]) == 0
    assert read_config(channel)["inference"] == {"quantize": "int8", "int8_weights": "per-channel"}
    loaded = Pipeline.load(channel, "cpu")
    assert {w.qscheme() for w in loaded.tagger.encoder.get_weight().values()} == {torch.per_channel_affine}
    assert loaded.predict(["我们在北京工作。"])[0]
    from seqtag.training.modelcard import render_card

    assert "per-channel weight scales" in render_card(channel, "zh-seg", "ctb6")
    assert "per-channel weight scales" not in render_card(out, "zh-seg", "ctb6")
    with pytest.raises(SystemExit) as exit_info:  # nothing to apply it to
        main(["compact", str(src), str(tmp_path / "no"), "--int8-weights", "per-channel"])
    assert exit_info.value.code == 2 and not (tmp_path / "no").exists()
    edit_config(channel, inference={"quantize": "int8", "int8_weights": "per-row"})
    with pytest.raises(ValueError, match="int8_weights"):
        Pipeline.load(channel, "cpu")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_int8_switch_on_the_command_line(tmp_path, monkeypatch, command):
    from seqtag.models.pipeline import Pipeline
    from seqtag.cli import build_parser, main

    args = [command, "MODEL"] + (["DATA"] if command == "evaluate" else [])
    assert build_parser().parse_args(args).int8 is True
    assert build_parser().parse_args(args + ["--no-int8"]).int8 is False
    seen = []

    def load(directory, device="auto", precision="float32", int8=True):
        seen.append(int8)
        raise ValueError("stop here")

    monkeypatch.setattr(Pipeline, "load", load)
    with pytest.raises(SystemExit):
        main([command, str(tmp_path), str(tmp_path / "data.txt"), "--no-int8"])
    assert seen == [False]


def test_compact_int8_embeddings_and_card(tmp_path):
    from seqtag.models.pipeline import Pipeline
    from tests.fixtures import train_tiny
    from seqtag.cli import main
    from seqtag.training.modelcard import render_card

    run = train_tiny(tmp_path / "t", "seg", epochs=1)
    out = tmp_path / "q"
    assert main(["compact", str(run / "best"), str(out), "--half", "--int8-embeddings"]) == 0
    config = read_config(out)
    assert config["int8_rows"] and config["compacted_from"]["int8_embeddings"] is True
    assert (out / "model.safetensors").stat().st_size < (run / "best" / "model.safetensors").stat().st_size
    small = Pipeline.load(out, "cpu")
    text = "我们在北京工作。"
    assert "".join(text[s.start:s.end] for s in small.predict([text])[0]) == text
    # compacting again keeps the int8 tables unless told otherwise
    assert main(["compact", str(out), str(tmp_path / "q2")]) == 0
    assert read_config(tmp_path / "q2")["int8_rows"] == config["int8_rows"]
    assert "int8 embedding tables" in render_card(out, "zh-seg", "ctb6")


def test_training_flag_stores_best_with_int8_tables(tmp_path):
    from tests.fixtures import train_tiny

    run = train_tiny(tmp_path / "t", "seg", epochs=1, extra_flags=["--int8-embeddings"])
    config = read_config(run / "best")
    assert config["int8_rows"] and config["training"]["run"]["int8_embeddings"] is True
    assert read_config(run / "last")["int8_rows"] == []  # the resume snapshot keeps full precision
    load_checkpoint(run / "best")


def test_compact_averages_weights_within_one_lineage(tmp_path, capsys):
    """``seqtag compact A OUT --average B``: the mean of the weights of a model and its restart (here, a run's
    best and last checkpoints share codec and lexicon); a checkpoint of another lineage is a clear error."""
    from seqtag.cli import main
    from tests.fixtures import train_tiny

    run = train_tiny(tmp_path / "t", "seg", epochs=2)
    best, _, _ = load_checkpoint(run / "best")
    last, _, _ = load_checkpoint(run / "last")
    out = tmp_path / "avg"
    assert main(["compact", str(run / "best"), str(out), "--average", str(run / "last")]) == 0
    mixed, _, meta = load_checkpoint(out)
    for name, value in mixed.state_dict().items():
        a, b = best.state_dict()[name], last.state_dict()[name]
        if value.is_floating_point():
            assert torch.allclose(value.float(), (a.float() + b.float()) / 2, atol=1e-2), name
    assert [a["checkpoint"] for a in meta.extra["averaged_with"]] == [str(run / "last")]
    assert "dev_metrics" not in meta.extra  # the run's own scores are not the average's
    from seqtag.training.modelcard import render_card

    assert "`seqtag compact --average`" in render_card(out, "zh-seg", "ctb6")
    assert meta.extra["lineage"] == read_config(run / "last")["lineage"]  # one run: one lineage
    # another run on the same data (same codec, tags and shapes, another seed) shares no training history
    other = train_tiny(tmp_path / "o", "seg", epochs=1, extra_flags=["--seed", "99"])
    with pytest.raises(SystemExit) as exit_:
        main(["compact", str(run / "best"), str(tmp_path / "bad"), "--average", str(other / "best")])
    assert exit_.value.code == 2
    assert "lineage" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_average_a_restart_that_grew_the_vocabulary(tmp_path):
    """A warm restart on new text grows the unit and bigram tables; averaged with the model it started from,
    the new rows count with that model's UNK row, and a model that is not a prefix of the restart's
    vocabulary (given first the wrong way round) is refused."""
    from seqtag.cli import main
    from tests.fixtures import train_tiny, write_corpora

    base = train_tiny(tmp_path / "b", "seg", epochs=1)
    train, _ = write_corpora(tmp_path / "b", "seg")
    more = tmp_path / "more.seg"
    more.write_text(Path(train).read_text(encoding="utf-8") + "龘龘 靐 齉齉 。\n" * 5, encoding="utf-8")
    restart = train_tiny(tmp_path / "r", "seg", epochs=1,
                         extra_flags=["--init-from", str(base / "best"), "--train", str(more)])
    assert read_config(restart / "best")["lineage"][0] == read_config(base / "best")["lineage"][0]
    small, _, _ = load_checkpoint(base / "best")
    big, codec, _ = load_checkpoint(restart / "best")
    n = small.unit_embed.num_embeddings
    assert big.unit_embed.num_embeddings > n
    out = tmp_path / "avg"
    assert main(["compact", str(restart / "best"), str(out), "--average", str(base / "best")]) == 0
    mixed, _, _ = load_checkpoint(out)
    a, b, m = small.unit_embed.weight, big.unit_embed.weight, mixed.unit_embed.weight
    assert torch.allclose(m[:n], (a + b[:n]) / 2, atol=1e-2)
    assert torch.allclose(m[n:], (a[1] + b[n:]) / 2, atol=1e-2)  # new units: the small model's UNK row
    with pytest.raises(SystemExit):
        main(["compact", str(base / "best"), str(tmp_path / "bad"), "--average", str(restart / "best")])
