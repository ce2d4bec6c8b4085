"""Heads and features: scikit-learn behaviour, pickle-free round trips, the numpy forest."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from animeid.heads import (
    HEADS,
    STUDY_FOREST_PARAMS,
    ColorHistogram,
    LogisticHead,
    PixelForest,
    SoftmaxHead,
    color_histogram,
    color_histograms,
    combine_features,
    head_from_arrays,
    head_name,
    pixel_features,
)


def _blobs(n_per=30, n_classes=3, d=12, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, size=(n_classes, d))
    X = np.vstack([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat([f"char_{i}" for i in range(n_classes)], n_per)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


def _pictures(n_per=12, size=16, seed=0):
    """Tiny pictures of 3 'characters': red, green or blue blocks in different places, plus noise."""
    rng = np.random.default_rng(seed)
    imgs, ys = [], []
    for k, colour in enumerate([(220, 40, 40), (40, 200, 60), (50, 60, 220)]):
        for _ in range(n_per):
            img = rng.integers(0, 90, size=(size, size, 3))
            r = rng.integers(0, size // 2)
            img[r: r + size // 2, k * size // 4: k * size // 4 + size // 2] = colour
            imgs.append(img.astype(np.uint8))
            ys.append(["aka", "midori", "ao"][k])
    perm = rng.permutation(len(ys))
    return np.stack(imgs)[perm], np.array(ys)[perm]


def _npz_roundtrip(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------------------
# scikit-learn behaviour
# ----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Skipping check")
@pytest.mark.parametrize("est", [LogisticHead(), SoftmaxHead(steps=300, learning_rate=0.1),
                                 SoftmaxHead(optimizer="lbfgs", max_iter=100)], ids=["logistic", "sgd", "lbfgs"])
def test_check_estimator(est):
    check_estimator(est)


@pytest.mark.parametrize("cls", [PixelForest, SoftmaxHead, LogisticHead, ColorHistogram])
def test_clone_get_set_params(cls):
    est = cls()
    params = est.get_params()
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    key = sorted(params)[0]
    est.set_params(**{key: params[key]})
    assert est.get_params() == params
    with pytest.raises(ValueError):
        est.set_params(no_such_param=1)


def test_unfitted_raises():
    X, _ = _blobs()
    for est in (LogisticHead(), SoftmaxHead()):
        with pytest.raises(NotFittedError):
            est.predict(X)
        with pytest.raises(NotFittedError):
            est.to_arrays()
    with pytest.raises(NotFittedError):
        PixelForest().predict_proba(_pictures()[0])


def test_grid_search_heads():
    X, y = _blobs(n_per=20, seed=1)
    gs = GridSearchCV(LogisticHead(), {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    # separable blobs: both C score every fold right, and the tie goes to the first candidate
    assert gs.cv_results_["mean_test_score"].tolist() == [1.0, 1.0], "both C values: 3-fold accuracy 1.0"
    assert gs.best_params_ == {"C": 0.01} and gs.best_estimator_.C == 0.01, "a tie picks the first C, and it is used"
    # at 1e-7 the 200 steps leave the random initial weights in charge: near chance
    gs = GridSearchCV(SoftmaxHead(steps=200, validation_fraction=0), {"learning_rate": [1e-7, 0.1]}, cv=3).fit(X, y)
    assert gs.best_params_["learning_rate"] == 0.1
    assert gs.cv_results_["mean_test_score"][0] < 0.6, "learning rate 1e-7: near chance (1/3)"
    assert gs.cv_results_["mean_test_score"][1] == 1.0, "learning rate 0.1: every fold of the separable blobs right"


def test_grid_search_pixel_forest_on_pictures():
    X, y = _pictures()
    gs = GridSearchCV(PixelForest(size=16), {"n_estimators": [3, 20]}, cv=3).fit(X, y)
    assert gs.best_score_ > 0.8
    assert set(gs.predict(X[:5])) <= {"aka", "midori", "ao"}


# ----------------------------------------------------------------------------------------------
# random forest: numpy traversal == scikit-learn
# ----------------------------------------------------------------------------------------------
def test_pixel_forest_numpy_predict_proba_equals_sklearn():
    X, y = _pictures(n_per=15)
    forest = PixelForest(size=16, n_estimators=25, n_jobs=1).fit(X[:36], y[:36])
    test = X[36:]
    ours = forest.predict_proba(test)
    theirs = forest.estimator_.predict_proba(pixel_features(test, 16))
    assert np.array_equal(ours, theirs)
    assert np.array_equal(forest.predict(test), forest.estimator_.predict(pixel_features(test, 16)))
    assert forest.oob_score_ == forest.estimator_.oob_score_ == 1.0, "out-of-bag score kept: 1.0 on the easy pictures"


def test_pixel_forest_study_params_and_round_trip():
    X, y = _pictures(n_per=10)
    forest = PixelForest(size=16, **STUDY_FOREST_PARAMS).fit(X, y)
    params = forest.get_params()
    assert params["random_state"] == 24 and params["oob_score"] is True and params["n_estimators"] == 189
    assert max(e.get_depth() for e in forest.estimator_.estimators_) <= 13
    loaded = PixelForest.from_arrays(_npz_roundtrip(forest.to_arrays()), forest.to_params())
    assert not hasattr(loaded, "estimator_")
    assert np.array_equal(loaded.predict_proba(X), forest.predict_proba(X))
    assert list(loaded.classes_) == list(forest.classes_)
    assert loaded.oob_score_ == forest.oob_score_


def test_pixel_forest_accepts_paths_and_pil(tmp_path):
    X, y = _pictures(n_per=6, size=24)
    paths = []
    for i, img in enumerate(X):
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    f1 = PixelForest(size=24, n_estimators=10).fit(paths, y)
    f2 = PixelForest(size=24, n_estimators=10).fit(X, y)
    assert np.array_equal(f1.predict_proba([Image.open(p) for p in paths]), f2.predict_proba(X))
    with pytest.raises(ValueError, match="pictures"):
        f2.predict_proba(np.zeros((5, 24 * 24 * 3)))  # a feature matrix is not pictures


def test_pixel_forest_on_newgame8(newgame8: Path):
    paths = sorted(newgame8.glob("*/*.jpg"))
    y = np.array([p.parent.name for p in paths])
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    test[rng.choice(len(y), size=len(y) // 5, replace=False)] = True
    X = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    forest = PixelForest(size=48, n_estimators=60).fit(X[~test], y[~test])
    acc = float(np.mean(forest.predict(X[test]) == y[test]))
    assert acc > 0.45  # chance 1/8, majority class 21 %


# ----------------------------------------------------------------------------------------------
# SoftmaxHead / LogisticHead
# ----------------------------------------------------------------------------------------------
def test_softmax_head_history_and_defaults():
    X, y = _blobs(n_per=40)
    head = SoftmaxHead(steps=1000, eval_every=100).fit(X, y)
    h = head.history_
    assert h["step"] == list(range(100, 1001, 100))
    assert set(h) == {"step", "train_accuracy", "train_loss", "val_accuracy", "val_loss"}
    assert all(len(v) == 10 for v in h.values())
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["val_accuracy"][-1] == 1.0, "separable blobs: every validation row right after 1000 steps"
    p = SoftmaxHead().get_params()
    assert (p["steps"], p["learning_rate"], p["batch_size"], p["validation_fraction"]) == (10000, 0.01, 10, 0.1)


def test_softmax_head_explicit_validation_and_bad_labels():
    X, y = _blobs(n_per=30)
    head = SoftmaxHead(steps=300, validation_fraction=0.5, standardize=True).fit(X[:60], y[:60],
                                                                              X_val=X[60:], y_val=y[60:])
    assert len(head.history_["val_accuracy"]) == 3, "the given validation set is scored at steps 100, 200, 300"
    # all 60 training rows kept (validation_fraction ignored): the standardisation mean is theirs
    np.testing.assert_allclose(head.mean_, X[:60].mean(axis=0), err_msg="mean_ of all 60 training rows")
    with pytest.raises(ValueError, match="not in the training labels"):
        SoftmaxHead(steps=10).fit(X[:60], y[:60], X_val=X[60:62], y_val=["nobody", "nobody"])
    no_val = SoftmaxHead(steps=100, validation_fraction=0).fit(X, y)
    assert "val_accuracy" not in no_val.history_


def test_softmax_head_is_seeded():
    X, y = _blobs()
    a = SoftmaxHead(steps=500, random_state=3).fit(X, y).predict_proba(X)
    b = SoftmaxHead(steps=500, random_state=3).fit(X, y).predict_proba(X)
    c = SoftmaxHead(steps=500, random_state=4).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_label_smoothing_changes_probabilities():
    X, y = _blobs(sep=4.0)
    plain = SoftmaxHead(steps=3000, learning_rate=0.1, label_smoothing=0.0, validation_fraction=0).fit(X, y)
    smooth = SoftmaxHead(steps=3000, learning_rate=0.1, label_smoothing=0.2, validation_fraction=0).fit(X, y)
    p0, p1 = plain.predict_proba(X), smooth.predict_proba(X)
    assert not np.allclose(p0, p1, atol=1e-3)
    assert p1.max(axis=1).mean() < p0.max(axis=1).mean() - 0.01  # less confident
    # smoothing 0.2 over 3 classes targets 1 - 0.2 + 0.2 / 3 = 0.8667 for the true class: confidence sits there
    assert p1.max(axis=1).mean() == pytest.approx(0.8 + 0.2 / 3, abs=0.01), "mean confidence at the smoothing target"
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxHead(label_smoothing=1.0).fit(X, y)


def test_lbfgs_and_logistic_heads_fit_well():
    X, y = _blobs(n_per=30, n_classes=4, seed=2)
    for head in (SoftmaxHead(optimizer="lbfgs", validation_fraction=0), LogisticHead()):
        head.fit(X[:80], y[:80])
        assert np.mean(head.predict(X[80:]) == y[80:]) == 1.0, "separable blobs: all 40 held-out rows right"
        proba = head.predict_proba(X[80:])
        assert proba.shape == (40, 4) and np.allclose(proba.sum(axis=1), 1)


def test_logistic_head_matches_sklearn_binary_and_multiclass():
    for n_classes in (2, 3):
        X, y = _blobs(n_per=25, n_classes=n_classes, sep=1.0, seed=5)
        head = LogisticHead(C=0.5).fit(X, y)
        Xs = (X / np.linalg.norm(X, axis=1, keepdims=True) - head.mean_) / head.scale_
        ref = LogisticRegression(C=0.5, max_iter=2000).fit(Xs, y)
        assert head.coef_.shape == (n_classes, X.shape[1])
        assert np.allclose(head.predict_proba(X), ref.predict_proba(Xs), atol=1e-9)
        assert np.array_equal(head.predict(X), ref.predict(Xs))


@pytest.mark.parametrize("make", [
    lambda: SoftmaxHead(steps=300, standardize=True, l2_normalize=True),
    lambda: SoftmaxHead(optimizer="lbfgs", max_iter=50),
    lambda: LogisticHead(),
], ids=["sgd", "lbfgs", "logistic"])
def test_linear_heads_round_trip_through_npz(make):
    X, y = _blobs()
    head = make().fit(X, y)
    arrays = head.to_arrays()
    assert all(not np.asarray(a).dtype.hasobject for a in arrays.values())
    loaded = head_from_arrays(head_name(head), _npz_roundtrip(arrays), head.to_params())
    assert type(loaded) is type(head)
    assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert list(loaded.predict(X)) == list(head.predict(X))
    if isinstance(head, SoftmaxHead):
        assert loaded.history_ == head.history_


def test_from_arrays_errors():
    X, y = _blobs()
    head = LogisticHead().fit(X, y)
    arrays = head.to_arrays()
    with pytest.raises(ValueError, match="unknown head"):
        head_from_arrays("KNNHead", arrays, {})
    broken = dict(arrays)
    del broken["coef"]
    with pytest.raises(KeyError, match="coef"):
        LogisticHead.from_arrays(broken, head.to_params())
    broken = dict(arrays, coef=arrays["coef"][:, :3])
    with pytest.raises(ValueError, match="inconsistent"):
        LogisticHead.from_arrays(broken, head.to_params())
    with pytest.raises(TypeError):
        head_name(object())
    assert set(HEADS) == {"PixelForest", "SoftmaxHead", "LogisticHead", "ProbabilityHead"}


def test_probability_head_passes_network_probabilities_through():
    from animeid.heads import ProbabilityHead

    head = ProbabilityHead().set_classes(["a", "b", "c"])
    P = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    np.testing.assert_allclose(head.predict_proba(P), P)
    assert list(head.predict(P)) == ["b", "a"]
    again = head_from_arrays("ProbabilityHead", head.to_arrays(), head.to_params())
    assert list(again.classes_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="shape"):
        head.predict_proba(np.ones((2, 4)))


def test_unicode_labels_survive():
    X, y = _blobs(n_classes=2)
    y = np.where(y == "char_0", "涼風青葉", "Ahagon Umiko é")
    head = LogisticHead().fit(X, y)
    loaded = LogisticHead.from_arrays(_npz_roundtrip(head.to_arrays()), head.to_params())
    assert list(loaded.classes_) == sorted(["涼風青葉", "Ahagon Umiko é"])


# ----------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------
def test_color_histograms_shape_and_normalisation():
    X, _ = _pictures(n_per=3, size=32)
    H = color_histograms(X)
    assert H.shape == (9, 12 * 4 * 4 + 4 * 8 * 3 * 3) and H.dtype == np.float32
    glob, cells = H[:, :192], H[:, 192:].reshape(9, 4, 72)
    assert np.allclose((glob ** 2).sum(axis=1), 1, atol=1e-5)  # sqrt of a distribution
    assert np.allclose((cells ** 2).sum(axis=2), 1, atol=1e-5)
    assert np.array_equal(color_histogram(X[0]), H[0])
    plain = color_histograms(X, grid=1, sqrt=False)
    assert plain.shape == (9, 192) and np.allclose(plain.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError):
        color_histograms(X, bins=(0, 4, 4))


def test_color_histogram_tells_hair_colours_apart():
    red = np.zeros((40, 40, 3), np.uint8)
    red[:] = (220, 30, 30)
    blue = red[..., ::-1].copy()
    pink = np.full((40, 40, 3), (250, 170, 190), np.uint8)
    H = color_histograms([red, blue, pink], grid=1)
    # PIL HSV: red (0, 220, 220), blue (170, 220, 220), pink (244, 81, 250); bin = h*12>>8, s*4>>8, v*4>>8
    # -> red (0, 3, 3) = 15, blue (7, 3, 3) = 127, pink (11, 1, 3) = 183: each one bin, all of the mass
    assert [np.flatnonzero(h).tolist() for h in H] == [[15], [127], [183]], "solid colours fill their HSV bin"
    assert H[:, [15, 127, 183]].tolist() == np.eye(3).tolist(), "a solid colour's bin holds all the mass"
    X, y = _pictures(n_per=10, size=32)
    model = make_pipeline(ColorHistogram(), LogisticHead()).fit(X[:20], y[:20])
    assert np.mean(model.predict(X[20:]) == y[20:]) == 1.0


def test_combine_features():
    a = np.array([[3.0, 4.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    c = combine_features(a, b, weights=(1.0, 0.5))
    assert c.shape == (2, 5)
    assert np.allclose(c[0], [0.6, 0.8, 0.5, 0, 0]) and np.allclose(c[1], [0, 1, 0, 0, 0.5])
    with pytest.raises(ValueError):
        combine_features(a, b[:1])


def test_softmax_head_beats_chance_on_newgame8_colours(newgame8: Path):
    paths = sorted(newgame8.glob("*/*.jpg"))
    y = np.array([p.parent.name for p in paths])
    H = color_histograms(paths)
    rng = np.random.default_rng(24)
    test = np.zeros(len(y), bool)
    for lab in np.unique(y):  # stratified 80/20
        idx = np.flatnonzero(y == lab)
        test[rng.choice(idx, size=max(1, round(len(idx) * 0.2)), replace=False)] = True
    head = SoftmaxHead(random_state=0).fit(H[~test], y[~test])  # retrain.py defaults
    acc = float(np.mean(head.predict(H[test]) == y[test]))
    assert acc > 0.5, acc  # chance 12.5 %, always-the-largest-class 21 %
    assert head.history_["val_accuracy"][-1] > 0.4
