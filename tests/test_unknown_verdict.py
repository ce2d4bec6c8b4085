"""'unknown' as a verdict (issue 12 §3): each face's ``name`` is a character or ``unknown``, its
``candidates`` are named characters only, and the threshold is a known-face refusal rate.

Built from the generated sample only (no ../shared/data): a small logistic model on drawn faces.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.errors import InputError, ModelFileError


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``(model, data)``: 4 drawn characters, 10 faces each."""
    from animeid.sample import make_characters, render_face
    from animeid.train import train

    root = tmp_path_factory.mktemp("uv")
    data = root / "data"
    rng = np.random.default_rng(3)
    for spec in make_characters(4, seed=0):
        (data / spec.name).mkdir(parents=True)
        for k in range(10):
            render_face(spec, rng, size=128).save(data / spec.name / f"{k}.png")
    path = root / "m.animeid"
    train(data, path, method="logistic", progress=False)
    return path, data


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    """A flat grey square: like none of the characters (read whole, as a face crop)."""
    p = tmp_path_factory.mktemp("grey") / "grey.png"
    Image.new("RGB", (128, 128), (128, 128, 128)).save(p)
    return p


def _known_face(data: Path) -> tuple[str, Path]:
    d = sorted(x for x in data.iterdir() if x.is_dir())[0]
    return d.name, sorted(d.iterdir())[0]


def _old_copy(model: Path, out: Path, *, layer: bool = True) -> Path:
    """The model as an older animeid wrote it: without the known faces' score quantiles (or, with
    ``layer=False``, without any open-set layer)."""
    from animeid.modelfile import read_model, save_model

    b = read_model(model)
    keep = (lambda k: k != "openset.known_quantiles") if layer else (lambda k: not k.startswith("openset."))
    th = b.thresholds if layer else {}
    save_model(out, b.head, method=b.method, labels=list(b.labels), backbone=b.backbone, backbone_onnx=b.backbone_onnx,
               features=b.features, training=b.training, thresholds=th,
               extra_arrays={k: v for k, v in (b.extra_arrays or {}).items() if keep(k)})
    return out


def test_a_known_face_gets_its_name_as_the_verdict(trained):
    import animeid

    model, data = trained
    rec = animeid.load(model)
    name, f = _known_face(data)
    face = rec.predict(f, detect="never")["faces"][0]
    assert face["name"] == name and face["unknown"] is False
    assert face["candidates"][0]["name"] == name and len(face["candidates"]) == 3
    assert all(c["name"] in rec.labels for c in face["candidates"])
    o = face["open_set"]
    assert o["kind"] == "prototype_z" and o["score"] >= o["threshold"]
    # refusal_rate: the share of known calibration faces the model's threshold refuses; a named face
    # scores above the threshold, so at least that share of known faces scores below it
    assert o["refusal_rate"] == round(rec.openset.refusal_rate(rec.openset.threshold), 4), "the stored threshold's rate"
    assert o["known_below"] >= o["refusal_rate"], ("named: known_below >= refusal_rate", o)
    json.dumps(face, allow_nan=False)                  # plain JSON


def test_an_unknown_face_gets_the_unknown_verdict_with_its_closest_characters(trained, grey):
    import animeid
    from animeid.predict import PredictConfig

    model, _ = trained
    rec = animeid.load(model)
    face = rec.predict(grey, detect="never")["faces"][0]
    assert face["name"] == "unknown" and face["unknown"] is True
    assert len(face["candidates"]) == 3 and all(c["name"] in rec.labels for c in face["candidates"])
    ps = [c["p"] for c in face["candidates"]]
    assert ps == sorted(ps, reverse=True) and sum(ps) <= 1.0001
    assert face["open_set"]["score"] < face["open_set"]["threshold"]
    # identify_faces gives the same verdict; predict_faces the candidates alone
    v = rec.identify_faces([grey])[0]
    assert v["name"] == "unknown" and v["candidates"] == face["candidates"]
    assert rec.predict_faces([grey]) == [face["candidates"]]
    # 'off': the closest character is the answer
    off = rec.predict(grey, PredictConfig(detect="never", unknown=False))["faces"][0]
    assert off["name"] == off["candidates"][0]["name"] and not off["unknown"] and off["open_set"]["threshold"] is None


