"""Measuring recognisers: datasets and splits in, reports and pictures out.

* :func:`read_folder_dataset` -- the folder-per-character layout (``root/<character>/*.jpg``),
  honouring ``root/split.csv`` (columns ``path,label,split``; ``path`` relative to ``root``, written
  by :func:`animeid.dataset.export`) and otherwise splitting with :func:`stratified_split`.
* :func:`stratified_split` -- a seeded per-character train/val/test split.
* :func:`evaluate_predictions` -> :class:`Report` (top-1, top-5, per-character accuracy,
  confusion matrix, expected calibration error of the top-1 probability). Pictures whose true
  character the model does not know are *errors*, never skipped, and are listed under ``unknown_labels``.
* :func:`plot_confusion`, :func:`plot_reliability`, :func:`plot_curves` -- PNG files (matplotlib,
  Agg, written atomically).
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._plot import plot_fonts, save_png
from ._util import plural
from .errors import DatasetError, InputError
from .images import IMAGE_EXTS, load_image, path_within, walk_files
from .names import normalize_name

__all__ = [
    "SPLIT_FILE",
    "SPLITS",
    "FolderDataset",
    "read_folder_dataset",
    "stratified_split",
    "Report",
    "evaluate_predictions",
    "evaluate_estimator",
    "plot_confusion",
    "plot_reliability",
    "plot_curves",
    "evaluate_model",
    "evaluate_open_set",
]

log = logging.getLogger("animeid")

#: Name of the split file inside a dataset folder.
SPLIT_FILE = "split.csv"
#: Split names, in order.
SPLITS = ("train", "val", "test")
_SKIP_DIRS = {"unlabeled", "_trash", "_rejected"}


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------
class FolderDataset(tuple):
    """``(paths, labels)`` -- unpacks as a pair -- with extra facts as attributes.

    ``paths``: ``list[Path]``; ``labels``: ``list[str]``; ``splits``: the split name of each
    picture (``"train"``/``"val"``/``"test"``), ``skipped``: ``[(path, reason)]`` of unreadable
    pictures left out; ``split_source``: ``"split.csv"`` or ``"stratified_split(seed=...)"``.
    """

    def __new__(cls, paths: list[Path], labels: list[str], splits: list[str], skipped: list[tuple[Path, str]],
                split_source: str):
        self = super().__new__(cls, (paths, labels))
        self.splits = splits
        self.skipped = skipped
        self.split_source = split_source
        return self

    @property
    def paths(self) -> list[Path]:
        return self[0]

    @property
    def labels(self) -> list[str]:
        return self[1]

    def subset(self, split: str) -> tuple[list[Path], list[str]]:
        """``(paths, labels)`` of one split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        keep = [i for i, s in enumerate(self.splits) if s == split]
        return [self[0][i] for i in keep], [self[1][i] for i in keep]


def stratified_split(labels: Sequence[str], test_size: float = 0.2, val_size: float = 0.1,
                     seed: int = 0) -> list[str]:
    """A seeded split, stratified by character: the split name of every item, aligned with ``labels``.

    Per character of ``n`` pictures: ``round(n * test_size)`` go to ``"test"`` (at least 1 when
    ``test_size > 0`` and ``n >= 2``), ``round(n * val_size)`` to ``"val"`` (at least 1 when
    ``val_size > 0`` and 3 or more remain), the rest (always at least 1) to ``"train"``.
    Characters are processed in sorted order from one ``numpy`` generator, so the result depends
    only on the labels and the seed, not on their order in the list.

    >>> stratified_split(["a"] * 5 + ["b"] * 5, test_size=0.2, val_size=0.2, seed=0).count("test")
    2
    """
    if not (0 <= test_size < 1 and 0 <= val_size < 1 and test_size + val_size < 1):
        raise ValueError(f"bad split sizes test_size={test_size} val_size={val_size}")
    labels = list(labels)
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    for lab in sorted(by_label):
        idx = np.array(by_label[lab])
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = int(round(n * test_size))
        if test_size > 0 and n >= 2:
            n_test = max(1, n_test)
        n_test = min(n_test, n - 1)
        n_val = int(round(n * val_size))
        if val_size > 0 and n - n_test >= 3:
            n_val = max(1, n_val)
        n_val = max(0, min(n_val, n - n_test - 1))
        for i in idx[:n_test]:
            out[i] = "test"
        for i in idx[n_test:n_test + n_val]:
            out[i] = "val"
    return out


