"""Labelling help: clustering a workspace's unlabeled faces, naming a group, the model's suggestions."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from animeid.cluster import cluster_embeddings, purity

TRAINED = ["lijima_yun", "sakura_nene", "suzukaze_aoba", "takimoto_hifumi", "toyama_rin"]
STRANGERS = ["ahagon_umiko", "hazuki_shizuku", "yagami_kou"]       # never seen by the model


def test_cluster_embeddings_groups_by_size_and_leaves_singletons_apart():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3]
    E = np.concatenate([centres[0] + 0.05 * rng.standard_normal((6, 8)),
                        centres[1] + 0.05 * rng.standard_normal((9, 8)),
                        centres[2] + 0.05 * rng.standard_normal((1, 8))])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    g = cluster_embeddings(E, threshold=0.3, min_size=2)
    assert list(g) == [2] * 6 + [1] * 9 + [-1]
    assert cluster_embeddings(E[:0], threshold=0.3).shape == (0,)
    p = purity(g, ["a"] * 6 + ["b"] * 9 + ["c"])
    assert p == {"purity": 1.0, "grouped": 15 / 16, "groups": 2, "actions": 3, "actions_face_by_face": 16}
    assert purity([1, 1, 1, 2], ["a", "a", "b", "b"])["actions"] == 3        # 2 names + 1 fix


def _workspace(root: Path, newgame8: Path, names: list[str], per: int = 12) -> Path:
    """A workspace whose unlabeled/ holds up to ``per`` faces of each character (file names carry the truth)."""
    from animeid.dataset import Workspace, label_faces, sync

    Workspace(root, create=True).close()
    for n in names:
        d = root / f"tmp_{n}"
        d.mkdir()
        for f in sorted((newgame8 / n).iterdir())[:per]:
            shutil.copy(f, d / f"{n}__{f.name}")
    sync(root)
    with Workspace(root) as ws:
        ids = [r["id"] for r in ws.faces()]
    label_faces(root, ids, None)
    for n in names:
        (root / f"tmp_{n}").rmdir()
    return root


def _truth(g) -> list[str]:
    return [Path(f).name.split("__")[0] for f in g.files]


def _group_purity(groups) -> tuple[float, float]:
    ids, truth = [], []
    for g in groups:
        ids += [g.id] * g.size
        truth += _truth(g)
    p = purity(ids, truth)
    return p["purity"], p["grouped"]


@pytest.fixture(scope="module")
def model(newgame8, tmp_path_factory) -> Path:
    from animeid.train import train

    root = tmp_path_factory.mktemp("cl")
    for n in TRAINED:
        shutil.copytree(newgame8 / n, root / "data" / n, ignore=lambda d, fs: sorted(fs)[20:])
    path = root / "five.animeid"
    train(root / "data", path, method="logistic", progress=False)
    return path


def test_cluster_without_a_model_groups_three_characters_and_stores_them(newgame8, tmp_path):
    from animeid.cluster import GROUPS_DIR, cluster_workspace, latest_groups
    from animeid.dataset import sync

    ws = _workspace(tmp_path / "ws", newgame8, STRANGERS)
    groups = cluster_workspace(ws, sheets=True)
    pur, grouped = _group_purity([g for g in groups if g.id != -1])
    assert pur >= 0.85 and sum(g.size for g in groups if g.id != -1) >= 0.6 * 34
    assert [g.size for g in groups if g.id != -1] == sorted((g.size for g in groups if g.id != -1), reverse=True)
    run, stored = latest_groups(ws)
    assert run == groups[0].run and sum(len(v) for v in stored.values()) == sum(g.size for g in groups)
    # group 1's sheet: rows of 12 64-px thumbnails after a 180-px label column, its first face first
    from PIL import Image

    from animeid.images import load_image

    g1 = groups[0]
    sheet = np.asarray(Image.open(ws / GROUPS_DIR / "group-1.png").convert("RGB"))
    rows = -(-min(g1.size, 48) // 12)
    assert sheet.shape == (rows * 68 + 4, 180 + 12 * 68 + 4, 3), ("group-1.png: one row per 12 faces", sheet.shape)
    first = np.asarray(load_image(g1.files[0], "RGB").resize((64, 64), Image.BILINEAR))
    assert np.array_equal(sheet[4:68, 184:248], first), "group-1.png shows the group's first face top left"
    overview = np.asarray(Image.open(ws / GROUPS_DIR / "groups.png").convert("RGB"))
    assert overview.shape[0] == len(groups) * 68 + 4, "groups.png: one row per group (and the faces left apart)"
    # the sheets' hidden folder is no character folder
    s = sync(ws)
    assert s.labeled == 0 and s.unlabeled == sum(g.size for g in groups)
    # a second clustering is a new run
    assert cluster_workspace(ws, store=True)[0].run == run + 1


def test_cluster_with_a_model_groups_characters_it_never_saw(model, newgame8, tmp_path):
    from animeid.cluster import cluster_workspace

    ws = _workspace(tmp_path / "ws", newgame8, STRANGERS)
    groups = cluster_workspace(ws, model)
    named = [g for g in groups if g.id != -1]
    pur, _ = _group_purity(named)
    assert pur >= 0.85 and sum(g.size for g in named) >= 0.6 * 34
    assert all(g.guess in TRAINED or g.guess == "unknown" for g in named)     # the model's guess per group
    # a Recognizer works as well as a path (the web app passes one)
    import animeid

    again = cluster_workspace(ws, animeid.load(model), store=False)
    assert [g.face_ids for g in again] == [g.face_ids for g in groups] and again[0].run is None


def test_dataset_name_labels_a_whole_group(newgame8, tmp_path, capsys):
    from animeid.cli import main
    from animeid.dataset import Workspace, sync

    ws = _workspace(tmp_path / "ws", newgame8, STRANGERS)
    assert main(["cluster", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "group 1:" in out and "animeid dataset name" in out
    with Workspace(ws) as w:
        run = w.conn.execute("SELECT MAX(run) FROM face_groups").fetchone()[0]
        ids = [r[0] for r in w.conn.execute("SELECT face_id FROM face_groups WHERE run=? AND group_id=1", (run,))]
    assert main(["dataset", "name", str(ws), "1", "Kou Yagami"]) == 0
    assert f"{len(ids)} faces of group 1" in capsys.readouterr().out
    files = sorted((ws / "Kou Yagami").iterdir())
    assert len(files) == len(ids)
    with Workspace(ws) as w:
        labels = {r["id"]: r["label"] for r in w.faces()}
    assert all(labels[i] == "Kou Yagami" for i in ids)
    s = sync(ws)                                   # dataset sync sees the labels where the crops are
    assert s.characters == {"Kou Yagami": len(ids)} and s.moved == 0
    # naming an already named group again: nothing to do, and the message says why (issue 13)
    assert main(["dataset", "name", str(ws), "1", "other"]) == 1
    err = capsys.readouterr().err
    assert "no face of group 1 labeled 'other'" in err and f"labeled already ('Kou Yagami': {len(ids)})" in err
    assert main(["dataset", "name", str(ws), "1", "Kou Yagami"]) == 0       # what was asked is already so
    assert main(["dataset", "name", str(ws), "999", "x"]) == 1
    assert main(["dataset", "name", str(ws), "-1", "x"]) == 1
    assert "no group 999" in capsys.readouterr().err


def test_suggest_stores_guesses_and_accepts_the_confident_ones(model, newgame8, tmp_path, capsys):
    from animeid.cli import main
    from animeid.cluster import suggest

    ws = _workspace(tmp_path / "ws", newgame8, ["suzukaze_aoba", "toyama_rin", "yagami_kou"], per=8)
    r = suggest(ws, model, min_p=0.9)
    assert r["faces"] == 24 and r["accepted"] == 0
    con = sqlite3.connect(ws / "manifest.sqlite")
    rows = con.execute("SELECT f.file, s.name, s.p FROM suggestions s JOIN faces f ON f.id = s.face_id").fetchall()
    con.close()
    assert len(rows) == 24
    # each stored guess is the model's own verdict for that face: its name and its top candidate's p
    import animeid

    verdicts = animeid.load(model).identify_faces([ws / f for f, _, _ in rows], top=1)
    assert [(n, p) for _, n, p in rows] == [(v["name"], v["candidates"][0]["p"]) for v in verdicts], \
        "suggestions store the verdict's name and top-1 probability"
    assert r["confident"] == sum(n != "unknown" and p >= 0.9 for _, n, p in rows), "confident: named with p >= 0.9"
    known = [(Path(f).name.split("__")[0], n) for f, n, _ in rows if not f.split("/")[-1].startswith("yagami")]
    assert np.mean([t == n for t, n in known]) >= 0.7
    # --accept moves the confident guesses; the doubtful stay unlabeled
    assert main(["suggest", str(model), str(ws), "--min-p", "0.9", "--accept", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["accepted"] == d["confident"] == r["confident"] and len(d["doubtful"]) == 24 - d["confident"]
    moved = [f for n in d["by_name"] for f in (ws / n).glob("*")] if d["confident"] else []
    assert len(moved) == d["confident"]
    assert len(list((ws / "unlabeled").iterdir())) == 24 - d["confident"]
