"""Recognisers end to end: train each method, save, reload, evaluate, predict; bad input."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.errors import DatasetError, ModelFileError
from animeid.train import train


@pytest.fixture(scope="module")
def small_real(newgame8, tmp_path_factory) -> Path:
    """newgame8 with at most 20 faces per character (8 characters): fast and real."""
    out = tmp_path_factory.mktemp("ng") / "ng8"
    for d in sorted(newgame8.iterdir()):
        if d.is_dir():
            (out / d.name).mkdir(parents=True)
            for f in sorted(d.iterdir())[:20]:
                shutil.copy(f, out / d.name / f.name)
    return out


@pytest.fixture(scope="module")
def logistic_model(small_real, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "logi.animeid"
    return train(small_real, path, method="logistic", progress=False)


def test_forest_beats_chance(small_real, tmp_path):
    r = train(small_real, tmp_path / "f.animeid", method="forest", n_estimators=60, progress=False)
    assert r.test["top1"] > 0.4                    # chance: 1/8
    # out-of-bag accuracy: a whole number of the training faces right, as the saved forest keeps it
    oob_right = r.info["oob_score"] * r.n_train
    assert abs(oob_right - round(oob_right)) < 1e-6 and 0 < round(oob_right) <= r.n_train, \
        ("oob score is k / n_train", r.info["oob_score"], r.n_train)
    import animeid

    assert animeid.load(r.model_path).bundle.head.oob_score_ == r.info["oob_score"], "saved forest keeps its oob score"
    assert r.confusion_png.is_file()


def test_softmax_retrain_style_with_smoothing_and_augmentation(small_real, tmp_path):
    r = train(small_real, tmp_path / "s.animeid", method="softmax", backbone="efficientnet_lite0@160",
              steps=1500, label_smoothing=0.1, augment=1, progress=False)
    assert r.test["top1"] > 0.5
    assert r.curves_png.is_file() and r.curves_png.stat().st_size > 5000
    assert r.info["augment"] == 1 and r.n_train > 0


def test_logistic_beats_chance_and_reloads_identically(logistic_model, small_real):
    import animeid
    from animeid.evaluate import evaluate_model

    r = logistic_model
    assert r.test["top1"] > 0.7
    a = animeid.load(r.model_path)
    b = animeid.load(r.model_path)
    faces = sorted(small_real.rglob("*.jpg"))[:12]
    pa, pb = a.predict_proba_faces(faces), b.predict_proba_faces(faces)
    assert pa.shape == (12, 8)
    assert np.array_equal(pa, pb)
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
    # the saved model scores the held-out test faces (the same seeded split) exactly as the in-memory one
    # did at training time, and it learnt from none of them
    rep, ds = evaluate_model(a, small_real, split="test")
    assert (rep.n, rep.correct) == (r.n_test, round(r.test["top1"] * r.n_test)), \
        ("held-out test faces: same count and same number right as at training time", rep.n, rep.correct, r.test)
    assert rep.top5 == pytest.approx(r.test["top5"], abs=1e-12), "held-out top-5 as at training time"
    seen = rep.extra["seen_in_training"]
    assert (seen["train"], seen["val"], seen["n"]) == (0, 0, r.n_test), ("no test face was trained on", seen)
    whole, _ = evaluate_model(a, small_real)
    seen = whole.extra["seen_in_training"]
    assert (seen["train"], seen["val"], whole.n) == (r.n_train, r.n_val, r.n_train + r.n_val + r.n_test), seen


def test_whole_illustration_and_its_face_crop_get_the_same_top1(logistic_model, detect_tadne):
    import animeid
    from animeid.detect import crop_box_for, crop_face

    rec = animeid.load(logistic_model.model_path)
    assert rec.crop_fill is not None                 # measured on its training crops
    checked = 0
    for name in ("tadne_r0c1.jpg", "tadne_r1c3.jpg", "tadne_r2c2.jpg"):
        whole = rec.predict(detect_tadne / name)
        faces = whole["faces"]
        if not faces or faces[0]["box"] == [0, 0, whole["width"], whole["height"]]:
            continue
        crop = crop_face(detect_tadne / name, crop_box_for(faces[0]["box"], 0.2, rec.crop_fill), margin=0.2,
                         size=128)                   # as predict cuts it
        alone = rec.predict(crop)
        assert len(alone["faces"]) == 1
        assert alone["faces"][0]["candidates"][0]["name"] == faces[0]["candidates"][0]["name"]
        checked += 1
    assert checked >= 2


def test_predict_api_takes_path_pil_and_array(logistic_model, small_real):
    import animeid

    rec = animeid.load(logistic_model.model_path)
    f = sorted((small_real / "toyama_rin").iterdir())[0]
    by_path = rec.predict(f)
    by_pil = rec.predict(Image.open(f))
    by_arr = rec.predict(np.asarray(Image.open(f).convert("RGB")))
    top = [r["faces"][0]["candidates"][0]["name"] for r in (by_path, by_pil, by_arr)]
    assert len(set(top)) == 1
    assert len(by_path["faces"][0]["candidates"]) == 3
    assert rec.predict(f, top=5)["faces"][0]["candidates"][4]["p"] >= 0


# --------------------------------------------------------------------------- CLI

def test_cli_evaluate_json_counts_unknown_characters_as_errors(logistic_model, small_real, tmp_path, capsys):
    from animeid.cli import main

    data = tmp_path / "eval"
    shutil.copytree(small_real / "toyama_rin", data / "toyama_rin")
    shutil.copytree(small_real / "yagami_kou", data / "stranger")         # a name the model does not know
    assert main(["evaluate", str(logistic_model.model_path), str(data), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n_known, n_stranger = len(list((data / "toyama_rin").iterdir())), len(list((data / "stranger").iterdir()))
    assert last["n"] == n_known + n_stranger
    rin, stranger = last["per_class"]["toyama_rin"], last["per_class"]["stranger"]
    assert last["unknown_labels"] == ["stranger"] and (stranger["n"], stranger["correct"]) == (n_stranger, 0), \
        "every 'stranger' face is an error"
    assert stranger["top5_correct"] == 0 and rin["n"] == n_known
    assert last["top1"] == pytest.approx(rin["correct"] / last["n"], abs=1e-12), "top-1: only Rin's faces can be right"
    assert last["top5"] == pytest.approx(rin["top5_correct"] / last["n"], abs=1e-12), "top-5: only Rin's faces count"


def test_cli_predict_json_lines(logistic_model, detect_tadne, capsys):
    from animeid.cli import main

    assert main(["predict", str(logistic_model.model_path), str(detect_tadne / "tadne_r0c1.jpg"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(rec) == {"path", "faces"}
    face = rec["faces"][0]
    assert len(face["box"]) == 4 and len(face["candidates"]) == 3
    assert {"name", "p"} == set(face["candidates"][0])


# --------------------------------------------------------------------------- bad input

def _folder(root: Path, spec: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in spec.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_bad_datasets_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no pictures"):
        train(tmp_path / "empty", tmp_path / "m.animeid", method="forest")
    with pytest.raises(DatasetError, match="only one character"):
        train(_folder(tmp_path / "one", {"a": 5}), tmp_path / "m.animeid", method="forest")
    with pytest.raises(DatasetError, match="'b'"):
        train(_folder(tmp_path / "single", {"a": 5, "b": 1}), tmp_path / "m.animeid", method="forest")
    with pytest.raises(DatasetError, match="no such dataset folder"):
        train(tmp_path / "nope", tmp_path / "m.animeid", method="forest")
    assert not (tmp_path / "m.animeid").exists()


def test_unreadable_images_are_skipped_by_name(tmp_path, caplog):
    root = _folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 50)
    r = train(root, tmp_path / "m.animeid", method="forest", n_estimators=10)
    assert r.n_train + r.n_val + r.n_test == 12
    assert "broken.png" in caplog.text


def test_bad_model_files(tmp_path, logistic_model):
    import animeid

    (tmp_path / "x.animeid").write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="x.animeid"):
        animeid.load(tmp_path / "x.animeid")
    with pytest.raises(ModelFileError):
        animeid.load(tmp_path / "missing.animeid")
    # a model from a newer animeid
    newer = tmp_path / "newer.animeid"
    with zipfile.ZipFile(logistic_model.model_path) as zin, zipfile.ZipFile(newer, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "animeid-model.json":
                meta = json.loads(data)
                meta["animeid_version"] = "99.0.0"
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    with pytest.raises(ModelFileError, match="upgrade"):
        animeid.load(newer)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from animeid.cli import main

    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m.animeid"), "--method", "forest"]) == 1
    err = capsys.readouterr().err
    assert "no such dataset folder" in err and "Traceback" not in err
    (tmp_path / "bad.animeid").write_bytes(b"zzz")
    assert main(["predict", str(tmp_path / "bad.animeid"), str(tmp_path)]) == 1
    assert "bad.animeid" in capsys.readouterr().err


def test_finetune_runs_more_epochs_on_few_faces_but_never_fewer_than_six():
    """Without --epochs, fine-tuning takes at least MIN_STEPS steps, within 6..18 epochs; the full
    holoen16 split (3,452 faces) keeps its 6; given epochs are used as given."""
    from animeid.train import METHODS, auto_epochs

    assert METHODS["finetune"].defaults["epochs"] is None
    assert auto_epochs(3452, 32) == 6 and auto_epochs(100_000, 32) == 6
    assert auto_epochs(1040, 32) == 18 and auto_epochs(520, 32) == 18         # 33 / 17 steps an epoch; capped
    assert auto_epochs(192, 32) == 18 and auto_epochs(100, 32) == 18          # newgame8: 6 epochs were 36 steps
    assert auto_epochs(99, 32) == 6 and auto_epochs(36, 32) == 6              # tens of faces: more epochs overfit
    assert auto_epochs(2400, 32) == 8                                          # 75 steps an epoch -> 600 steps