def _readable(path: Path) -> str | None:
    """None when ``path`` decodes as a picture, else the reason."""
    try:
        load_image(path, "RGB")
    except InputError as e:
        return e.message
    return None


def read_folder_dataset(root: str | os.PathLike, split: str | None = None, *, check_images: bool = True,
                        test_size: float = 0.2, val_size: float = 0.1, seed: int = 0,
                        require_training: bool = True) -> FolderDataset:
    """Pictures and character names of a folder-per-character dataset.

    ``root/<character>/<picture>`` (any depth below the character folder; hidden files,
    ``unlabeled/`` and non-picture files ignored). If ``root/split.csv`` exists it is the list of
    pictures (``path,label,split``, ``path`` relative to ``root``), otherwise every picture is
    listed and split with :func:`stratified_split` (``test_size``, ``val_size``, ``seed``).

    ``split``: ``None`` for every picture (the split names are in ``.splits``), or ``"train"``,
    ``"val"``, ``"test"`` for one split. Returns a :class:`FolderDataset` that unpacks as
    ``paths, labels = read_folder_dataset(root)``, sorted by character then file name.

    With ``check_images`` every picture is decoded once; unreadable ones (and files listed in
    ``split.csv`` that are missing) are skipped with a logged warning naming them, and listed in
    ``.skipped``. Raises :class:`~animeid.errors.DatasetError` for a missing folder, no pictures,
    only one character, a bad ``split.csv``, or (without ``split.csv``, where the split is made
    here) a character with a single picture; ``require_training=False`` (evaluation) allows one
    character and single pictures.

    Parameters
    ----------
    root : path
        The dataset folder.
    split : {None, "train", "val", "test"}
        Every picture, or one part of the split.
    check_images : bool, default True
        Decode every picture once and leave out (and list in ``.skipped``) the unreadable ones.
    test_size, val_size : float, default 0.2, 0.1
        Shares of each character's pictures held out when there is no ``split.csv``.
    seed : int, default 0
        Seed of that split.
    require_training : bool, default True
        Refuse a dataset with one character, or (split made here) a character with one picture.

    Returns
    -------
    FolderDataset
        ``(paths, labels)`` (lists of ``pathlib.Path`` and str, sorted by character then file), with
        ``.splits`` (each picture's part), ``.skipped`` and ``.subset(split)``.

    Raises
    ------
    DatasetError
        As above (the message names the folder or file).

    Examples
    --------
    >>> paths, labels = read_folder_dataset("data/newgame8")
    >>> train_paths, train_labels = read_folder_dataset("data/newgame8").subset("train")
    """
    root = Path(root)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, got {split!r}")
    if not root.exists():
        raise DatasetError("no such dataset folder", root)
    if not root.is_dir():
        raise DatasetError("a dataset must be a folder with one subfolder per character", root)

    split_file = root / SPLIT_FILE
    skipped: list[tuple[Path, str]] = []
    items: list[tuple[Path, str, str | None]] = []
    if split_file.is_file():
        items = _read_split_csv(root, split_file, skipped)
        source = SPLIT_FILE
    else:
        real_root = os.path.realpath(root)
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            if d.name.startswith(".") or d.name in _SKIP_DIRS:
                continue
            target = os.path.realpath(d)
            if d.is_symlink() and path_within(target, real_root):
                skipped.append((d, f"a link to {target}, a folder of this dataset: not a character of its own"))
                continue
            seen: dict[str, Path] = {}
            for f in walk_files(d, IMAGE_EXTS, skipped, within=root):   # bad links: skipped, said
                real = os.path.realpath(f)
                if real in seen:                 # one picture reached twice (a link beside its target)
                    skipped.append((f, f"the same picture as {seen[real]}: counted once"))
                    continue
                seen[real] = f
                items.append((f, normalize_name(d.name), None))   # NFD and NFC folders: one character
        source = f"stratified_split(seed={seed})"

    if check_images:
        good = []
        for item in items:
            reason = _readable(item[0])
            if reason is None:
                good.append(item)
            else:
                skipped.append((item[0], reason))
        items = good
    for path, reason in skipped:
        log.warning("%s: skipped, %s", path, reason)
    if skipped:
        log.warning("%s: %s left out (named above)", root, plural(len(skipped), "file or folder", "files or folders"))

    if not items:
        raise DatasetError("no pictures found (expected one subfolder of pictures per character)", root)
    counts: dict[str, int] = {}
    for _, lab, _ in items:
        counts[lab] = counts.get(lab, 0) + 1
    if len(counts) < 2 and require_training:
        raise DatasetError(f"only one character ({next(iter(counts))!r}); a recogniser needs at least two", root)

    items.sort(key=lambda t: (t[1], str(t[0])))
    paths = [p for p, _, _ in items]
    labels = [lab for _, lab, _ in items]
    if source == SPLIT_FILE:
        splits = [s for _, _, s in items]  # type: ignore[misc]
    else:
        single = sorted(lab for lab, n in counts.items() if n < 2)
        if single and require_training:
            names = ", ".join(repr(s) for s in single[:10]) + (" ..." if len(single) > 10 else "")
            raise DatasetError(
                f"{plural(len(single), 'character')} {'has' if len(single) == 1 else 'have'} a single picture: {names}; each needs at least 2 "
                "(one to train, one to test) - add pictures or remove the folder", root)
        splits = stratified_split(labels, test_size=test_size, val_size=val_size, seed=seed)

    ds = FolderDataset(paths, labels, splits, skipped, source)
    if split is None:
        return ds
    p, lab = ds.subset(split)
    return FolderDataset(p, lab, [split] * len(p), skipped, source)


