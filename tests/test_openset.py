"""Open set: unknown answers at the stored threshold, enrolling and forgetting characters, bad input."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from animeid.errors import InputError, ModelFileError

KNOWN = ["hazuki_shizuku", "lijima_yun", "sakura_nene", "suzukaze_aoba", "takimoto_hifumi", "toyama_rin"]
NEW = "yagami_kou"          # held out: enrolled in some tests, the stranger in others
OTHER = "ahagon_umiko"      # held out too


@pytest.fixture(scope="module")
def data(newgame8, tmp_path_factory) -> Path:
    """newgame8: up to 20 faces of each known character (the training set), all faces of the others."""
    out = tmp_path_factory.mktemp("os") / "data"
    for d in sorted(newgame8.iterdir()):
        if d.is_dir():
            files = sorted(d.iterdir())
            dest = out / ("known" if d.name in KNOWN else "held") / d.name
            dest.mkdir(parents=True)
            for f in files[:20] if d.name in KNOWN else files:
                shutil.copy(f, dest / f.name)
    return out


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    from animeid.train import train

    path = tmp_path_factory.mktemp("m") / "six.animeid"
    train(data / "known", path, method="logistic", progress=False, seed=0)
    return path


def _faces(data: Path, name: str) -> list[Path]:
    d = data / ("known" if name in KNOWN else "held") / name
    return sorted(d.iterdir())


def _top(verdicts) -> list[str]:
    return [v["name"] for v in verdicts]


def test_trained_model_carries_a_calibrated_layer_and_known_faces_keep_the_head(model, data):
    import animeid
    from animeid.modelfile import read_model

    b = read_model(model)
    assert isinstance(b.thresholds["unknown"], float) and b.thresholds["unknown_score"] == "prototype_z"
    assert {"openset.projection", "openset.sums", "openset.gallery"} <= set(b.extra_arrays)
    cal = b.thresholds["openset_calibration"]
    assert cal["stranger_folds"] == len(KNOWN) and cal["threshold_from"] == "strangers"
    # the threshold is the strangers' 85 % quantile (far 0.15): 85 % of them score below it, to one face
    assert cal["strangers_rejected"] == pytest.approx(0.85, abs=1 / cal["n_strangers"] + 1e-4), \
        ("strangers rejected at the calibrated threshold = 1 - far", cal["strangers_rejected"], cal["n_strangers"])
    rec = animeid.load(model)
    assert rec.labels == KNOWN and rec.openset is not None and not rec.openset.has_changes
    faces = [f for n in KNOWN for f in _faces(data, n)[:3]]
    # without enrolled characters the probabilities are the head's own
    X = rec.pipeline.transform(faces, cache=False)
    np.testing.assert_allclose(rec.predict_proba_faces(faces), rec.bundle.head.predict_proba(X), atol=1e-6)


def test_an_unknown_characters_faces_are_answered_unknown_at_the_stored_threshold(model, data):
    import animeid

    rec = animeid.load(model)
    stranger = rec.identify_faces(_faces(data, NEW), top=3)
    share = np.mean([v["name"] == "unknown" for v in stranger])
    assert share >= 0.5, share
    # the format: the verdict 'unknown', with the `top` closest named characters as candidates
    v = next(v for v in stranger if v["name"] == "unknown")
    c = v["candidates"]
    assert v["unknown"] is True and len(c) == 3 and all(x["name"] in KNOWN for x in c)
    assert c[0]["p"] >= c[1]["p"] >= c[2]["p"] and v["open_set"]["score"] < v["open_set"]["threshold"]
    # known faces mostly stay named (many of these trained the model; the rest are its test faces)
    known = rec.identify_faces([f for n in KNOWN for f in _faces(data, n)], top=3)
    assert np.mean([k["name"] == "unknown" for k in known]) <= 0.3
    # adjustable: 'off' never answers unknown, a very high threshold always does
    from animeid.predict import PredictConfig

    off = rec.identify_faces(_faces(data, NEW)[:5], cfg=PredictConfig(unknown=False))
    assert "unknown" not in _top(off)
    high = rec.identify_faces(_faces(data, KNOWN[0])[:5], cfg=PredictConfig(unknown_threshold=1e9))
    assert set(_top(high)) == {"unknown"}


def test_enrolled_character_is_named_in_its_other_pictures_and_survives_saving(model, data, tmp_path):
    import animeid

    rec = animeid.load(model)
    new_faces = _faces(data, NEW)
    r = rec.enroll(NEW, new_faces[:5])
    assert r == {"name": NEW, "added": 5, "faces": 5, "new": True}
    assert rec.labels == KNOWN + [NEW]
    rest = new_faces[5:]
    tops = _top(rec.identify_faces(rest, top=3))
    named = [t for t in tops if t != "unknown"]
    # 5 pictures, a model trained on 20 faces per character: about 2 in 3 named right (chance: 1 in 7)
    assert np.mean([t == NEW for t in tops]) >= 0.55, tops
    assert np.mean([t == NEW for t in named]) >= 0.65, named
    best = np.asarray(rec.labels)[rec.predict_proba_faces(rest).argmax(1)]
    assert np.mean(best == NEW) >= 0.55
    # known characters still named
    known = [f for n in KNOWN for f in _faces(data, n)[:4]]
    proba = rec.predict_proba_faces(known)
    assert proba.shape == (len(known), len(KNOWN) + 1)
    truth = [n for n in KNOWN for _ in range(4)]
    assert np.mean(np.asarray(rec.labels)[proba.argmax(1)] == truth) >= 0.8
    # enrolling more pictures adds to the character
    assert rec.enroll(NEW, rest[:2])["faces"] == 7 and rec.labels.count(NEW) == 1
    out = rec.save(tmp_path / "seven.animeid")
    again = animeid.load(out)
    assert again.labels == rec.labels
    np.testing.assert_allclose(again.predict_proba_faces(rest[2:8]), rec.predict_proba_faces(rest[2:8]), atol=1e-5)
    # evaluate (a folder per character) includes the enrolled character
    from animeid.evaluate import evaluate_model

    rep, _ = evaluate_model(again, _eval_folder(data, tmp_path, [NEW]))
    assert rep.unknown_labels == [] and rep.per_class[NEW]["accuracy"] >= 0.6


def _eval_folder(data: Path, tmp: Path, names: list[str]) -> Path:
    root = tmp / "eval"
    for n in names:
        shutil.copytree(data / ("known" if n in KNOWN else "held") / n, root / n)
    return root


def test_enrol_from_a_whole_illustration_uses_its_largest_face(model, detect_tadne):
    import animeid
    from animeid.detect import detect_faces

    rec = animeid.load(model)
    pic = detect_tadne / "tadne_r0c1.jpg"
    assert detect_faces(pic)
    from animeid.predict import PredictConfig

    crop = rec._enroll_crop(pic, PredictConfig())
    assert crop.size[0] == crop.size[1] and crop.size[0] < 512
    assert rec.enroll("tadne girl", [pic])["new"] is True
    assert rec.predict(pic)["faces"][0]["name"] in ("tadne girl", "unknown")


def test_forget_removes_enrolled_and_masks_trained_characters(model, data, tmp_path):
    import animeid

    rec = animeid.load(model)
    rec.enroll(NEW, _faces(data, NEW)[:5])
    rec.forget(NEW)
    assert rec.labels == KNOWN and len(rec.openset.gallery) == 0
    assert NEW not in _top(rec.identify_faces(_faces(data, NEW)))
    gone = KNOWN[3]
    r = rec.forget(gone)
    assert r["trained"] is True and gone not in rec.labels and len(rec.labels) == len(KNOWN) - 1
    assert rec.predict_proba_faces(_faces(data, gone)[:3]).shape == (3, len(KNOWN) - 1)
    assert gone not in _top(rec.identify_faces(_faces(data, gone)))
    path = rec.save(tmp_path / "five.animeid")
    assert animeid.load(path).labels == rec.labels
    with pytest.raises(InputError, match="no character"):
        rec.forget("nobody")


def test_enrol_errors_leave_the_model_file_as_it_was(model, data, tmp_path, capsys):
    import animeid
    from animeid.cli import main

    m = tmp_path / "m.animeid"
    shutil.copy(model, m)
    before = m.read_bytes()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a picture")
    good = [str(f) for f in _faces(data, NEW)[:3]]
    # an unreadable picture among good ones
    assert main(["enroll", str(m), NEW, *good, str(bad)]) == 1
    assert "broken.png" in capsys.readouterr().err
    # a missing file, an empty folder
    assert main(["enroll", str(m), NEW, str(tmp_path / "missing.png")]) == 1
    (tmp_path / "empty").mkdir()
    assert main(["enroll", str(m), NEW, str(tmp_path / "empty")]) == 1
    assert "no pictures" in capsys.readouterr().err
    # a reserved or invalid name
    assert main(["enroll", str(m), "unknown", *good]) == 1
    assert main(["enroll", str(m), "a/b", *good]) == 1
    assert m.read_bytes() == before
    # a model file that is not one
    fake = tmp_path / "fake.animeid"
    fake.write_bytes(b"PK\x03\x04 not really")
    fake_before = fake.read_bytes()
    assert main(["enroll", str(fake), NEW, *good]) == 1
    assert "not an animeid model" in capsys.readouterr().err and fake.read_bytes() == fake_before
    assert main(["forget", str(m), "nobody"]) == 1 and m.read_bytes() == before
    # the API: same errors, nothing changes in memory
    rec = animeid.load(m)
    with pytest.raises(InputError):
        rec.enroll(NEW, [])
    with pytest.raises(InputError):
        rec.enroll(NEW, [good[0], bad])
    assert rec.labels == KNOWN and len(rec.openset.gallery) == 0
    with pytest.raises(ModelFileError):
        animeid.load(fake)


def test_cli_enroll_out_forget_predict_and_evaluate_unknown(model, data, tmp_path, capsys):
    from animeid.cli import main

    m = tmp_path / "m.animeid"
    shutil.copy(model, m)
    before = m.read_bytes()
    out = tmp_path / "plus.animeid"
    shots = [str(f) for f in _faces(data, NEW)[:5]]
    assert main(["enroll", str(m), NEW, *shots, "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["new"] and r["characters"] == KNOWN + [NEW] and m.read_bytes() == before
    import animeid

    rest = _faces(data, NEW)[5:]
    from animeid.predict import PredictConfig

    named = _top(animeid.load(out).identify_faces(rest, cfg=PredictConfig(unknown=False)))
    probe = str(rest[named.index(NEW)])          # the CLI answers as the API does
    assert main(["predict", str(out), probe, "--json", "--unknown-threshold", "off"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["faces"][0]["candidates"][0]["name"] == NEW
    assert main(["predict", str(m), probe, "--json", "--unknown-threshold", "score:1e9"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["faces"][0]["name"] == "unknown" and res["faces"][0]["candidates"][0]["name"] in KNOWN
    # in place
    assert main(["forget", str(out), NEW]) == 0
    capsys.readouterr()
    # evaluate --unknown: AUROC and the figures at the stored threshold, in the JSON line
    known_dir = _eval_folder(data, tmp_path, KNOWN[:3])
    unk = tmp_path / "strangers"
    shutil.copytree(data / "held" / NEW, unk / NEW)
    shutil.copytree(data / "held" / OTHER, unk / OTHER)
    assert main(["evaluate", str(m), str(known_dir), "--unknown", str(unk), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"auroc", "unknown_rejected", "known_correct", "top1", "top5", "n"} <= set(d)
    assert d["auroc"] > 0.7           # a quality floor on real faces; the formula is pinned on hand-made scores below
    assert d["n_unknown"] == len(list(unk.rglob("*.jpg")))
    # the figures are the per-face verdicts counted: unknown_rejected = strangers answered 'unknown',
    # known_correct = known faces answered with their own name
    rec = animeid.load(m)
    strangers = rec.identify_faces(sorted(unk.rglob("*.jpg")))
    known_files = sorted(known_dir.rglob("*.jpg"))
    known_v = rec.identify_faces(known_files)
    assert d["unknown_rejected"] == pytest.approx(np.mean([v["unknown"] for v in strangers]), abs=1e-4), \
        "unknown_rejected: share of strangers whose verdict is 'unknown'"
    assert d["known_correct"] == pytest.approx(
        np.mean([v["name"] == f.parent.name for v, f in zip(known_v, known_files)]), abs=1e-4), \
        "known_correct: share of known faces whose verdict is their own name"


def test_openset_layer_round_trip_and_damage(model, tmp_path):
    from animeid.modelfile import read_model, save_model
    from animeid.openset import OpenSet

    b = read_model(model)
    layer = OpenSet.from_bundle(b)
    th, arr = layer.to_model_parts()
    again = OpenSet.from_bundle(dataclasses.replace(b, thresholds=th, extra_arrays=arr))
    assert again.labels == layer.labels and again.threshold == layer.threshold
    # a damaged layer (gallery rows without labels) is a ModelFileError naming the file
    bad = dict(b.extra_arrays)
    bad["openset.gallery"] = np.zeros((2, layer.projection.shape[1]), np.float32)
    p = save_model(tmp_path / "bad.animeid", b.head, method=b.method, backbone=b.backbone,
                   backbone_onnx=b.backbone_onnx, features=b.features, thresholds=b.thresholds, extra_arrays=bad)
    import animeid

    with pytest.raises(ModelFileError, match="open-set"):
        animeid.load(p)


@pytest.fixture(scope="module")
def ft_model(newgame8, tmp_path_factory):
    """A fine-tuned network's model (tiny run) on 4 newgame8 characters."""
    pytest.importorskip("torch")
    from animeid.train import train

    tmp = tmp_path_factory.mktemp("ft")
    data = tmp / "data"
    for n in KNOWN[:4]:
        shutil.copytree(newgame8 / n, data / n, ignore=lambda d, fs: sorted(fs)[10:])
    path = tmp / "ft.animeid"
    train(data, path, method="finetune", progress=False, input_size=96, trainable_blocks=1, epochs=1,
          batch_size=8, augmentation="flip")
    return path


