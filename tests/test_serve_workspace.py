"""The label page's routes (animeid.serve.workspace) beyond tests/test_serve.py's label flow: groups
from the real clustering a page at a time, crops missing or unreadable, a manifest row pointing
outside the workspace, the page with animeid.cluster absent, and every shape of groups
``_normalise_groups`` takes.

Drawn model and faces (``generated_model``, tests/conftest.py): no ../shared/data.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from animeid.dataset import Workspace  # noqa: E402
from animeid.serve import create_app  # noqa: E402
from animeid.serve.workspace import _normalise_groups  # noqa: E402
from test_serve import DETECTOR, _test_client, model, rec, workspace  # noqa: E402,F401  (fixtures)


def _ids(page: dict) -> list[list[int]]:
    return [[f["id"] for f in g["faces"]] for g in page["groups"]]


# --------------------------------------------------------------------------- groups' shapes

def test_normalise_groups_takes_lists_dicts_and_objects_and_splits_the_left_apart():
    assert _normalise_groups(None) == ([], set())
    assert _normalise_groups({"groups": [[1, 2], [3]]}) == ([[1, 2], [3]], set())
    # {group id: faces}; -1 holds the faces left apart, each then a group of one
    assert _normalise_groups({0: [1, 2], -1: [3, 4]}) == ([[1, 2], [3], [4]], {3, 4})
    raw = [SimpleNamespace(id=1, face_ids=[SimpleNamespace(id=5), {"id": 6}, "7"]),   # faces as objects, dicts, text
           SimpleNamespace(group_id="-1", faces=[8, 9]),                              # "-1" as text, faces=
           {"id": "misc", "ids": [10]},                                               # an id that is no number
           {"group_id": None, "faces": [{"id": 11}]},
           [12, 13]]                                                                  # a bare list
    assert _normalise_groups(raw) == ([[5, 6, 7], [8], [9], [10], [11], [12, 13]], {8, 9})


# --------------------------------------------------------------------------- the page on a real workspace

def test_cluster_groups_a_page_at_a_time_and_broken_or_outside_crops(model, rec, workspace, tmp_path, caplog):
    """page_faces=1: each group of the real clustering is a page of its own (groups are never cut). A
    crop that is no picture gets no guess (the others still do) and is answered 404 when missing; a
    row pointing outside the workspace gets no guess and its crop is never read."""
    import animeid.cluster as cluster

    TestClient = _test_client()
    real = cluster.cluster_workspace(workspace, rec, store=False)
    expected = [g.face_ids for g in real if g.id != -1] + [[i] for g in real if g.id == -1 for i in g.face_ids]
    assert len(expected) >= 2
    with TestClient(create_app(model, workspace, detector=DETECTOR, page_faces=1)) as c:
        pages = [c.get("/api/v1/workspace/groups", params={"page": k}).json() for k in range(len(expected) + 1)]
        assert [p["pages"] for p in pages] == [len(expected)] * (len(expected) + 1)
        assert [_ids(p) for p in pages] == [[g] for g in expected] + [[]]
        assert all(p["grouping"] == "cluster" for p in pages)

    # break three crops: one unreadable, one moved outside the workspace, one removed
    with Workspace(workspace) as ws:
        files = {r["id"]: r["file"] for r in ws.faces()}
    bad, outside, gone = sorted(files)[:3]
    (workspace / files[bad]).write_bytes(b"not a picture")
    away = tmp_path / "away.png"
    (workspace / files[outside]).rename(away)
    with Workspace(workspace) as ws, ws.conn:
        ws.conn.execute("UPDATE faces SET file=? WHERE id=?", ("../away.png", outside))
    (workspace / files[gone]).unlink()
    # the clustering cannot read these either: the page falls back to the model's guesses in manifest order
    with TestClient(create_app(model, workspace, detector=DETECTOR)) as c:
        page = c.get("/api/v1/workspace/groups").json()
        assert page["grouping"] == "model guess"
        assert "clustering the workspace failed (" in caplog.text and "faces shown in manifest order" in caplog.text
        guess = {f["id"]: f["guess"] for g in page["groups"] for f in g["faces"]}
        assert sorted(guess) == sorted(files)
        assert {i for i, v in guess.items() if v is None} == {bad, outside, gone}
        r = c.get(f"/api/v1/faces/{gone}/crop")
        assert (r.status_code, r.json()["detail"]) == (404, f"the crop of face {gone} is missing from the workspace")
        assert c.get(f"/api/v1/faces/{outside}/crop").status_code == 403
        assert c.get(f"/api/v1/faces/{bad}/crop").content == b"not a picture"       # served as it is
    assert away.is_file()


def test_without_animeid_cluster_faces_are_grouped_by_the_model_guess(model, workspace, monkeypatch):
    """animeid.cluster absent (an install without it): no error, the model's guesses group each page."""
    import animeid

    TestClient = _test_client()
    monkeypatch.delattr(animeid, "cluster", raising=False)
    monkeypatch.setitem(sys.modules, "animeid.cluster", None)          # `import animeid.cluster` fails
    with Workspace(workspace) as ws:
        n = len(ws.faces())
    with TestClient(create_app(model, workspace, detector=DETECTOR, page_faces=5)) as c:
        pages = [c.get("/api/v1/workspace/groups", params={"page": k}).json() for k in range(3)]
    assert [(p["grouping"], p["pages"], p["unlabeled"]) for p in pages] == [("model guess", -(-n // 5), n)] * 3
    with Workspace(workspace) as ws:
        order = sorted(r["id"] for r in ws.faces())
    # page k: the manifest's faces 5k .. 5k+4, regrouped by guess
    assert [sorted(i for g in _ids(p) for i in g) for p in pages] == [order[5 * k:5 * k + 5] for k in range(3)]
    for p in pages:                 # each group is one guessed name; the largest first
        for g in p["groups"]:
            assert len({f["guess"]["name"] for f in g["faces"]}) == 1 == (g["suggestion"]["share"])
        assert [len(g["faces"]) for g in p["groups"]] == sorted((len(g["faces"]) for g in p["groups"]),
                                                                reverse=True)