def _read_split_csv(root: Path, split_file: Path, skipped: list[tuple[Path, str]]) -> list[tuple[Path, str, str]]:
    try:
        with open(split_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"path", "label", "split"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"split file lacks column(s) {sorted(missing)} (needs path,label,split)",
                                   split_file)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read split file: {e}", split_file) from None
    root_res = root.resolve()
    items = []
    for n, row in enumerate(rows, start=2):
        rel, lab, sp = (row.get("path") or "").strip(), (row.get("label") or "").strip(), (row.get("split") or "").strip()
        if not rel or not lab:
            raise DatasetError(f"line {n}: empty path or label", split_file)
        if sp not in SPLITS:
            raise DatasetError(f"line {n}: split {sp!r} is not one of {', '.join(SPLITS)}", split_file)
        p = root / rel
        # judged by the path as written, not where links lead: a dataset of symbolic links to
        # pictures elsewhere is a dataset; "../x" or an absolute path is not
        if Path(rel).is_absolute() or os.path.normpath(rel).split(os.sep)[0] == os.pardir \
                or not Path(os.path.normpath(root_res / rel)).is_relative_to(root_res):
            raise DatasetError(f"line {n}: path {rel!r} is outside the dataset folder", split_file)
        if not p.is_file():
            skipped.append((p, f"listed in {SPLIT_FILE} but missing"))
            continue
        items.append((p, normalize_name(lab), sp))
    return items