def test_fine_tuned_network_model_uses_its_identity_output(ft_model, newgame8, tmp_path):
    """A fine-tuned network's model (tiny run): the layer embeds the network's 'identity' output and the
    colour histogram, its
    threshold comes from the known faces (the network saw every character), and enrolment works."""
    import animeid

    rec = animeid.load(ft_model)
    assert rec.spec.kind == "network" and rec.openset is not None
    assert rec.openset.calibration["threshold_from"] == "known faces"
    assert rec.openset.inputs == {"output": "identity", "color_weight": 2.0}
    assert rec.openset.score_kind == "prototype_z+p" and rec.unknown_score_kind == "prototype_z+p"
    from animeid.openset import KNOWN_REFUSAL

    assert rec.openset.far == KNOWN_REFUSAL == 0.08      # a network's threshold refuses 8 % of known val faces
    # fine-tuned embedding, frozen blocks 12 and 14, ImageNet block 15 and head, colour histogram
    assert rec.openset.center.shape == (1280 + 192 + 192 + 320 + 1280 + 480,)
    new = sorted((newgame8 / NEW).iterdir())
    rec.enroll(NEW, new[:3])
    proba, score = rec.predict_open_faces(new[3:8])
    assert proba.shape == (5, 5) and score.shape == (5,) and np.isfinite(score).all()
    again = animeid.load(rec.save(tmp_path / "ft+1.animeid"))
    np.testing.assert_allclose(again.predict_proba_faces(new[3:8]), proba, atol=1e-5)
    assert again.openset.score_norm == rec.openset.score_norm
    np.testing.assert_allclose(again.predict_open_faces(new[3:8])[1], score, atol=1e-4)


