"""README's retraining walk-through end to end: fine-tune with a new label, export, reload, serve."""

from __future__ import annotations

from fastapi.testclient import TestClient

from seqtag.service.app import create_app
from seqtag.service.settings import Settings
from tests.fixtures import train_tiny, write_ner_org_corpus


def test_finetune_new_label_export_reload_and_serve(tmp_path, trained):
    models = tmp_path / "models"
    models.mkdir()
    settings = Settings(models_dir=models, dictionaries_dir=tmp_path / "dicts", torch_threads=1)
    org_train = write_ner_org_corpus(tmp_path / "org", name="train.bmes", n=40, seed=3)
    org_dev = write_ner_org_corpus(tmp_path / "org", name="dev.bmes", n=12, seed=4)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503  # no model yet
        train_tiny(tmp_path / "ft", "ner", epochs=2, extra_flags=[
            "--train", str(org_train), "--dev", str(org_dev), "--init-from", str(trained["ner"]),
            "--out", str(tmp_path / "ft" / "run"), "--export", str(models / "my-ner")])
        reload = client.post("/v1/models/reload")
        assert reload.status_code == 200, reload.text
        assert reload.json()["loaded"] == ["my-ner"]
        [info] = client.get("/v1/models").json()["models"]
        assert info["name"] == "my-ner" and "ORG" in info["labels"] and "PER" in info["labels"]
        text = "华星公司在南京招聘"
        response = client.post("/v1/ner", json={"text": text, "model": "my-ner",
                                                "dictionary": [{"text": "华星公司", "label": "ORG"}]})
        assert response.status_code == 200, response.text
        entities = response.json()["results"][0]["entities"]
        assert {"text": "华星公司", "label": "ORG", "start": 0, "end": 4} in entities
        assert client.get("/readyz").status_code == 200