# ----------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------
@dataclass
class Report:
    """The result of :func:`evaluate_predictions`.

    ``labels``: the model's characters (column order of ``proba``); ``row_labels``: rows of
    ``confusion`` = ``labels`` then characters unknown to the model; ``confusion[i, j]``: pictures
    of ``row_labels[i]`` predicted as ``labels[j]``. ``per_class[name]`` = ``{"n", "correct",
    "accuracy", "top5_correct"}`` for every character in the evaluated pictures (and every model
    character, with ``n`` 0 and ``accuracy`` None when it has no pictures).

    ``ece``: the expected calibration error of the top-1 probability (15 equal-width bins,
    :func:`animeid.calibration.expected_calibration_error`; 0: honest probabilities), and
    ``reliability``: its bins (:func:`animeid.calibration.reliability_bins`, what
    :func:`plot_reliability` draws); ``None`` and ``[]`` when the scores are no probabilities.
    """

    n: int
    top1: float
    top5: float
    k: int
    labels: list[str]
    row_labels: list[str]
    confusion: np.ndarray
    per_class: dict[str, dict[str, Any]]
    unknown_labels: list[str]
    correct: int = 0
    top5_correct: int = 0
    ece: float | None = None
    reliability: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_unknown(self) -> int:
        return int(sum(self.per_class[lab]["n"] for lab in self.unknown_labels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no NaN: missing accuracies are ``None``)."""
        return {
            "n": self.n,
            "top1": self.top1,
            "top5": self.top5,
            "k": self.k,
            "correct": self.correct,
            "top5_correct": self.top5_correct,
            "ece": self.ece,
            "reliability": [dict(b) for b in self.reliability],
            "labels": list(self.labels),
            "per_class": {k: dict(v) for k, v in self.per_class.items()},
            "unknown_labels": list(self.unknown_labels),
            "n_unknown": self.n_unknown,
            "confusion": {"rows": list(self.row_labels), "columns": list(self.labels),
                          "counts": self.confusion.astype(int).tolist()},
            **self.extra,
        }

    def to_markdown(self) -> str:
        """A human-readable summary: totals, then one table row per character (worst first)."""
        top_k = "top-5" if self.k == 5 else f"top-{self.k}"
        lines = [
            f"**{self.n} pictures** - top-1 {self.top1:.1%} ({self.correct}/{self.n}), "
            f"{top_k} {self.top5:.1%} ({self.top5_correct}/{self.n})"
            + ("" if self.ece is None else f", calibration error (ECE) {self.ece:.3f}"),
            "",
        ]
        if self.unknown_labels:
            lines += ["Unknown to model (counted as errors): "
                      + ", ".join(f"{_md(lab)} ({self.per_class[lab]['n']})" for lab in self.unknown_labels), ""]
        lines += ["| character | pictures | correct | accuracy | most often mistaken for |",
                  "|---|---:|---:|---:|---|"]
        order = sorted(self.per_class, key=lambda s: (self.per_class[s]["accuracy"] is None,
                                                       self.per_class[s]["accuracy"] or 0.0, s))
        for lab in order:
            pc = self.per_class[lab]
            acc = "-" if pc["accuracy"] is None else f"{pc['accuracy']:.1%}"
            note = " (unknown to model)" if lab in self.unknown_labels else ""
            lines.append(f"| {_md(lab)}{note} | {pc['n']} | {pc['correct']} | {acc} | {_md(pc.get('confused_with') or '')} |")
        return "\n".join(lines) + "\n"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")


def evaluate_predictions(y_true: Sequence[str], proba: np.ndarray, labels: Sequence[str]) -> Report:
    """Score class probabilities against the true names.

    ``y_true``: the true character of each picture (``n``); ``proba``: ``(n, n_classes)`` scores,
    column ``j`` for ``labels[j]`` (any monotone score works for the accuracies: only the ranking is
    used; ties go to the lower column, as ``argmax``; the calibration error needs probabilities:
    rows of numbers from 0 to 1 summing to 1, else ``ece`` is None). Top-5 means
    top-``min(5, n_classes)``. A picture whose true name is not in ``labels`` is always wrong and is
    reported in ``unknown_labels`` (also in the calibration error: its top-1 answer is wrong).
    """
    labels = [str(x) for x in labels]
    y_true = [str(x) for x in y_true]
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(labels):
        raise ValueError(f"proba must be (n, {len(labels)}) for {len(labels)} labels, got {proba.shape}")
    if proba.shape[0] != len(y_true):
        raise ValueError(f"{len(y_true)} true labels but {proba.shape[0]} rows of probabilities")
    if len(y_true) == 0:
        raise ValueError("nothing to evaluate: no pictures")
    if len(set(labels)) != len(labels):
        raise ValueError("labels contain duplicates")
    col = {lab: j for j, lab in enumerate(labels)}
    unknown = sorted({y for y in y_true if y not in col})
    row_labels = labels + unknown
    row = {lab: i for i, lab in enumerate(row_labels)}
    n, c = proba.shape
    k = min(5, c)

    pred = np.argmax(proba, axis=1)
    true_col = np.array([col.get(y, -1) for y in y_true])
    known = true_col >= 0
    hit1 = known & (pred == true_col)
    # rank of the true class: number of classes scored strictly higher (+ ties before it)
    hit5 = np.zeros(n, dtype=bool)
    if known.any():
        kp = proba[known]
        tc = true_col[known]
        t_score = kp[np.arange(len(tc)), tc]
        higher = (kp > t_score[:, None]).sum(axis=1)
        ties_before = ((kp == t_score[:, None]) & (np.arange(c)[None, :] < tc[:, None])).sum(axis=1)
        hit5[known] = (higher + ties_before) < k

    confusion = np.zeros((len(row_labels), c), dtype=np.int64)
    np.add.at(confusion, (np.array([row[y] for y in y_true]), pred), 1)

    per_class: dict[str, dict[str, Any]] = {}
    y_arr = np.array(y_true, dtype=object)
    for lab in row_labels:
        m = y_arr == lab
        cnt = int(m.sum())
        r = confusion[row[lab]].copy()
        if lab in col:
            r[col[lab]] = 0
        confused = labels[int(np.argmax(r))] if r.sum() > 0 else None
        per_class[lab] = {
            "n": cnt,
            "correct": int(hit1[m].sum()),
            "accuracy": (float(hit1[m].mean()) if cnt else None),
            "top5_correct": int(hit5[m].sum()),
            "confused_with": confused,
        }
    ece, bins = None, []
    if np.all(np.isfinite(proba)) and proba.min() >= 0.0 and proba.max() <= 1.0 + 1e-6 \
            and np.allclose(proba.sum(axis=1), 1.0, atol=1e-3):
        from .calibration import expected_calibration_error, reliability_bins

        top = np.clip(proba.max(axis=1), 0.0, 1.0)
        ece, bins = expected_calibration_error(top, hit1), reliability_bins(top, hit1)
    return Report(n=n, top1=float(hit1.mean()), top5=float(hit5.mean()), k=k, labels=labels,
                  row_labels=row_labels, confusion=confusion, per_class=per_class, unknown_labels=unknown,
                  correct=int(hit1.sum()), top5_correct=int(hit5.sum()), ece=ece, reliability=bins)


def evaluate_estimator(estimator: Any, X: Any, y_true: Sequence[str]) -> Report:
    """:func:`evaluate_predictions` of a fitted classifier's ``predict_proba(X)``."""
    return evaluate_predictions(y_true, estimator.predict_proba(X), [str(c) for c in estimator.classes_])


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------
def plot_confusion(report: Report, path: str | os.PathLike, *, normalize: bool = True, title: str | None = None) -> Path:
    """Write the confusion matrix of ``report`` as a PNG (rows: true, columns: predicted).

    Cells show the share of the row (``normalize``) as colour and the count as text (up to 40
    characters); the figure grows with the number of characters so 16+ names stay readable.
    Rows of characters unknown to the model are marked ``(unknown)``.

    Parameters
    ----------
    report : Report
        From :func:`evaluate_model` or :func:`evaluate_predictions`.
    path : path
        The PNG to write (atomically; an existing file is replaced).
    normalize : bool, default True
        Colour by the share of the row (else by the count).
    title : str, optional
        Default: the top-1 accuracy and the number of pictures.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ModuleNotFoundError
        matplotlib is not installed (``pip install 'animeid[plot]'``).
    OSError
        The file cannot be written.

    Examples
    --------
    >>> report, _ = evaluate_model("characters.animeid", "data/test")
    >>> plot_confusion(report, "confusion.png")
    PosixPath('confusion.png')
    """
    from matplotlib.figure import Figure

    cm = report.confusion.astype(float)
    rows = [lab + (" (unknown)" if lab in report.unknown_labels else "") for lab in report.row_labels]
    cols = list(report.labels)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n_r, n_c = cm.shape
    longest = max(len(s) for s in rows + cols)
    cell = 0.42 if max(n_r, n_c) <= 30 else 0.25
    w = min(60.0, 2.5 + n_c * cell + longest * 0.08)
    h = min(60.0, 2.0 + n_r * cell + longest * 0.08)
    with plot_fonts():
        fig = Figure(figsize=(w, h))
        ax = fig.add_subplot(1, 1, 1)
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, cm.max()), aspect="auto")
        ax.set_xticks(range(n_c), labels=cols, rotation=60, ha="right", rotation_mode="anchor", fontsize=9)
        ax.set_yticks(range(n_r), labels=rows, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or f"top-1 {report.top1:.1%} of {report.n} pictures")
        if max(n_r, n_c) <= 40:
            for i in range(n_r):
                for j in range(n_c):
                    if cm[i, j]:
                        ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                                color="white" if shown[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="share of row" if normalize else "pictures")
        return save_png(fig, path)