def test_model_without_stored_openset_inputs_predicts_as_before(model, data, tmp_path):
    """Models saved before ``openset_inputs`` was stored: the layer embeds what it embedded then (for a
    frozen-feature model, the head's features), so predictions and scores are unchanged."""
    import animeid
    from animeid.modelfile import read_model, save_model

    b = read_model(model)
    assert b.thresholds.get("openset_inputs") == {}
    th = {k: v for k, v in b.thresholds.items() if k != "openset_inputs"}
    old = save_model(tmp_path / "old.animeid", b.head, method=b.method, backbone=b.backbone,
                     backbone_onnx=b.backbone_onnx, features=b.features, thresholds=th, extra_arrays=b.extra_arrays)
    faces = sorted((data / "held" / NEW).iterdir())[:4] + sorted((data / "known" / KNOWN[0]).iterdir())[:4]
    new_rec, old_rec = animeid.load(model), animeid.load(old)
    assert old_rec.openset.inputs is None
    p1, s1 = new_rec.predict_open_faces(faces)
    p2, s2 = old_rec.predict_open_faces(faces)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_open_set_figures_on_hand_made_scores():
    """AUROC and the rates at a threshold on scores small enough to count by hand."""
    from animeid.openset import open_set_figures

    # known [0.9, 0.8] vs unknown [0.1, 0.85]: of the 4 pairs, 3 have the known face above -> 0.75
    f = open_set_figures([0.9, 0.8], [True, False], [0.1, 0.85], threshold=0.5)
    assert f["auroc"] == 0.75, "AUROC = share of (known, unknown) pairs ordered right"
    assert f["unknown_rejected"] == 0.5, "0.1 < 0.5 rejected, 0.85 let through"
    assert f["known_accepted"] == 1.0 and f["known_correct"] == 0.5, "both known accepted, one of them named right"
    assert (f["n_known"], f["n_unknown"], f["unknown_threshold"]) == (2, 2, 0.5)
    # ties count half; the threshold itself accepts (score >= threshold)
    assert open_set_figures([1.0, 1.0], [True, True], [1.0], threshold=1.0)["auroc"] == 0.5, "ties count half"
    t = open_set_figures([0.2, 0.4, 0.6], [True, True, True], [0.4, 0.7], threshold=0.4)
    assert (t["auroc"], t["unknown_rejected"], t["known_accepted"], t["known_correct"]) == (1.5 / 6, 0.0, 2 / 3, 2 / 3)
    assert open_set_figures([0.3], [True], [0.9, 0.7], threshold=0.5)["auroc"] == 0.0, "every unknown above: 0"
    # no threshold, or no faces on one side: None, not a number
    n = open_set_figures([0.9], [True], [0.1], threshold=None)
    assert (n["auroc"], n["unknown_rejected"], n["known_correct"], n["known_accepted"]) == (1.0, None, None, None)
    assert open_set_figures([0.9], [True], [], threshold=0.5)["auroc"] is None


