"""A face per character: the typical training face kept in the model, an enrolled one added, both kept
through save and load, served by the web app; built from the generated sample (no ../shared/data)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from animeid.thumbnails import SIZE, from_arrays, to_arrays, typical_faces


def test_the_typical_face_is_the_one_nearest_the_mean():
    grey = [np.full((40, 40, 3), v, np.uint8) for v in (10, 100, 110, 120, 250)]   # mean 118: 120 is nearest
    red = [np.zeros((40, 40, 3), np.uint8) for _ in range(2)]
    red[0][..., 0], red[1][..., 0] = 200, 220
    got = typical_faces(grey + red, ["g"] * 5 + ["r"] * 2)
    assert list(got) == ["g", "r"]
    assert got["g"].shape == (SIZE, SIZE, 3) and got["g"].dtype == np.uint8 and int(got["g"][0, 0, 0]) == 120
    assert int(got["r"][0, 0, 0]) == 200                           # a tie: the first
    back = from_arrays(to_arrays(got))
    assert list(back) == ["g", "r"] and all(np.array_equal(back[k], got[k]) for k in got)
    assert from_arrays({}) == {} and to_arrays({}) == {}
    assert from_arrays({"thumbs.images": np.zeros((2, 8, 8, 3), np.uint8), "thumbs.labels": np.array(["a"])}) == {}


def test_a_model_has_a_face_per_character_and_keeps_an_enrolled_one(generated_model, tmp_path):
    from animeid.predict import Recognizer

    rec = Recognizer.load(generated_model.path)
    for name in rec.labels:
        t = rec.thumbnail(name)
        assert t is not None and t.shape == (SIZE, SIZE, 3) and t.std() > 10     # a drawn face, not a flat square
    assert rec.thumbnail("nobody") is None
    face = Image.new("RGB", (96, 96), (10, 200, 30))
    rec.enroll("newcomer", [face], face_crops=True)
    assert tuple(rec.thumbnail("newcomer")[5, 5]) == (10, 200, 30)
    again = Recognizer.load(rec.save(tmp_path / "more.animeid"))
    assert tuple(again.thumbnail("newcomer")[5, 5]) == (10, 200, 30)
    assert all(np.array_equal(again.thumbnail(n), rec.thumbnail(n)) for n in rec.labels)
    rec.forget("newcomer")
    assert rec.thumbnail("newcomer") is None


def test_the_web_app_serves_them(generated_model):
    import pytest

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from animeid.serve import create_app

    with TestClient(create_app(generated_model.path)) as c:
        details = c.get("/api/v1/characters").json()["details"]
        assert all(d["thumbnail"] == f"/api/v1/characters/{d['name']}/thumbnail" for d in details)
        r = c.get(details[0]["thumbnail"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (SIZE, SIZE)
        r = c.get("/api/v1/characters/nobody/thumbnail")
        assert r.status_code == 404 and "nobody" in r.json()["detail"]