def plot_reliability(report: Report | tuple[Sequence[float], Sequence[bool]], path: str | os.PathLike, *,
                     bins: int = 15, title: str | None = None) -> Path:
    """Write the reliability diagram of ``report`` (or of ``(confidence, correct)``: each face's top-1
    probability and whether that answer was right) as a PNG.

    Top: per bin of the top-1 probability (``bins`` equal-width bins; a report's own 15), the share of
    its faces answered right as a bar, against the diagonal of honest probabilities; the gap to the
    diagonal is shaded (above: under-confident, below: over-confident), the bin's mean probability is a
    dot. Bottom: faces per bin. The title (after ``title``, when given) says the expected calibration
    error.

    Parameters
    ----------
    report : Report or (confidence, correct)
        A report of probabilities, or per face its top-1 probability (0..1) and whether that answer
        was right.
    path : path
        The PNG to write (atomically).
    bins : int, default 15
        Equal-width bins of the top-1 probability (for ``(confidence, correct)``).
    title : str, optional
        Put before the expected calibration error in the title.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        The report's scores are no probabilities, or there are no faces.
    ModuleNotFoundError
        matplotlib is not installed (``pip install 'animeid[plot]'``).

    Examples
    --------
    >>> report, _ = evaluate_model("characters.animeid", "data/test")
    >>> plot_reliability(report, "reliability.png")
    PosixPath('reliability.png')
    """
    from matplotlib.figure import Figure

    from .calibration import expected_calibration_error, reliability_bins

    if isinstance(report, Report):
        if not report.reliability:
            raise ValueError("the report's scores are no probabilities: no reliability diagram")
        table, ece, n = report.reliability, report.ece, report.n
    else:
        conf, correct = report
        table, ece = reliability_bins(conf, correct, bins), expected_calibration_error(conf, correct, bins)
        n = int(sum(b["n"] for b in table))
        if not n:
            raise ValueError("nothing to draw: no faces")
    lo = np.array([b["lo"] for b in table])
    hi = np.array([b["hi"] for b in table])
    width, mid = hi - lo, (lo + hi) / 2
    counts = np.array([b["n"] for b in table])
    filled = counts > 0
    acc = np.array([b["accuracy"] if b["n"] else 0.0 for b in table])
    conf = np.array([b["confidence"] if b["n"] else np.nan for b in table])
    with plot_fonts():
        fig = Figure(figsize=(5.6, 6.4))
        ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 1], "hspace": 0.08})
        ax.bar(lo[filled], acc[filled], width=width[filled], align="edge", color="#4a7fc1", edgecolor="#1f3f66",
               linewidth=0.6, label="share answered right")
        over, under = filled & (conf > acc), filled & (conf < acc)
        if over.any():
            ax.bar(lo[over], (conf - acc)[over], bottom=acc[over], width=width[over], align="edge",
                   facecolor="#f4b6ae", edgecolor="#b03a2e", linewidth=0.6, hatch="//", label="gap: over-confident")
        if under.any():
            # drawn over the accuracy bar without hiding it: the bar's height stays the share right
            ax.bar(lo[under], (acc - conf)[under], bottom=conf[under], width=width[under], align="edge",
                   facecolor="none", edgecolor="#d9e6f5", linewidth=0.6, hatch="\\\\",
                   label="gap: under-confident")
        ax.plot([0, 1], [0, 1], ls="--", color="#555555", lw=1, label="honest probabilities")
        ax.plot(mid[filled], conf[filled], "o", color="#b03a2e", ms=4, label="mean top-1 probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("share of faces answered right")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ece_text = "-" if ece is None or not np.isfinite(ece) else f"{ece:.3f}"
        heading = f"calibration error (ECE) {ece_text} on {plural(n, 'face')}"
        ax.set_title(f"{title}\n{heading}" if title else heading)
        axn.bar(lo, counts, width=width, align="edge", color="#888888", edgecolor="#444444", linewidth=0.6)
        for x, c in zip(mid[filled], counts[filled]):
            axn.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
        axn.set_ylim(0, max(1, counts.max()) * 1.3)
        axn.set_xlabel("top-1 probability shown")
        axn.set_ylabel("faces")
        axn.grid(alpha=0.3, axis="y")
        return save_png(fig, path)


def plot_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str | None = None,
                xlabel: str = "step") -> Path:
    """Write training curves as a PNG: accuracy (and loss, when recorded) against the step.

    ``history``: ``{"step": [...], "train_accuracy": [...], "val_accuracy": [...],
    "train_loss": [...], "val_loss": [...]}`` (``SoftmaxHead.history_``); only ``step`` and one
    accuracy series are required. Returns ``path``.
    """
    from matplotlib.figure import Figure

    steps = list(history.get("step", []))
    series = {k: list(v) for k, v in history.items() if k != "step" and len(v) == len(steps) and len(v)}
    if not steps or not any(k.endswith("accuracy") for k in series):
        raise ValueError("history needs 'step' and at least one '*_accuracy' series of the same length")
    has_loss = any(k.endswith("loss") for k in series)
    with plot_fonts():
        fig = Figure(figsize=(11 if has_loss else 6.5, 4.2))
        axes = [fig.add_subplot(1, 2 if has_loss else 1, i + 1) for i in range(2 if has_loss else 1)]
        for ax, kind in zip(axes, ("accuracy", "loss")):
            for name, vals in series.items():
                if name.endswith(kind):
                    ax.plot(steps, vals, label=name[: -len(kind) - 1].replace("val", "validation"))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(kind)
            if kind == "accuracy":
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        return save_png(fig, path)


