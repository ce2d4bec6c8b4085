"""Reports, plots, folder datasets and splits."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.errors import DatasetError
from animeid.evaluate import (
    FolderDataset,
    Report,
    evaluate_estimator,
    evaluate_predictions,
    plot_confusion,
    plot_curves,
    read_folder_dataset,
    stratified_split,
)


# ----------------------------------------------------------------------------------------------
# evaluate_predictions on a known tiny example
# ----------------------------------------------------------------------------------------------
def _tiny() -> Report:
    labels = ["a", "b", "c"]
    y_true = ["a", "a", "b", "c", "d"]  # "d" is unknown to the model
    proba = np.array([
        [0.7, 0.2, 0.1],  # a -> a  right
        [0.1, 0.6, 0.3],  # a -> b  wrong (a ranked 3rd)
        [0.2, 0.5, 0.3],  # b -> b  right
        [0.5, 0.1, 0.4],  # c -> a  wrong (c ranked 2nd)
        [0.1, 0.1, 0.8],  # d -> c  wrong, always
    ])
    return evaluate_predictions(y_true, proba, labels)


def test_known_example_exact_numbers():
    r = _tiny()
    assert r.n == 5 and r.correct == 2 and r.top1 == pytest.approx(0.4)
    assert r.k == 3 and r.top5_correct == 4 and r.top5 == pytest.approx(0.8)  # top-3: all known hit
    assert r.unknown_labels == ["d"] and r.n_unknown == 1
    assert r.row_labels == ["a", "b", "c", "d"]
    assert r.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert r.per_class["a"] == {"n": 2, "correct": 1, "accuracy": 0.5, "top5_correct": 2, "confused_with": "b"}
    assert r.per_class["b"]["accuracy"] == 1.0 and r.per_class["b"]["confused_with"] is None
    assert r.per_class["c"] == {"n": 1, "correct": 0, "accuracy": 0.0, "top5_correct": 1, "confused_with": "a"}
    assert r.per_class["d"] == {"n": 1, "correct": 0, "accuracy": 0.0, "top5_correct": 0, "confused_with": "c"}


def test_top5_with_many_classes_and_ties():
    labels = [f"c{i}" for i in range(7)]
    scores = np.array([
        [7, 6, 5, 4, 3, 2, 1],  # true c0: rank 1
        [7, 6, 5, 4, 3, 2, 1],  # true c4: rank 5 -> in top-5
        [7, 6, 5, 4, 3, 2, 1],  # true c5: rank 6 -> out
        [1, 1, 1, 1, 1, 1, 1],  # all tied, true c4: ties go to the lower column -> rank 5, in
        [1, 1, 1, 1, 1, 1, 1],  # all tied, true c6: rank 7 -> out; argmax picks c0
    ], dtype=float)
    r = evaluate_predictions(["c0", "c4", "c5", "c4", "c6"], scores, labels)
    assert r.k == 5 and r.top5_correct == 3 and r.correct == 1
    assert r.confusion[:, 0].sum() == 5  # every prediction is c0


def test_report_dict_is_json_and_markdown_lists_unknown():
    r = _tiny()
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["top1"] == 0.4 and back["top5"] == 0.8 and back["n"] == 5
    assert back["unknown_labels"] == ["d"] and back["per_class"]["a"]["n"] == 2
    assert back["confusion"]["counts"][3] == [0, 0, 1]
    md = r.to_markdown()
    assert "top-1 40.0%" in md and "unknown to model" in md.lower() and "| a |" in md


def test_model_characters_without_pictures_have_no_accuracy():
    r = evaluate_predictions(["a"], np.array([[0.9, 0.1]]), ["a", "b"])
    assert r.per_class["b"] == {"n": 0, "correct": 0, "accuracy": None, "top5_correct": 0, "confused_with": None}
    json.dumps(r.to_dict(), allow_nan=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="proba must be"):
        evaluate_predictions(["a"], np.zeros((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="rows"):
        evaluate_predictions(["a", "b"], np.zeros((1, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_predictions([], np.zeros((0, 2)), ["a", "b"])


def test_evaluate_estimator():
    from animeid.heads import LogisticHead

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (20, 4)), rng.normal(4, 1, (20, 4))])
    y = ["x"] * 20 + ["y"] * 20
    r = evaluate_estimator(LogisticHead().fit(X, y), X, y)
    assert r.top1 == 1.0 and r.labels == ["x", "y"]


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------
def test_plot_confusion_16_unicode_classes(tmp_path):
    labels = [f"キャラ{i}" if i % 3 == 0 else f"Chäracter_{i:02d}_long_name" for i in range(16)]
    rng = np.random.default_rng(0)
    y = [labels[i % 16] for i in range(160)] + ["新キャラ"] * 3
    proba = rng.random((163, 16))
    proba[np.arange(160), np.arange(160) % 16] += 0.8
    r = evaluate_predictions(y, proba, labels)
    out = plot_confusion(r, tmp_path / "sub" / "cm.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 800
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic: no leftovers


def test_plot_confusion_draws_japanese_names_with_a_cjk_font(tmp_path, caplog):
    from animeid._plot import cjk_font_file

    if cjk_font_file() is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-ipafont-gothic; ./setup.sh does it)")
    labels = ["滝本ひふみ", "涼風青葉", "Hazuki"]
    r = evaluate_predictions(labels * 2, np.eye(3)[[0, 1, 2, 0, 2, 1]], labels)
    with caplog.at_level(logging.WARNING, logger="animeid"):
        out = plot_confusion(r, tmp_path / "cm.png")
    with Image.open(out) as im:
        assert im.format == "PNG", "the confusion plot with Japanese names is a PNG"
    assert not [rec for rec in caplog.records if "no glyph" in rec.getMessage()]


def _cell_colors(png: Path, n: int) -> np.ndarray:
    """The colour near the top-left corner of each cell of an ``n x n`` confusion plot whose cell (0, 0)
    is a full row share (the darkest Blues): found as the block of that colour."""
    import matplotlib

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    dark = tuple(round(v * 255) for v in matplotlib.colormaps["Blues"](1.0)[:3])
    m = (a == dark).all(axis=-1)
    xs, ys = np.flatnonzero(m.sum(axis=0) >= 50), np.flatnonzero(m.sum(axis=1) >= 50)
    x0, y0, w, h = xs[0], ys[0], xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1
    return np.array([[a[y0 + i * h + h // 5, x0 + j * w + w // 5] for j in range(n)] for i in range(n)])


def test_plot_confusion_colours_each_cell_by_its_share_of_the_row(tmp_path):
    """A hand-made 2 x 2 case: row a is [2, 0] (shares 1, 0), row b is [1, 2] (shares 1/3, 2/3; as raw
    counts on a 0..2 scale they would be 0.5, 1, and transposed cell (0, 1) would not be white)."""
    import matplotlib

    r = evaluate_predictions(["a", "a", "b", "b", "b"], np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0.0]]),
                             ["a", "b"])
    assert r.confusion.tolist() == [[2, 0], [1, 2]]
    got = _cell_colors(plot_confusion(r, tmp_path / "cm.png"), 2)
    want = np.array([[[round(v * 255) for v in matplotlib.colormaps["Blues"](s)[:3]] for s in row]
                     for row in ([1.0, 0.0], [1 / 3, 2 / 3])])
    assert np.abs(got - want).max() <= 3, ("cells coloured by row share: 1, 0 / 1/3, 2/3", got.tolist(), want.tolist())


def test_plot_reports_missing_glyphs_once(tmp_path, caplog, monkeypatch):
    """Without a CJK font the names show as boxes: one warning on the log, no warning spam."""
    import animeid._plot as plot

    monkeypatch.setattr(plot, "_families", lambda: ("DejaVu Sans",))
    r = evaluate_predictions(["滝本ひふみ", "b"], np.eye(2), ["滝本ひふみ", "b"])
    with caplog.at_level(logging.WARNING, logger="animeid"):
        plot_confusion(r, tmp_path / "cm.png")
    assert [rec.getMessage() for rec in caplog.records].count(
        f"{tmp_path / 'cm.png'}: some characters have no glyph in the installed fonts and show as boxes "
        "(install a CJK font, e.g. Debian's fonts-ipafont-gothic)") == 1


def test_plot_curves(tmp_path):
    from animeid.heads import SoftmaxHead

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(2, 1, (30, 5))])
    y = ["p"] * 30 + ["q"] * 30
    head = SoftmaxHead(steps=400, eval_every=20).fit(X, y)
    out = plot_curves(head.history_, tmp_path / "curves.png", title="test")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600
    out2 = plot_curves({"step": [1, 2, 3], "train_accuracy": [0.1, 0.5, 0.9]}, tmp_path / "acc.png")
    # the one series is drawn in matplotlib's first colour: a straight rising line from (1, 0.1) to (3, 0.9)
    a = np.asarray(Image.open(out2).convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.abs(a - (31, 119, 180)).sum(axis=-1) <= 30)
    left, right = ys[xs == xs.min()].mean(), ys[xs == xs.max()].mean()
    mid = ys[xs == (xs.min() + xs.max()) // 2].mean()
    assert left - right > 0.5 * a.shape[0], ("the accuracy line rises from 0.1 to 0.9 across the plot", left, right)
    assert abs(mid - (left + right) / 2) <= 2, ("step 2 is drawn at accuracy 0.5, halfway up the line", mid, left, right)
    with pytest.raises(ValueError):
        plot_curves({"step": [1, 2], "train_loss": [1.0, 0.5]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------
def _make_dataset(root: Path, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")


def test_stratified_split_is_seeded_and_stratified():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    s1 = stratified_split(labels, test_size=0.2, val_size=0.1, seed=3)
    assert s1 == stratified_split(labels, test_size=0.2, val_size=0.1, seed=3)
    assert s1 != stratified_split(labels, test_size=0.2, val_size=0.1, seed=4)
    per = {lab: [s for l2, s in zip(labels, s1) if l2 == lab] for lab in "abc"}
    assert (per["a"].count("test"), per["a"].count("val"), per["a"].count("train")) == (2, 1, 7)
    assert (per["b"].count("test"), per["b"].count("val"), per["b"].count("train")) == (1, 1, 3)
    assert (per["c"].count("test"), per["c"].count("val"), per["c"].count("train")) == (1, 0, 1)
    # whatever the list order, each character gets the same (test, val, train) counts
    order = np.random.default_rng(0).permutation(len(labels))
    shuffled_labels = [labels[i] for i in order]
    shuffled = stratified_split(shuffled_labels, test_size=0.2, val_size=0.1, seed=3)
    counts = {lab: tuple([s for l2, s in zip(shuffled_labels, shuffled) if l2 == lab].count(k)
                         for k in ("test", "val", "train")) for lab in "abc"}
    assert counts == {"a": (2, 1, 7), "b": (1, 1, 3), "c": (1, 0, 1)}, ("per-character counts kept when shuffled", counts)
    with pytest.raises(ValueError):
        stratified_split(labels, test_size=0.6, val_size=0.5)


def test_read_folder_dataset_skips_unreadable(tmp_path, caplog):
    _make_dataset(tmp_path, {"aoba": 5, "涼風": 4, "hifumi": 3})
    (tmp_path / "aoba" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "aoba" / "notes.txt").write_text("ignored")
    (tmp_path / "unlabeled").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "unlabeled" / "x.png")
    with caplog.at_level(logging.WARNING, logger="animeid"):
        ds = read_folder_dataset(tmp_path)
    paths, labels = ds
    assert isinstance(ds, FolderDataset) and len(paths) == 12 and len(labels) == 12
    assert sorted(set(labels)) == sorted({"aoba", "涼風", "hifumi"})
    assert len(ds.skipped) == 1 and ds.skipped[0][0].name == "broken.jpg"
    assert "broken.jpg" in caplog.text and "1 file or folder left out" in caplog.text
    assert len(ds.splits) == 12 and ds.split_source.startswith("stratified_split")
    test_paths, test_labels = read_folder_dataset(tmp_path, "test")
    assert set(test_labels) == {"aoba", "涼風", "hifumi"}  # every character in test
    assert set(test_paths) <= set(paths)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such dataset folder"),
    ("empty", "no pictures"),
    ("one", "only one character"),
    ("single", "'rin'"),
])
def test_read_folder_dataset_errors(tmp_path, case, message):
    root = tmp_path / "ds"
    if case != "missing":
        root.mkdir()
    if case == "one":
        _make_dataset(root, {"aoba": 4})
    if case == "single":
        _make_dataset(root, {"aoba": 4, "rin": 1})
    with pytest.raises(DatasetError, match=message) as e:
        read_folder_dataset(root)
    assert str(root) in str(e.value)


def test_read_folder_dataset_honours_split_csv(tmp_path, caplog):
    _make_dataset(tmp_path, {"aoba": 3, "rin": 3, "extra": 2})
    rows = [("aoba/000.png", "aoba", "train"), ("aoba/001.png", "aoba", "test"), ("aoba/002.png", "aoba", "val"),
            ("rin/000.png", "rin", "train"), ("rin/001.png", "rin", "test"), ("rin/gone.png", "rin", "train")]
    with open(tmp_path / "split.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    with caplog.at_level(logging.WARNING, logger="animeid"):
        ds = read_folder_dataset(tmp_path)
    assert ds.split_source == "split.csv"
    assert len(ds.paths) == 5 and "extra" not in ds.labels  # the file is the list
    assert [p.name for p, _ in ds.skipped] == ["gone.png"] and "gone.png" in caplog.text
    test_paths, test_labels = read_folder_dataset(tmp_path, "test")
    assert [p.relative_to(tmp_path).as_posix() for p in test_paths] == ["aoba/001.png", "rin/001.png"]
    assert test_labels == ["aoba", "rin"]
    (tmp_path / "split.csv").write_text("path,label,split\naoba/000.png,aoba,holdout\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="holdout"):
        read_folder_dataset(tmp_path)
    (tmp_path / "split.csv").write_text("file,name\naoba/000.png,aoba\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="column"):
        read_folder_dataset(tmp_path)
    (tmp_path / "split.csv").write_text("path,label,split\n../outside.png,aoba,train\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="outside"):
        read_folder_dataset(tmp_path)


def test_read_newgame8(newgame8: Path):
    ds = read_folder_dataset(newgame8)
    assert len(ds.paths) == 272 and len(set(ds.labels)) == 8 and not ds.skipped
    # per character of n faces: round(n * 0.2) test, round(n * 0.1) val (halves to even), the rest train;
    # 17, 10, 52, 25, 51, 57, 15, 45 faces -> test 3+2+10+5+10+11+3+9, val 2+1+5+2+5+6+2+4
    got = {k: ds.splits.count(k) for k in ("test", "val", "train")}
    assert got == {"test": 53, "val": 27, "train": 192}, ("the default 70/10/20 split of newgame8, per character", got)