def test_the_refusal_rate_maps_to_a_threshold_and_round_trips_through_the_model_file(trained, tmp_path):
    import animeid
    from animeid.modelfile import read_model
    from animeid.predict import PredictConfig

    model, data = trained
    q = read_model(model).extra_arrays["openset.known_quantiles"]
    assert q.shape == (201,) and np.all(np.diff(q) >= 0)
    rec = animeid.load(model)
    layer = rec.openset
    for rate in (0.05, 0.25, 0.5, 0.9):
        t = layer.threshold_for_rate(rate)
        assert abs(layer.refusal_rate(t) - rate) < 1e-6
    assert layer.threshold_for_rate(0.1) <= layer.threshold_for_rate(0.5)
    # a high rate refuses a face an ordinary threshold names
    name, f = _known_face(data)
    hi = rec.predict(f, PredictConfig(detect="never", unknown_rate=0.99))["faces"][0]
    assert hi["unknown"] and hi["name"] == "unknown" and hi["open_set"]["refusal_rate"] == pytest.approx(0.99, abs=1e-3)
    assert hi["candidates"][0]["name"] == name
    # saved (with an enrolled character) and loaded again: the same quantiles, the same threshold
    rec.enroll("newcomer", [f], face_crops=True)
    out = rec.save(tmp_path / "plus.animeid")
    again = animeid.load(out)
    np.testing.assert_allclose(again.openset.known_quantiles, layer.known_quantiles)
    assert again.openset.threshold_for_rate(0.05) == pytest.approx(layer.threshold_for_rate(0.05))


def test_old_model_files_still_load_and_predict(trained, grey, tmp_path):
    import animeid
    from animeid.predict import PredictConfig

    model, data = trained
    name, f = _known_face(data)
    old = animeid.load(_old_copy(model, tmp_path / "old.animeid"))
    assert old.openset is not None and old.openset.known_quantiles is None
    face = old.predict(f, detect="never")["faces"][0]
    assert face["name"] == name and "refusal_rate" not in face["open_set"]
    assert old.predict(grey, detect="never")["faces"][0]["name"] == "unknown"
    # a rate needs the stored scores: a clear error before any work; a raw score still works
    with pytest.raises(ModelFileError, match="refusal rate cannot be turned into a threshold.*score:T"):
        old.predict(f, PredictConfig(detect="never", unknown_rate=0.05))
    raw = old.predict(f, PredictConfig(detect="never", unknown_threshold=1e9))["faces"][0]
    assert raw["unknown"] and raw["open_set"]["threshold"] == 1e9
    # no open-set layer at all: never unknown by default; a threshold on the highest probability
    older = animeid.load(_old_copy(model, tmp_path / "older.animeid", layer=False))
    assert older.openset is None
    face = older.predict(f, detect="never")["faces"][0]
    assert face["name"] == name and face["open_set"]["kind"] == "max_proba" and face["open_set"]["threshold"] is None
    assert older.predict(f, PredictConfig(detect="never", unknown_threshold=1.01))["faces"][0]["unknown"]
    with pytest.raises(ModelFileError, match="no open-set layer"):
        older.predict(f, PredictConfig(detect="never", unknown_rate=0.05))


@pytest.mark.parametrize("text, expected", [
    ("off", {"unknown": False}), (" OFF ", {"unknown": False}), ("0.05", {"unknown_rate": 0.05}),
    ("5%", {"unknown_rate": 0.05}), ("0", {"unknown_rate": 0.0}), ("score:-14.8", {"unknown_threshold": -14.8}),
    (None, {}), ("", {}),
])
def test_unknown_threshold_forms(text, expected):
    from animeid.predict import parse_unknown_threshold

    got = parse_unknown_threshold(text)
    assert got.keys() == expected.keys() and all(got[k] == pytest.approx(v) for k, v in expected.items())