def evaluate_model(model: Any, dataset: str | os.PathLike, *, split: str | None = None, batch_size: int = 32,
                   progress: bool | None = False) -> tuple[Report, FolderDataset]:
    """Evaluate a saved model (a path or a :class:`animeid.predict.Recognizer`) on the face crops of a
    folder-per-character dataset: every picture, or one ``split`` of its ``split.csv``.

    Pictures in folders whose name the model does not know count as errors (never skipped); a dataset
    with none of the model's characters raises :class:`~animeid.errors.DatasetError`.
    ``report.extra["seen_in_training"]`` (see :func:`training_overlap`) says how many of the faces the
    model was trained or validated on.

    Parameters
    ----------
    model : path or Recognizer
        A model file or a loaded model.
    dataset : path
        A folder-per-character dataset of face crops (each read whole, no detection); ``split.csv``
        honoured.
    split : {None, "train", "val", "test"}
        Every picture (None), or one part of ``split.csv`` (or of the seeded split made without it).
    batch_size : int, default 32
        Faces per network run.
    progress : bool or None, default False
        As in :func:`animeid.train.train`.

    Returns
    -------
    report : Report
        ``top1``, ``top5`` (shares 0..1), ``per_class``, ``confusion``, ``ece``, ``reliability``,
        ``extra``; ``to_dict()`` is the CLI's ``--json``.
    dataset : FolderDataset
        The pictures evaluated and their characters.

    Raises
    ------
    ModelFileError
        The model file cannot be read.
    DatasetError
        No such folder, no pictures, a bad ``split.csv``, or none of the model's characters.

    Examples
    --------
    >>> report, ds = evaluate_model("characters.animeid", "data/other", split="test")
    >>> round(report.top1, 3), report.per_class["aoba"]["accuracy"]
    (0.962, 0.95)
    """
    from .predict import Recognizer

    rec = model if isinstance(model, Recognizer) else Recognizer.load(model)
    ds = read_folder_dataset(dataset, split, require_training=False)
    paths, labels = ds
    _check_known(rec, labels, dataset)
    proba = _proba_in_chunks(rec, paths, batch_size, progress)
    rep = evaluate_predictions(labels, proba, rec.labels)
    rep.extra["seen_in_training"] = training_overlap(rec, paths, dataset)
    return rep, ds