def _tiny_layer(**kw):
    from animeid.openset import OpenSet

    return OpenSet(center=np.zeros(2), projection=np.eye(2), trained=["a"], sums=np.zeros((1, 2)), counts=np.ones(1),
                   genuine_mean=np.full(1, 0.5), genuine_sd=np.full(1, 0.1), gallery=np.zeros((0, 2)),
                   gallery_labels=[], **kw)


def test_refusal_rate_and_threshold_on_hand_made_known_quantiles():
    """Known-face quantiles [-2, -1, 0, 1, 2] at shares 0, .25, .5, .75, 1: rates and thresholds are
    linear between them."""
    layer = _tiny_layer(known_quantiles=np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), slope=3.0)
    assert layer.threshold_for_rate(0.25) == -1.0 and layer.threshold_for_rate(0.625) == 0.5
    assert layer.refusal_rate(0.5) == 0.625 and layer.refusal_rate(-1.0) == 0.25
    assert layer.refusal_rate(-2.0) == 0.0 and layer.refusal_rate(-5.0) == 0.0, "at or below the lowest: none refused"
    assert layer.refusal_rate(2.0) == 1.0 and layer.refusal_rate(9.0) == 1.0, "above the highest: all refused"
    assert layer.threshold_for_rate(0.0) == pytest.approx(-2.0 - 1e-9, abs=1e-12) and layer.threshold_for_rate(0.0) < -2.0
    assert layer.threshold_for_rate(1.0) == float("inf")
    assert layer.refusal_rate(None) is None and _tiny_layer().refusal_rate(0.0) is None
    # p(unknown) = sigmoid(slope * (threshold - score)): 0.5 at the threshold, 1/(1+e^-3) one below it
    np.testing.assert_allclose(layer.p_unknown(np.array([0.0, -1.0, 1.0]), 0.0),
                               [0.5, 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(3.0))], rtol=1e-12)
    with pytest.raises(InputError):
        layer.threshold_for_rate(1.5)
    with pytest.raises(ModelFileError, match="score:T"):
        _tiny_layer().threshold_for_rate(0.1)