@pytest.mark.parametrize("text", ["1", "1.5", "-0.1", "100%", "-14.8", "abc", "score:", "score:nan", "5%%", "nan"])
def test_bad_unknown_thresholds_are_refused(text):
    from animeid.predict import parse_unknown_threshold

    with pytest.raises(ValueError, match="refusal rate|expected 'off'"):
        parse_unknown_threshold(text)


def test_rate_and_score_together_are_refused(trained, grey):
    import animeid
    from animeid.predict import PredictConfig

    rec = animeid.load(trained[0])
    with pytest.raises(InputError, match="not both"):
        rec.predict(grey, PredictConfig(detect="never", unknown_rate=0.1, unknown_threshold=-3.0))


def test_cli_predict_says_unknown_as_a_verdict(trained, grey, tmp_path):
    model, data = trained
    name, f = _known_face(data)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "animeid", "predict", str(model), *map(str, args), "--detect",
                               "never"], capture_output=True, text=True, timeout=300)

    r = run(grey, f)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("  [0, 0, 128, 128]: unknown (closest: ") and "%" in lines[1]
    assert lines[3].startswith(f"  [0, 0, 128, 128]: {name} ")
    r = run(f, "--unknown-threshold", "99%", "--json")
    face = json.loads(r.stdout.splitlines()[-1])["faces"][0]
    assert face["name"] == "unknown" and face["candidates"][0]["name"] == name
    r = run(grey, "--unknown-threshold", "off")
    assert "unknown" not in r.stdout
    for bad in ("0.5x", "-14.8", "150%"):
        r = run(f, "--unknown-threshold", bad)
        assert r.returncode == 2 and "--unknown-threshold" in r.stderr and "Traceback" not in r.stderr
    old = _old_copy(model, tmp_path / "old.animeid")
    r = subprocess.run([sys.executable, "-m", "animeid", "predict", str(old), str(f), "--unknown-threshold", "5%"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "refusal rate cannot be turned into a threshold" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_api_takes_the_same_threshold_and_answers_422_for_bad_values(trained, grey, tmp_path):
    pytest.importorskip("fastapi")
    try:
        import httpx2  # noqa: F401
    except ImportError:
        pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx2 or httpx")
    from fastapi.testclient import TestClient

    from animeid.serve import create_app

    model, data = trained
    name, f = _known_face(data)
    up = {"image": (f.name, f.read_bytes(), "image/png")}
    with TestClient(create_app(model)) as c:
        r = c.post("/api/v1/recognize?detect=never", files=up)
        assert r.status_code == 200 and r.json()["faces"][0]["name"] == name
        r = c.post("/api/v1/recognize?detect=never&unknown_threshold=99%25", files=up)
        face = r.json()["faces"][0]
        assert r.status_code == 200 and face["name"] == "unknown" and face["candidates"][0]["name"] == name
        g = {"image": (grey.name, grey.read_bytes(), "image/png")}
        r = c.post("/api/v1/recognize?detect=never&unknown_threshold=off", files=g)
        assert r.status_code == 200 and not r.json()["faces"][0]["unknown"]
        for bad in ("2", "abc", "-14.8", "100%25"):
            r = c.post(f"/api/v1/recognize?unknown_threshold={bad}", files=up)
            assert r.status_code == 422 and "unknown_threshold" in r.json()["detail"], (bad, r.text)
        params = {p["name"]: p for p in c.get("/openapi.json").json()["paths"]["/api/v1/recognize"]["post"]["parameters"]}
        assert "refused" in params["unknown_threshold"]["description"]
    with TestClient(create_app(_old_copy(model, tmp_path / "old.animeid"))) as c:
        r = c.post("/api/v1/recognize?unknown_threshold=5%25", files=up)
        assert r.status_code == 422 and "refusal rate" in r.json()["detail"]
        r = c.post("/api/v1/recognize?unknown_threshold=score:-1000", files=up)
        assert r.status_code == 200