def _check_known(rec: Any, labels: Sequence[str], dataset: Any) -> None:
    from .names import normalize_name

    known = {normalize_name(x) for x in rec.labels}
    present = sorted(set(labels))
    if present and not any(normalize_name(x) in known for x in present):
        def some(xs):
            return ", ".join(xs[:8]) + (", ..." if len(xs) > 8 else "")
        raise DatasetError(f"none of its {len(present)} character folder{'s' if len(present) != 1 else ''} "
                           f"({some(present)}) is a character the model knows ({some(list(rec.labels))}): "
                           "nothing to evaluate", dataset)


def _proba_in_chunks(rec: Any, paths: Sequence, batch_size: int, progress: bool | None) -> np.ndarray:
    from ._util import bar_options, plural, progress as bar, stage
    import time

    t0 = time.perf_counter()
    chunk = max(batch_size, 128)
    starts = range(0, len(paths), chunk)
    parts = [rec.predict_proba_faces(paths[s:s + chunk], batch_size=batch_size)
             for s in bar(starts, total=len(starts), desc="evaluating", unit="chunk",
                          disable=bar_options(progress)["disable"])]
    stage(f"evaluate: {plural(len(paths), 'face')}, {time.perf_counter() - t0:.0f} s", progress, on_terminal=False)
    return np.concatenate(parts) if parts else np.zeros((0, len(rec.labels)))