def test_threshold_and_cluster_cut_on_hand_made_scores():
    from animeid.openset import _cluster_distance, _threshold_from

    strangers = np.arange(11.0)                          # 0..10: the 85 % quantile is 8.5
    assert _threshold_from(np.array([5.0, 6.0]), strangers, 0.15, False) == (8.5, "strangers")
    known = np.arange(21.0)                              # 0..20: the 15 % quantile is 3, the 5 % one 1
    assert _threshold_from(known, strangers, 0.15, True) == (3.0, "known faces"), "strangers seen: far of known"
    assert _threshold_from(known, np.zeros(0), 0.15, False) == (1.0, "known faces"), "no strangers: 5 % of known"
    gd, idd = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8, 0.9])
    assert _cluster_distance(gd, idd, False) == pytest.approx(0.2 + 0.4 * (0.8 - 0.2)), "40 % from genuine to impostor"
    assert _cluster_distance(gd, idd, True) == pytest.approx(0.9 * 0.8), "strangers seen: 90 % of impostor median"
    assert _cluster_distance(np.zeros(0), idd, False) is None


def test_score_with_the_highest_probability_on_synthetic_features():
    """A layer whose threshold is set on known faces (strangers_seen) and that is given the calibration
    faces' probabilities scores with the z-score and the highest probability together: standardised
    on those faces, a surer face scores higher, the threshold refuses ``far`` of them, and the
    standardisation survives the model file's thresholds; without probabilities it is refused."""
    from types import SimpleNamespace

    from animeid.openset import OpenSet, SCORE_WITH_P, fit_openset

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    means = rng.normal(size=(3, 16)) * 3

    def faces(n):
        y = np.repeat(classes, n)
        return means[np.repeat(np.arange(3), n)] + rng.normal(size=(3 * n, 16)), y

    F_tr, y_tr = faces(30)
    F_va, y_va = faces(20)
    P_va = rng.dirichlet(np.ones(3) * 0.3, size=len(y_va))
    layer = fit_openset(F_tr, y_tr, F_va, y_va, classes=classes, strangers_seen=True, far=0.1, P_cal=P_va)
    assert layer.score_kind == SCORE_WITH_P
    assert set(layer.score_norm) == {"z_mean", "z_sd", "p_mean", "p_sd", "weight", "p_temperature"}
    E = layer.embed(F_va)
    s = layer.score(E, P_va)
    # the threshold is the 10 % quantile of these 60 scores (between the 6th and 7th lowest): exactly 6 below
    assert abs(s.mean()) < 1e-6 and int(np.sum(s < layer.threshold)) == 6 and len(s) == 60
    assert layer.refusal_rate(layer.threshold) == pytest.approx(0.1, abs=0.01)
    sure = np.eye(3)[[0]] * 0.98 + 0.01
    unsure = np.full((1, 3), 1 / 3)
    assert layer.score(E[:1], sure)[0] > layer.score(E[:1], unsure)[0]
    with pytest.raises(ValueError, match="probabilities"):
        layer.score(E)
    th, arr = layer.to_model_parts()
    assert th["unknown_score"] == SCORE_WITH_P
    again = OpenSet.from_bundle(SimpleNamespace(extra_arrays=arr, thresholds=th, labels=classes, path=None))
    np.testing.assert_allclose(again.score(E, P_va), s)
    # predictions show the head's probabilities at its temperature: the score undoes it
    from animeid.calibration import apply_temperature

    hot = fit_openset(F_tr, y_tr, F_va, y_va, classes=classes, strangers_seen=True, far=0.1, P_cal=P_va,
                      p_temperature=0.5)
    np.testing.assert_allclose(hot.score(E, apply_temperature(P_va, 0.5)), s, atol=1e-9)
    # without the probabilities, or with strangers scored, the score stays the z-score alone
    assert fit_openset(F_tr, y_tr, F_va, y_va, classes=classes, strangers_seen=True).score_kind == "prototype_z"
    assert fit_openset(F_tr, y_tr, F_va, y_va, classes=classes, P_cal=P_va).score_kind == "prototype_z"
    bad = {**th, "openset_score_norm": {**th["openset_score_norm"], "z_sd": -1.0}}
    with pytest.raises(ModelFileError, match="open-set"):
        OpenSet.from_bundle(SimpleNamespace(extra_arrays=arr, thresholds=bad, labels=classes, path=None))


