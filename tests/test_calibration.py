"""Issue 12 §5: calibrated probabilities. Temperature scaling of the head's probabilities (fitted at
training time on the validation faces, applied by every prediction), the expected calibration error
in ``evaluate`` and its reliability diagram.

Synthetic probabilities for the maths; the drawn-face model (``generated_model``) for the model file,
predictions and the CLI. No ../shared/data.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.calibration import (apply_temperature, expected_calibration_error, fit_temperature,
                                 reliability_bins, stored_temperature)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sampled(n: int = 4000, c: int = 8, scale: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and true classes drawn from ``softmax(logits)``: those probabilities are honest."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, (n, c))
    p = _softmax(logits)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, y


# --------------------------------------------------------------------------- temperature

@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    logits, y = _sampled()
    shown = _softmax(logits * true_t)          # honest at temperature true_t: softmax(log(shown) / true_t)
    t = fit_temperature(shown, y)
    assert abs(t - true_t) / true_t < 0.10, t
    honest = apply_temperature(shown, t)
    assert np.allclose(honest, _softmax(logits), atol=0.03)


def test_fit_temperature_leaves_honest_probabilities_alone():
    logits, y = _sampled(seed=3)
    assert abs(fit_temperature(_softmax(logits), y) - 1.0) < 0.1


def test_fit_temperature_needs_enough_faces_of_two_characters():
    logits, y = _sampled(n=400)
    shown = _softmax(logits * 3)
    assert fit_temperature(shown, y) != 1.0
    assert fit_temperature(shown[:19], y[:19]) == 1.0                 # fewer than 20 faces
    one = y == y[0]
    assert fit_temperature(shown[one], y[one]) == 1.0                 # one character only
    unknown = np.where(np.arange(len(y)) < 390, -1, y)                # true classes the head lacks: left out
    assert fit_temperature(shown, unknown) == 1.0
    right = shown.argmax(axis=1) == y                                 # no mistake: no evidence against certainty
    assert fit_temperature(shown[right], y[right]) == 1.0
    right[np.flatnonzero(~right)[:3]] = True                          # three mistakes: something to fit
    assert fit_temperature(shown[right], y[right]) < 1.0
    with pytest.raises(ValueError, match="proba must be"):
        fit_temperature(shown, y[:-1])


def test_a_true_class_with_probability_zero_does_not_break_the_fit():
    logits, y = _sampled(n=600, seed=1)
    shown = _softmax(logits * 0.5)
    shown[0] = 0.0
    shown[0, (y[0] + 1) % shown.shape[1]] = 1.0                       # certain, and wrong
    t = fit_temperature(shown, y)
    assert np.isfinite(t) and abs(t - 0.5) / 0.5 < 0.15


def test_apply_temperature_keeps_the_ranking_and_sums_to_one():
    logits, _ = _sampled(n=200, seed=2)
    p = _softmax(logits)
    p[0] = [0.0, 0.5, 0.5, 0, 0, 0, 0, 0]
    for t in (0.05, 0.3, 2.0, 20.0):
        q = apply_temperature(p, t)
        assert q.shape == p.shape and np.all(np.isfinite(q))
        assert np.allclose(q.sum(axis=1), 1.0)
        assert np.array_equal(q.argmax(axis=1), p.argmax(axis=1))
        assert np.all(q[p == 0] == 0)                                 # a zero stays zero
    assert apply_temperature(p, 2.0)[1].max() < p[1].max() < apply_temperature(p, 0.5)[1].max()
    assert apply_temperature(p, 1.0) is p                             # unchanged, not even copied
    assert np.array_equal(apply_temperature(np.zeros((2, 3)), 2.0), np.zeros((2, 3)))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(p, bad)


def test_stored_temperature_reads_and_checks_the_model_files_value():
    from animeid.errors import ModelFileError

    assert stored_temperature({}) == 1.0 and stored_temperature(None) == 1.0
    assert stored_temperature({"head_temperature": 2}) == 2.0
    for bad in (-1, 0, "x", None, True, float("inf"), [1.5]):
        with pytest.raises(ModelFileError, match="head_temperature must be a finite number above 0") as e:
            stored_temperature({"head_temperature": bad}, "m.animeid")
        assert str(e.value).startswith("m.animeid: ")


# --------------------------------------------------------------------------- ECE and bins

def test_ece_is_small_for_honest_and_large_for_over_confident_probabilities():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 20000)
    honest = rng.random(20000) < conf
    assert expected_calibration_error(conf, honest) < 0.015
    over = rng.random(20000) < 0.6 * conf
    assert expected_calibration_error(conf, over) > 0.2


def test_ece_by_hand_and_its_bins():
    conf = [0.95, 0.95, 0.55, 0.55, 0.0, 1.0]
    correct = [True, False, True, True, False, True]
    # bins (0.9333, 1]: 0.95, 0.95, 1.0 -> accuracy 2/3, confidence 0.9667; (0.5333, 0.6]: accuracy 1, confidence 0.55;
    # the first bin holds 0.0: accuracy 0, confidence 0
    want = (3 * abs(2 / 3 - 2.9 / 3) + 2 * 0.45 + 0) / 6
    assert expected_calibration_error(conf, correct) == pytest.approx(want)
    bins = reliability_bins(conf, correct)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 6
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0 and bins[0]["n"] == 1 and bins[-1]["n"] == 3
    assert bins[8] == {"lo": 0.533333, "hi": 0.6, "n": 2, "confidence": 0.55, "accuracy": 1.0}
    assert bins[5] == {"lo": 0.333333, "hi": 0.4, "n": 0, "confidence": None, "accuracy": None}
    json.dumps(bins, allow_nan=False)
    assert sum(b["n"] for b in reliability_bins(np.linspace(0, 1, 101), np.ones(101), bins=7)) == 101
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([1.5], [True])
    with pytest.raises(ValueError, match="correct flags"):
        reliability_bins([0.5, 0.6], [True])


def test_evaluate_reports_the_ece_of_the_top1_probability():
    from animeid.evaluate import evaluate_predictions

    logits, y = _sampled(n=1000, c=5, seed=4)
    labels = ["a", "b", "c", "d", "e"]
    names = [labels[i] for i in y]
    over = evaluate_predictions(names, _softmax(logits * 3), labels)
    honest = evaluate_predictions(names, _softmax(logits), labels)
    assert honest.ece < 0.05 < 0.15 < over.ece
    top = _softmax(logits * 3)
    assert over.ece == pytest.approx(expected_calibration_error(top.max(axis=1), top.argmax(axis=1) == y))
    d = json.loads(json.dumps(over.to_dict(), allow_nan=False))
    assert d["ece"] == over.ece and sum(b["n"] for b in d["reliability"]) == 1000
    assert f"calibration error (ECE) {over.ece:.3f}" in over.to_markdown()
    scores = evaluate_predictions(["a", "b"], np.array([[3.0, 1.0], [0.0, 2.0]]), ["a", "b"])   # no probabilities
    assert scores.top1 == 1.0 and scores.ece is None and scores.reliability == []
    assert "ECE" not in scores.to_markdown()


def test_plot_reliability_writes_an_animeid_png(tmp_path):
    from animeid.evaluate import evaluate_predictions, plot_reliability
    from animeid.outputs import is_animeid_png

    logits, y = _sampled(n=300, c=4, seed=5)
    rep = evaluate_predictions([str(i) for i in y], _softmax(logits * 2), ["0", "1", "2", "3"])
    out = plot_reliability(rep, tmp_path / "sub" / "rel.png", title="drawn")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
    assert is_animeid_png(out)
    p = _softmax(logits)
    out2 = plot_reliability((p.max(axis=1), p.argmax(axis=1) == y), tmp_path / "rel2.png")
    assert is_animeid_png(out2)
    scores = evaluate_predictions(["a"], np.array([[3.0, 1.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="no probabilities"):
        plot_reliability(scores, tmp_path / "rel3.png")
    assert not (tmp_path / "rel3.png").exists()


# --------------------------------------------------------------------------- training

class _Head:
    classes_ = np.array(["a", "b", "c"])

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)


class _Pipeline:
    def transform(self, images, **kw):
        return np.asarray(images, dtype=np.float64)


def test_training_fits_the_temperature_on_the_validation_faces(caplog):
    from animeid.train import Fitted, _head_calibration

    logits, y = _sampled(n=1000, c=3, seed=7)
    over = _softmax(logits * 2.5)                       # an over-confident head: "features" are its probabilities
    fitted = Fitted(head=_Head(), pipeline=_Pipeline())
    va_y = [str(_Head.classes_[i]) for i in y]
    got = _head_calibration(fitted, list(over), va_y)
    t = got["head_temperature"]
    assert t == round(t, 4) and abs(t - 2.5) / 2.5 < 0.15
    ece = got["head_ece"]
    assert ece["n"] == 1000 and ece["after"] < 0.04 < 0.08 < ece["before"]
    assert _head_calibration(fitted, [], []) == {}
    few = _head_calibration(fitted, list(over[:8]), va_y[:8])
    assert few["head_temperature"] == 1.0 and few["head_ece"]["before"] == few["head_ece"]["after"]

    class Broken(_Head):
        def predict_proba(self, X):
            raise RuntimeError("the head broke")

    with caplog.at_level(logging.WARNING, logger="animeid"):
        assert _head_calibration(Fitted(head=Broken(), pipeline=_Pipeline()), list(over), va_y) == {}
    assert "head temperature skipped: the head broke" in caplog.text


# --------------------------------------------------------------------------- model files and predictions

def _rewritten(src: Path, dst: Path, **changes) -> Path:
    """A copy of the model ``src`` whose thresholds have ``changes`` (value None: key removed), written
    the way :meth:`Recognizer.save` writes models."""
    from animeid.predict import Recognizer

    rec = Recognizer.load(src)
    th = rec.bundle.thresholds
    for k, v in changes.items():
        if v is None:
            th.pop(k, None)
        else:
            th[k] = v
    return rec.save(dst)


def _raw_head(rec, faces) -> np.ndarray:
    return np.asarray(rec.bundle.head.predict_proba(rec.pipeline.transform(faces, cache=False)), dtype=np.float64)


def test_a_trained_model_stores_its_head_temperature(generated_model):
    from animeid.modelfile import read_model

    b = read_model(generated_model.path)
    t = b.thresholds["head_temperature"]
    assert isinstance(t, float) and 0.05 <= t <= 20.0
    ece = b.thresholds["head_ece"]
    assert set(ece) == {"before", "after", "n"} and ece["n"] == b.training["n_val"]
    assert 0.0 <= ece["after"] <= 1.0
    assert b.training["test"]["ece"] is not None


def test_predictions_apply_the_stored_temperature_and_save_keeps_it(generated_model, tmp_path):
    from animeid.predict import Recognizer

    faces = [p for name in generated_model.chars[:4] for p in generated_model.held_out(name)[:2]]
    warm = Recognizer.load(_rewritten(generated_model.path, tmp_path / "warm.animeid", head_temperature=2.5))
    assert warm.head_temperature == 2.5
    raw = _raw_head(warm, faces)
    got = warm.predict_proba_faces(faces)
    assert np.allclose(got, apply_temperature(raw, 2.5), atol=1e-9)
    assert not np.allclose(got, raw, atol=1e-3)                         # the temperature did something
    answer = warm.predict(faces[0], detect="never", top=2)["faces"][0]
    assert answer["candidates"][0]["p"] == round(float(got[0].max()), 4)
    again = Recognizer.load(warm.save(tmp_path / "again.animeid"))      # Recognizer.save keeps the key
    assert again.head_temperature == 2.5 and again.bundle.thresholds["head_ece"] == warm.bundle.thresholds["head_ece"]
    assert np.allclose(again.predict_proba_faces(faces), got)


def test_a_model_without_a_temperature_predicts_as_before(generated_model, tmp_path):
    from animeid.predict import Recognizer

    faces = [p for name in generated_model.chars[:4] for p in generated_model.held_out(name)[:2]]
    old = Recognizer.load(_rewritten(generated_model.path, tmp_path / "old.animeid", head_temperature=None,
                                     head_ece=None))
    assert "head_temperature" not in old.bundle.thresholds and old.head_temperature == 1.0
    assert np.allclose(old.predict_proba_faces(faces), _raw_head(old, faces), atol=1e-9)


@pytest.mark.parametrize("bad", [-1, 0, "x", True])
def test_a_bad_stored_temperature_is_a_clear_model_file_error(generated_model, tmp_path, bad):
    from animeid.errors import ModelFileError
    from animeid.predict import Recognizer

    path = _rewritten(generated_model.path, tmp_path / "bad.animeid", head_temperature=bad)
    with pytest.raises(ModelFileError, match="head_temperature must be a finite number above 0") as e:
        Recognizer.load(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def held_out(generated_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calibration-held-out") / "faces"
    for name in generated_model.chars:
        (root / name).mkdir(parents=True)
        for p in generated_model.held_out(name)[:3]:
            shutil.copy(p, root / name / p.name)
    return root


def test_evaluate_writes_a_reliability_diagram_and_never_replaces_a_users_png(generated_model, held_out, tmp_path,
                                                                              capsys):
    from animeid.cli import main
    from animeid.outputs import is_animeid_png

    rel, conf = tmp_path / "rel.png", tmp_path / "c.png"
    args = ["evaluate", str(generated_model.path), str(held_out), "--confusion", str(conf)]
    assert main([*args, "--reliability", str(rel), "--json", "--quiet"]) == 0
    out = capsys.readouterr()
    d = json.loads(out.out.strip().splitlines()[-1])
    assert d["reliability_png"] == str(rel) and sum(b["n"] for b in d["reliability"]) == 24
    # the reported ECE is the reported bins' (Guo et al. eq. 3), to rounding: one computation, two outputs
    assert d["ece"] == pytest.approx(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in d["reliability"]
                                         if b["n"]) / 24, abs=1e-4)
    assert f"reliability diagram: {rel}" in out.err and "calibration error (ECE)" in out.err
    assert is_animeid_png(rel)
    with Image.open(rel) as im:
        assert im.format == "PNG"
    assert main([*args, "--reliability", str(rel), "--quiet"]) == 0          # its own plot: replaced
    assert f"reliability diagram: {rel}" in capsys.readouterr().out

    mine = tmp_path / "mine.png"
    Image.new("RGB", (8, 8)).save(mine)                                       # a PNG animeid did not draw
    before = mine.read_bytes()
    assert main([*args, "--reliability", str(mine), "--quiet"]) == 1
    assert "is not a plot animeid wrote" in capsys.readouterr().err and mine.read_bytes() == before
    conf_before = conf.read_bytes()
    assert main([*args, "--reliability", str(conf), "--quiet"]) == 1        # one file cannot hold both plots
    assert "names the confusion matrix's file" in capsys.readouterr().err and conf.read_bytes() == conf_before
    assert main([*args, "--quiet"]) == 0                                      # without the option: no diagram
    assert "reliability diagram" not in capsys.readouterr().out