def training_overlap(rec: Any, paths: Sequence, dataset: Any = None) -> dict[str, Any]:
    """How many of ``paths`` the model ``rec`` learnt from: ``{"train": n, "val": n, "n": len(paths),
    "checked": True}`` from the face hashes the model records (:func:`animeid.train.training_fingerprint`).
    A model made by an older animeid records none: ``checked`` is False and ``same_dataset_name`` says
    whether the dataset it was trained on had ``dataset``'s folder name."""
    from .train import FACE_HASH, face_hash

    training = getattr(getattr(rec, "bundle", None), "training", None) or {}
    faces = training.get("faces") or {}
    out: dict[str, Any] = {"n": len(paths), "train": None, "val": None, "checked": False}
    if faces.get("hash") == FACE_HASH:
        hashes = [face_hash(p) for p in paths]
        for part in ("train", "val"):
            seen = set(faces.get(part) or ())
            out[part] = sum(1 for h in hashes if h and h in seen)
        out["checked"] = True
    elif dataset is not None and training.get("dataset"):
        out["same_dataset_name"] = Path(str(training["dataset"])).name == Path(dataset).resolve().name
    return out


def evaluate_open_set(model: Any, dataset: str | os.PathLike, unknown: str | os.PathLike | Sequence, *,
                      split: str | None = None, batch_size: int = 32) -> tuple[Report, FolderDataset]:
    """:func:`evaluate_model` plus open-set figures: the known faces of ``dataset`` against faces of
    characters the model does not know (``unknown``: a folder, searched recursively, or a list of
    pictures). ``report.extra`` (and so ``to_dict()``) gains ``auroc`` (known-vs-unknown, from the
    open-set score), ``unknown_rejected`` and ``known_correct`` (accepted and named correctly) at the
    model's unknown threshold, ``known_accepted``, ``unknown_threshold``, ``n_known``, ``n_unknown``
    (see :func:`animeid.openset.open_set_figures`), and ``unknown_refusal_rate``: the share of the
    model's own known calibration faces that threshold refuses (None for models that do not store them).

    Parameters
    ----------
    model : path or Recognizer
        A model file or a loaded model.
    dataset : path
        Face crops of the model's characters, one folder each.
    unknown : path or sequence of pictures
        Face crops of characters the model does not know.
    split : {None, "train", "val", "test"}
        As in :func:`evaluate_model` (``dataset`` only).
    batch_size : int, default 32
        Faces per network run.

    Returns
    -------
    report : Report
        :func:`evaluate_model`'s report, its ``extra`` with the open-set figures (shares 0..1).
    dataset : FolderDataset
        The known pictures evaluated.

    Raises
    ------
    ModelFileError
        The model file cannot be read.
    DatasetError
        As :func:`evaluate_model`, or no pictures in ``unknown``.
    InputError
        ``unknown`` does not exist.

    Examples
    --------
    >>> report, _ = evaluate_open_set("characters.animeid", "data/test", "strangers/")
    >>> report.extra["auroc"], report.extra["unknown_rejected"]
    (0.94, 0.79)
    """
    from .images import iter_image_files
    from .openset import open_set_figures
    from .predict import Recognizer

    rec = model if isinstance(model, Recognizer) else Recognizer.load(model)
    ds = read_folder_dataset(dataset, split, require_training=False)
    paths, labels = ds
    _check_known(rec, labels, dataset)
    folder = isinstance(unknown, (str, os.PathLike))
    unk = list(iter_image_files([unknown])) if folder else list(unknown)
    if not unk:
        raise DatasetError("no pictures of unknown characters found", unknown if folder else None)
    kp, ks = rec.predict_open_faces(paths, batch_size=batch_size)
    us = rec.predict_open_faces(unk, batch_size=batch_size)[1]
    rep = evaluate_predictions(labels, kp, rec.labels)
    correct = np.asarray(rec.labels)[kp.argmax(axis=1)] == np.asarray(labels)
    rep.extra.update(open_set_figures(ks, correct, us, rec.unknown_threshold, rec.unknown_score_kind))
    rep.extra["unknown_refusal_rate"] = rec.openset.refusal_rate(rec.unknown_threshold) if rec.openset else None
    rep.extra["seen_in_training"] = training_overlap(rec, paths, dataset)
    return rep, ds