def test_flip_auto_reads_the_mirror_image_only_of_close_answers(ft_model, newgame8, monkeypatch):
    """``flip``: ``always`` gives what the whole flip-averaging graph gives; ``never`` one view only;
    ``auto`` mirrors exactly the faces whose answer is close (every face when all are close, none when
    none is and the unknown threshold is off)."""
    import animeid
    import animeid.predict as P
    from animeid.predict import PredictConfig

    rec = animeid.load(ft_model)
    assert rec.pipeline.run_views([np.zeros((96, 96, 3), np.uint8)]) is not None   # the graph splits
    faces = [p for n in KNOWN[:5] for p in sorted((newgame8 / n).iterdir())[10:13]]
    whole, whole_s = rec.predict_open_faces(faces)            # the whole graph's numbers, as evaluate reads them

    def run(flip, **kw):
        v = rec.identify_faces(faces, PredictConfig(flip=flip, top=4, **kw))
        return np.array([[c["p"] for c in sorted(x["candidates"], key=lambda c: c["name"])] for x in v]), \
            np.array([x["open_set"]["score"] for x in v])

    p_always, s_always = run("always")
    np.testing.assert_allclose(p_always, whole, atol=1e-4)
    np.testing.assert_allclose(s_always, whole_s, atol=1e-3)
    p_never, s_never = run("never")
    assert np.abs(s_never - s_always).max() > 1e-3             # one view is not both
    mirrored = []
    real = rec.pipeline.add_mirror
    monkeypatch.setattr(rec.pipeline, "add_mirror", lambda v, imgs, bs=32: mirrored.append(len(imgs)) or real(v, imgs, bs))
    monkeypatch.setattr(P, "MIRROR_BELOW_P", 1.01)             # every answer close: all mirrored
    p_auto, s_auto = run("auto")
    np.testing.assert_allclose(p_auto, p_always, atol=1e-6)
    np.testing.assert_allclose(s_auto, s_always, atol=1e-6)
    assert mirrored == [len(faces)]
    monkeypatch.setattr(P, "MIRROR_BELOW_P", 0.0)              # none close by probability, threshold off: none
    mirrored.clear()
    p_auto, s_auto = run("auto", unknown=False)
    assert mirrored == []
    np.testing.assert_allclose(s_auto, s_never, atol=1e-6)
    monkeypatch.setattr(P, "MIRROR_SCORE_MARGIN", 1e9)         # every score near the threshold: all mirrored
    p_auto, s_auto = run("auto")
    assert mirrored == [len(faces)]
    np.testing.assert_allclose(s_auto, s_always, atol=1e-6)


