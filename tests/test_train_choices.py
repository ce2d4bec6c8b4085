"""README promises of `animeid train` and `animeid compare` (issue 15 §4), through the real command:

- ``auto`` (the default method): fine-tuning from ``min_finetune`` training faces; with fewer, fine-tuning
  or logistic regression, whichever names the validation faces better, and it says which and why;
- ``--method forest --tune``: a successive-halving search whose best parameters are the saved forest's;
- ``compare``: the study's Table 7 rows, in order, as a Markdown table and JSON, one model file per row.

Drawn faces only (conftest's ``generated_faces``; no ../shared/data): 4 characters, 10 faces each, so
the seeded 70/10/20 split gives 28 training, 4 validation and 8 test faces. ``--time-budget 1`` makes
fine-tuning stop after its first epoch on any machine (another epoch and the export are always
estimated at over 15 s), so that the logistic head, which names every validation face, is kept.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from animeid.modelfile import read_model

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CHARS = ("akari", "sora", "kin", "kuro")
N_TRAIN, N_VAL, N_TEST = 28, 4, 8


def _animeid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "animeid", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def drawn4(generated_faces, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn4") / "drawn4"
    for name in CHARS:
        (root / name).mkdir(parents=True)
        for f in sorted((generated_faces / name).iterdir())[:10]:
            shutil.copy(f, root / name / f.name)
    return root


def _val_accuracy(model: Path, data: Path) -> float:
    """The saved model's top-1 on the dataset's validation faces (the same seeded split train made)."""
    import animeid
    from animeid.evaluate import evaluate_model

    rep, _ = evaluate_model(animeid.load(model), data, split="val")
    assert rep.n == N_VAL
    return rep.top1


@pytest.mark.slow
def test_auto_keeps_logistic_when_it_names_more_validation_faces_than_fine_tuning(drawn4, tmp_path):
    model = tmp_path / "auto.animeid"
    r = _animeid("train", str(drawn4), "--out", str(model), "--time-budget", "1")
    assert r.returncode == 0, r.stderr
    assert f"trained auto (logistic) on {N_TRAIN} faces of 4 characters" in r.stdout, r.stdout
    m = read_model(model)
    info = m.training["info"]
    acc = info["val_accuracy"]
    # why: both were fitted (28 < 1,000 training faces) and logistic named more of the 4 validation faces
    assert info["chosen"] == "logistic" and set(acc) == {"logistic", "finetune"}, info
    assert acc["logistic"] == 1.0 and acc["finetune"] < 1.0, ("logistic names all 4 validation faces, "
                                                              "one epoch of fine-tuning fewer", acc)
    assert all(round(a * N_VAL) == a * N_VAL for a in acc.values()), ("accuracies are k of the 4 faces", acc)
    assert (f"auto: val top-1 finetune {acc['finetune']:.1%}, logistic 100.0%: logistic kept") in r.stderr, r.stderr
    assert "finetune: time budget reached, stopping before epoch 2/" in r.stderr
    assert m.method == "auto" and type(m.head).__name__ == "LogisticHead", ("the logistic head is the one saved",
                                                                              m.method, type(m.head).__name__)
    assert m.training["options"]["min_finetune"] == 1000
    assert _val_accuracy(model, drawn4) == acc["logistic"], "the saved model names the validation faces as reported"


@pytest.mark.slow
def test_auto_fine_tunes_without_comparing_from_min_finetune_training_faces(drawn4, tmp_path):
    from animeid.train import train

    r = train(drawn4, tmp_path / "ft.animeid", progress=False, min_finetune=N_TRAIN, time_budget=1.0)
    assert (r.method, r.n_train, r.n_val, r.n_test) == ("auto", N_TRAIN, N_VAL, N_TEST)
    assert r.info["chosen"] == "finetune" and "val_accuracy" not in r.info, ("28 >= min_finetune 28: fine-tuning, "
                                                                             "logistic never fitted", r.info)
    assert (r.info["best_epoch"], r.info["stopped_early"]) == (1, True), "the time budget ended it after epoch 1"
    m = read_model(r.model_path)
    assert type(m.head).__name__ == "ProbabilityHead" and m.features["kind"] == "network", (type(m.head), m.features)
    assert m.training["info"]["chosen"] == "finetune"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft.animeid", "ft.animeid.confusion.png",
                                                            "ft.animeid.curves.png"], \
        "the checkpoint folder made beside the model is gone once the model is saved"


def test_tune_searches_the_forest_and_saves_the_best_parameters(drawn4, tmp_path):
    model = tmp_path / "tuned.animeid"
    r = _animeid("train", str(drawn4), "--out", str(model), "--method", "forest", "--tune", "--n-iter", "4",
                 "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    search = res["info"]["search"]
    best = search["best_params"]
    assert (search["n_iter"], search["cv"]) == (4, 3), search
    space = search["space"]
    assert set(best) == set(space) == {"n_estimators", "max_depth", "min_samples_split", "min_samples_leaf",
                                       "max_features"}, best
    assert all(str(v) in space[k] for k, v in best.items()), ("each best value is one of the space's", best, space)
    assert f"tuned parameters: {best} (cross-validated {search['best_cv_accuracy']:.1%})" in r.stdout, r.stdout
    forest = read_model(model).head
    assert {k: getattr(forest, k) for k in best} == best, "the saved forest was refitted with the best parameters"
    assert read_model(model).training["options"]["tune"] is True
    assert res["info"]["oob_score"] == forest.oob_score_


@pytest.mark.slow
def test_compare_writes_the_study_rows_as_a_table(drawn4, tmp_path):
    out = tmp_path / "cmp"
    r = _animeid("compare", str(drawn4), "--out", str(out), "--no-best", "--augment", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    names = ["Random forest (pixels)", "Random forest, tuned", "Inception V3 + softmax (retrain.py)",
             "Inception V3 + softmax, label smoothing 0.1 + augmentation x1"]
    rows = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert [row["method"] for row in rows] == names, "the study's Table 7, in order, the augmentation named"
    assert [row["name"] for row in rows] == ["forest", "forest", "softmax", "softmax"]
    assert [row["options"] for row in rows] == [{}, {"tune": True}, {}, {"label_smoothing": 0.1, "augment": 1}]
    assert {row["n_test"] for row in rows} == {N_TEST}, "every row measured on the same 8 held-out faces"
    for i, row in enumerate(rows):
        assert round(row["top1"] * N_TEST) == row["top1"] * N_TEST and row["top5"] >= row["top1"], row
        assert row["faces_per_s"] > 0 and Path(row["model"]) == out / f"{i + 1}-{row['name']}.animeid", row
        assert read_model(row["model"]).method == row["name"]
    assert read_model(rows[1]["model"]).training["info"]["search"]["n_iter"] == 12, "the tuned row searched"
    table = (out / "compare.md").read_text(encoding="utf-8").splitlines()
    assert table[:2] == ["| method | top-1 | top-5 | training time | prediction (faces/s, batch 32) |",
                         "|---|---:|---:|---:|---:|"]
    assert [line.split(" | ")[0][2:] for line in table[2:]] == names, table
    for line, row in zip(table[2:], rows):
        assert line.startswith(f"| {row['method']} | {row['top1']:.1%} | {row['top5']:.1%} | "), line
    assert r.stdout.startswith("\n".join(table)), "the table printed is the one written"
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == sorted(
        [".animeid-output", "compare.md", "compare.json"]           # the folder's claim mark, the table twice,
        + [f"{i + 1}-{row['name']}.animeid" for i, row in enumerate(rows)])   # and one model a row
