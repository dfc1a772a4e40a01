"""The built wheel, installed into a fresh virtual environment outside the repository, works on its own: the
shipped models are inside it, `seqtag predict` and `import seqtag` run, and it puts nothing named `models`,
`training` or `service` into site-packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a fresh venv with the wheel (and torch's CPU build) installed."""
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(ROOT)])
    [wheel] = (work / "dist").glob("seqtag-*.whl")
    venv.EnvBuilder(with_pip=True).create(work / "env")
    bin_dir = work / "env" / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    import torch  # the same torch build as this environment's (CPU where there is no GPU)

    _run(pip + [f"torch=={torch.__version__.split('+')[0]}"])
    _run(pip + [str(wheel)])
    return bin_dir


def test_the_wheel_holds_no_top_level_models_training_or_service(installed):
    code = ("import importlib.util, json; print(json.dumps([importlib.util.find_spec(n) is not None "
            "for n in ('models', 'training', 'service', 'seqtag.models.codec', 'seqtag.service.app')]))")
    out = _run([str(installed / "python"), "-c", code], cwd="/").stdout
    assert json.loads(out) == [False, False, False, True, True]


def test_seqtag_load_finds_the_shipped_models(installed):
    code = ("import seqtag; nlp = seqtag.load('zh-ner'); print(seqtag.available()); "
            "print([(s.start, s.end, s.label) for s in nlp.predict(['张三在北京工作。'])[0]])")
    out = _run([str(installed / "python"), "-c", code], cwd="/").stdout.splitlines()
    assert out[0] == "['zh-ner', 'zh-pos', 'zh-seg', 'zh-seg-fast']"
    assert "(3, 5, 'LOC')" in out[1]


def test_seqtag_predict_runs_from_the_installed_program(installed, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("我们在北京工作。\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQTAG_")}
    out = _run([str(installed / "seqtag"), "predict", "zh-seg", str(text)], cwd=tmp_path, env=env).stdout
    assert out.split() == ["我们", "在", "北京", "工作", "。"]