def test_a_fine_tuned_model_is_stored_as_one_view_and_needs_no_onnx_package(ft_model, newgame8, monkeypatch):
    """``train`` stores a fine-tuned graph already split into one view (model format 2, the recipe in
    ``features["one_view"]``): reading it splits nothing (no ``onnx`` package needed, as in the light
    install), and both views of every face give what the whole flip-averaging graph gave."""
    import animeid
    import animeid.onnx_export as X
    from animeid.modelfile import read_model
    from animeid.onnx_export import one_view_graph

    b = read_model(ft_model)
    assert b.format_version == 2 and b.features["one_view"]["outputs"] == ["probs", "embedding", "identity"]
    assert one_view_graph(b.backbone_onnx) is None          # no mirror inside the stored graph
    monkeypatch.setattr(X, "one_view_graph", lambda *a: pytest.fail("the stored graph was split again"))
    rec = animeid.load(ft_model)
    faces = [p for n in KNOWN[:5] for p in sorted((newgame8 / n).iterdir())[10:12]]
    p, s = rec.predict_open_faces(faces)                     # both views of every face
    views = rec.pipeline.run_views(faces)
    both = rec.pipeline.add_mirror(views, faces)
    one = rec.pipeline.view_outputs(views)
    assert np.abs(both["probs"] - one["probs"]).max() > 1e-4    # the stored graph is one view
    assert p.shape == (len(faces), 4) and np.isfinite(s).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    # (that two runs of a split graph give exactly the flip-averaging graph's outputs:
    # tests/test_finetune.py::test_one_view_graph_gives_the_flip_averaged_outputs_exactly)
