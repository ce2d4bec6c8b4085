"""Output folders and files: a command replaces only what animeid wrote itself (issue 10, section 1).

Every input here is made by the tests (a generated workspace, a tiny video, a drawn picture), so
nothing needs ../shared/data, and the refusals come before any real work.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.cli import main
from animeid.errors import OutputError
from animeid.outputs import MARKER, prepare_output_dir, prepare_output_file


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its bytes' hash (what 'untouched' means here)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _labelled_workspace(tmp_path: Path) -> Path:
    from test_dataset import _fake_workspace

    ws = _fake_workspace(tmp_path, per_char=6)
    for c, name in enumerate(["初音ミク", "aoba", "kou"]):
        (ws / name).mkdir()
        for i in range(4):
            os.replace(ws / f"unlabeled/{c}_{i}.png", ws / f"{name}/{c}_{i}.png")
    assert main(["dataset", "sync", str(ws)]) == 0
    return ws


@pytest.fixture
def ws(tmp_path) -> Path:
    return _labelled_workspace(tmp_path)


def _user_folder(d: Path) -> dict[str, str]:
    """A folder of a user's own things (episodes, art, notes)."""
    (d / "episodes").mkdir(parents=True)
    (d / "episodes" / "ep01.mkv").write_bytes(b"\x1aE\xdf\xa3 not really a video")
    (d / "notes.txt").write_text("my notes\n", encoding="utf-8")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(d / "art.png")
    return _digest(d)


def _picture(path: Path) -> Path:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    return path


def _video(path: Path) -> Path:
    from animeid.video import write_video

    frames = [np.full((48, 64, 3), c, np.uint8) for c in (0, 90, 180) for _ in range(2)]
    write_video(frames, path, fps=1.0)
    return path


# --------------------------------------------------------------------------- dataset export

def test_export_into_the_workspace_is_refused_and_the_workspace_survives(ws, capsys):
    before = _digest(ws)
    assert main(["dataset", "export", str(ws), "--out", str(ws)]) == 1
    err = capsys.readouterr().err
    assert f"animeid dataset export: error: {ws.resolve()}: is an animeid workspace" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _digest(ws) == before
    assert main(["dataset", "export", str(ws), "--out", str(ws), "--overwrite"]) == 1     # not even then
    assert _digest(ws) == before


def test_export_into_the_workspaces_parent_keeps_the_users_files_and_the_workspace(ws, tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before_ws = _digest(ws)
    before_all = _digest(tmp_path)
    assert main(["dataset", "export", str(ws), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path.resolve()) in err and "Traceback" not in err
    assert _digest(tmp_path) == before_all and _digest(ws) == before_ws
    assert _digest(tmp_path / "mine") == user
    # a parent holding only the workspace is refused too: it holds the command's input
    assert main(["dataset", "export", str(ws), "--out", str(ws.parent), "--overwrite"]) == 1
    assert "an input of this command" in capsys.readouterr().err
    assert _digest(tmp_path) == before_all


def test_export_out_dot(ws, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["dataset", "export", str(ws), "--out", ".", "--size", "16"]) == 0
    assert (empty / "split.csv").is_file() and (empty / "aoba").is_dir()
    capsys.readouterr()
    monkeypatch.chdir(ws)                             # `.` being the workspace: refused, no traceback
    before = _digest(ws)
    assert main(["dataset", "export", ".", "--out", "."]) == 1
    err = capsys.readouterr().err
    assert "is an animeid workspace" in err and str(ws.resolve()) in err and "Traceback" not in err
    assert _digest(ws) == before
    _user_folder(tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    before = _digest(tmp_path / "cwd")
    assert main(["dataset", "export", str(ws), "--out", "."]) == 1
    assert "holds files animeid did not write" in capsys.readouterr().err
    assert _digest(tmp_path / "cwd") == before


def test_export_again_needs_overwrite_and_replaces_only_its_own_files(ws, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["dataset", "export", str(ws), "--out", str(out), "--size", "16"]) == 0
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["kind"] == "dataset export" and "split.csv" in marker["files"]
    first = _digest(out)
    capsys.readouterr()
    assert main(["dataset", "export", str(ws), "--out", str(out), "--size", "16"]) == 1
    assert "add --overwrite" in capsys.readouterr().err
    assert _digest(out) == first
    # fewer faces now: the export with --overwrite leaves none of the earlier files behind
    os.replace(ws / "kou" / "2_3.png", ws / "unlabeled" / "2_3.png")
    assert main(["dataset", "sync", str(ws)]) == 0
    assert main(["dataset", "export", str(ws), "--out", str(out), "--size", "16", "--overwrite"]) == 0
    assert len(list((out / "kou").iterdir())) == 3
    assert not list(out.glob(".animeid-tmp-*"))
    # a file the user added to the export is never deleted, not even with --overwrite
    (out / "aoba" / "my_extra.png").write_bytes(b"mine")
    second = _digest(out)
    capsys.readouterr()
    assert main(["dataset", "export", str(ws), "--out", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "aoba/my_extra.png" in err and str(out.resolve()) in err
    assert _digest(out) == second


def test_no_output_goes_inside_a_workspace_or_inside_an_input_folder(ws, tmp_path, capsys):
    """Files written inside a workspace would be read as faces by `dataset sync` (an export's crops, sampled
    frames, plots became characters); an output inside an input folder is read back by the next run."""
    from animeid.sample import make_characters, render_face

    before = _digest(ws)
    pics = tmp_path / "pics"
    pics.mkdir()
    render_face(make_characters(1, seed=1)[0], np.random.default_rng(0), size=96).save(pics / "a.png")
    for argv in (["dataset", "export", str(ws), "--out", str(ws / "export"), "--size", "16"],
                 ["detect", str(pics), "--out", str(ws / "unlabeled")],
                 ["detect", str(pics), "--preview", str(ws / "sub" / "pv")],
                 ["train", str(ws), "--out", str(ws / "m.animeid")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "an animeid workspace" in err and "outside it" in err, argv
    assert _digest(ws) == before                                  # nothing written, nothing removed
    assert main(["detect", str(pics), "--out", str(pics / "crops")]) == 1
    assert "is inside" in capsys.readouterr().err and not (pics / "crops").exists()
    assert main(["import", str(pics), "--workspace", str(pics / "ws"), "-c", "a"]) == 1
    assert "input folder" in capsys.readouterr().err and not (pics / "ws").exists()


# --------------------------------------------------------------------------- demo

def test_demo_rerun_keeps_a_users_added_file(tmp_path, capsys):
    out = tmp_path / "demo-output"
    od = prepare_output_dir(out, "demo", overwrite=True)       # an earlier demo's output, made cheaply
    (out / "sample").mkdir()
    (out / "sample" / "README.txt").write_text("sample\n")
    od.finish()
    (out / "sample" / "my_drawing.png").write_bytes(b"user's own")
    before = _digest(out)
    assert main(["demo", "--out", str(out), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "sample/my_drawing.png" in err and str(out.resolve()) in err and "Traceback" not in err
    assert _digest(out) == before


def test_demo_refuses_an_old_style_demo_folder_with_a_hint(tmp_path, capsys):
    out = tmp_path / "old-demo"
    (out / "sample").mkdir(parents=True)
    (out / "sample" / "README.txt").write_text("sample\n")    # an older animeid wrote no marker
    assert main(["demo", "--out", str(out), "--quick"]) == 1
    assert "remove such a folder yourself" in capsys.readouterr().err
    assert (out / "sample" / "README.txt").read_text() == "sample\n"


# --------------------------------------------------------------------------- frames, detect, predict

def test_frames_refuses_a_folder_with_user_files_or_holding_the_video(tmp_path, capsys):
    video = _video(tmp_path / "vids" / "ep.mp4")
    d = tmp_path / "mine"
    before = _user_folder(d)
    assert main(["frames", str(video), "--every", "2", "--out", str(d)]) == 1
    assert str(d.resolve()) in capsys.readouterr().err and _digest(d) == before
    assert main(["frames", str(video), "--every", "2", "--out", str(video.parent)]) == 1
    assert "an input of this command" in capsys.readouterr().err
    assert [p.name for p in video.parent.iterdir()] == ["ep.mp4"]
    # its own earlier output takes more frames
    out = tmp_path / "frames"
    assert main(["frames", str(video), "--every", "2", "--out", str(out)]) == 0
    assert main(["frames", str(video), "--every", "1", "--out", str(out)]) == 0
    names = json.loads((out / MARKER).read_text())["files"]
    assert sorted(names) == sorted(p.name for p in out.iterdir() if p.name != MARKER)


def test_detect_out_and_preview_are_claimed_before_any_picture_is_read(tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    _picture(pics / "a.png")
    d = tmp_path / "mine"
    before = _user_folder(d)
    for opt in ("--out", "--preview"):
        assert main(["detect", str(pics), opt, str(d)]) == 1
        err = capsys.readouterr()
        assert str(d.resolve()) in err.err and err.out == ""
        assert _digest(d) == before
    before_pics = _digest(pics)
    assert main(["detect", str(pics / "a.png"), "--preview", str(pics)]) == 1     # would write pics/a.png
    assert "an input of this command" in capsys.readouterr().err
    assert _digest(pics) == before_pics
    out = tmp_path / "previews"
    assert main(["detect", str(pics), "--preview", str(out)]) == 0
    assert main(["detect", str(pics), "--preview", str(out)]) == 0                    # own output: added to
    assert (out / "a.png").is_file() and "a.png" in json.loads((out / MARKER).read_text())["files"]


def test_predict_preview_is_checked_before_the_model_is_loaded(tmp_path, capsys):
    pic = _picture(tmp_path / "p.png")
    d = tmp_path / "mine"
    before = _user_folder(d)
    assert main(["predict", str(tmp_path / "no-model.animeid"), str(pic), "--preview", str(d)]) == 1
    err = capsys.readouterr().err
    assert str(d.resolve()) in err and "no-model" not in err
    assert _digest(d) == before


# --------------------------------------------------------------------------- train, compare, timeline, cluster

def test_train_checks_its_outputs_before_training(tmp_path, capsys):
    data = tmp_path / "no-dataset-needed"          # the output is refused before the dataset is read
    folder = tmp_path / "models"
    before = _user_folder(folder)
    assert main(["train", str(data), "--out", str(folder), "--method", "forest"]) == 1
    err = capsys.readouterr().err
    assert f"{folder.resolve()}: is a folder, not a model file" in err and "Traceback" not in err
    notes = folder / "notes.txt"
    assert main(["train", str(data), "--out", str(notes), "--overwrite"]) == 1
    assert "is not a model file animeid wrote" in capsys.readouterr().err
    (folder / "m.animeid.curves.png").write_bytes((folder / "art.png").read_bytes())
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(folder / "m.animeid")]) == 1
    assert "m.animeid.curves.png: exists and is not a plot animeid wrote" in capsys.readouterr().err
    before["m.animeid.curves.png"] = _digest(folder)["m.animeid.curves.png"]
    assert _digest(folder) == before


def test_train_existing_model_needs_overwrite(ws, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["dataset", "export", str(ws), "--out", str(data), "--size", "16"]) == 0
    model = tmp_path / "m.animeid"
    assert main(["train", str(data), "--out", str(model), "--method", "forest", "-q"]) == 0
    first = model.read_bytes()
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(model), "--method", "forest", "-q"]) == 1
    assert "add --overwrite" in capsys.readouterr().err and model.read_bytes() == first
    assert main(["train", str(data), "--out", str(model), "--method", "forest", "-q", "--overwrite"]) == 0


def test_train_checkpoint_folder_with_user_files_is_refused_and_kept(tmp_path, capsys):
    ck = tmp_path / "m.animeid.checkpoints"
    ck.mkdir()
    (ck / "diary.txt").write_text("mine")
    assert main(["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.animeid"),
                 "--method", "finetune"]) == 1
    assert "diary.txt" in capsys.readouterr().err
    assert (ck / "diary.txt").read_text() == "mine"


def test_timeline_png_that_animeid_did_not_draw_is_refused(tmp_path, capsys):
    png = tmp_path / "ep.timeline.png"
    Image.new("RGB", (4, 4)).save(png)
    before = png.read_bytes()
    assert main(["timeline", str(tmp_path / "no.animeid"), str(tmp_path / "ep.mkv"), "--png", str(png)]) == 1
    err = capsys.readouterr().err
    assert f"{png.resolve()}: exists and is not a timeline picture animeid wrote" in err
    assert png.read_bytes() == before


def test_cluster_sheets_folder_keeps_a_users_file(ws, capsys):
    groups = ws / ".groups"
    groups.mkdir()
    (groups / "group-1.png").write_bytes(b"an old sheet")      # an older animeid's sheet: animeid's own
    (groups / "mine.txt").write_text("mine")
    assert main(["cluster", str(ws)]) == 1
    err = capsys.readouterr().err
    assert "mine.txt" in err and "--no-sheets" in err
    assert (groups / "mine.txt").read_text() == "mine" and (groups / "group-1.png").read_bytes() == b"an old sheet"


def test_cluster_sheets_replace_only_the_earlier_sheets(tmp_path):
    from animeid.cluster import GROUPS_DIR, _claim_sheets

    from PIL import Image

    from animeid._util import save_image_atomic

    d = tmp_path / GROUPS_DIR
    d.mkdir()
    Image.new("RGB", (4, 4)).save(d / "group-01.png")               # a user's own picture with a sheet's name
    with pytest.raises(OutputError, match="group-01.png"):
        _claim_sheets(tmp_path)
    assert (d / "group-01.png").is_file()
    (d / "group-01.png").unlink()
    for name in ("group-1.png", "groups.png", "left-apart.png"):     # an older animeid's sheets, no marker
        save_image_atomic(Image.new("RGB", (4, 4)), d / name)      # tagged as animeid's, as it saved them
    od = _claim_sheets(tmp_path)
    od.clear()
    assert sorted(p.name for p in d.iterdir()) == [MARKER]
    (d / "group-2.png").write_bytes(b"new")
    od.finish()
    assert json.loads((d / MARKER).read_text())["files"] == ["group-2.png"]


# --------------------------------------------------------------------------- every command taking --out

def _every_output_command(tmp_path: Path, d: Path) -> dict[str, list[str]]:
    ws = _labelled_workspace(tmp_path / "w")
    video = _video(tmp_path / "v" / "ep.mp4")
    pic = _picture(tmp_path / "pic.png")
    return {
        "dataset export": ["dataset", "export", str(ws), "--out", str(d)],
        "dataset export --overwrite": ["dataset", "export", str(ws), "--out", str(d), "--overwrite"],
        "frames": ["frames", str(video), "--out", str(d)],
        "detect --out": ["detect", str(pic), "--out", str(d)],
        "detect --preview": ["detect", str(pic), "--preview", str(d)],
        "predict --preview": ["predict", str(tmp_path / "m.animeid"), str(pic), "--preview", str(d)],
        "compare": ["compare", str(tmp_path / "data"), "--out", str(d)],
        "compare --overwrite": ["compare", str(tmp_path / "data"), "--out", str(d), "--overwrite"],
        "demo": ["demo", "--out", str(d), "--quick"],
        "train": ["train", str(tmp_path / "data"), "--out", str(d), "--overwrite"],
        "enroll": ["enroll", str(tmp_path / "m.animeid"), "x", str(pic), "--out", str(d)],
    }


def test_a_folder_holding_a_users_file_is_never_emptied_by_any_command(tmp_path, capsys):
    d = tmp_path / "precious"
    before = _user_folder(d)
    for name, argv in _every_output_command(tmp_path, d).items():
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1, name
        assert "Traceback" not in err, name
        assert _digest(d) == before, name
        if name != "enroll":                # enroll loads its model first: that error comes before
            assert str(d.resolve()) in err, name
    # and from a subfolder of it (the user's files are above the output, never touched)
    sub = d / "episodes"
    for name, argv in _every_output_command(tmp_path / "again", sub).items():
        assert main(argv) == 1, name
        assert _digest(d) == before, name
    capsys.readouterr()


# --------------------------------------------------------------------------- the helper itself

def test_prepare_output_dir_rules(tmp_path):
    new = tmp_path / "a" / "b"
    od = prepare_output_dir(new, "export")                      # made, parents too
    assert od.path == new.resolve() and (new / MARKER).is_file()
    (new / "x").mkdir()
    od.record("x/one.png")
    (new / "x" / "one.png").write_bytes(b"1")
    with pytest.raises(OutputError, match="add --overwrite"):
        prepare_output_dir(new, "export")
    with pytest.raises(OutputError, match="holds the output of `animeid export`"):
        prepare_output_dir(new, "frames", replace=False)
    assert prepare_output_dir(new, "export", replace=False).files == {"x/one.png"}   # adding is fine
    od = prepare_output_dir(new, "export", overwrite=True)
    od.clear()
    assert sorted(p.name for p in new.iterdir()) == [MARKER]
    (new / "empty-user-folder").mkdir()                         # an empty folder the user made is theirs
    with pytest.raises(OutputError, match="empty-user-folder"):
        prepare_output_dir(new, "export", overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        prepare_output_dir(f, "export")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_output_dir(empty, "export").files == set()


def test_prepare_output_file_rules(tmp_path):
    from animeid.outputs import is_animeid_png

    from animeid._util import save_image_atomic

    p = tmp_path / "plot.png"
    assert prepare_output_file(p, own=is_animeid_png, what="a plot") == p.resolve()
    Image.new("RGB", (4, 4)).save(p)                            # not drawn by animeid
    with pytest.raises(OutputError, match="is not a plot animeid wrote"):
        prepare_output_file(p, own=is_animeid_png, what="a plot", overwrite=True)
    save_image_atomic(Image.new("RGB", (4, 4)), p)              # drawn by animeid: tagged
    assert is_animeid_png(p)
    with pytest.raises(OutputError, match="add --overwrite"):
        prepare_output_file(p, own=is_animeid_png, what="a plot")
    assert prepare_output_file(p, own=is_animeid_png, what="a plot", overwrite=True) == p.resolve()
    with pytest.raises(OutputError, match="is a folder"):
        prepare_output_file(tmp_path, own=is_animeid_png, what="a plot", overwrite=True)


def test_detect_refuses_one_folder_for_crops_and_previews(tmp_path):
    # crops NAME_0.png and previews NAME.png of pictures x.png and x_0.png would overwrite each other
    from animeid.cli import main

    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (64, 64), "white").save(pics / "x.png")
    assert main(["detect", str(pics), "--out", str(tmp_path / "same"), "--preview", str(tmp_path / "same")]) == 1
    assert not (tmp_path / "same").exists()


def test_predict_previews_of_pictures_named_alike_are_both_kept(generated_model, tmp_path):
    from animeid.cli import main

    face = sorted((generated_model.faces / "akari").iterdir())[0]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.open(face).save(tmp_path / d / "x.png")
    assert main(["predict", str(generated_model.path), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                 "--detector", "animeface", "--preview", str(tmp_path / "prev")]) == 0
    assert sorted(p.name for p in (tmp_path / "prev").glob("*.png")) == ["x.png", "x~2.png"]


def test_a_file_saved_over_animeids_output_is_the_users_and_is_never_replaced(tmp_path):
    """The marker notes each file's size and time as written: a user's chart saved under an earlier
    sheet's name (or a hand-edited export crop) is theirs now, and the next run refuses to touch it."""
    import time

    from PIL import Image

    from animeid._util import save_image_atomic
    from animeid.cluster import GROUPS_DIR, _claim_sheets

    od = _claim_sheets(tmp_path)
    d = tmp_path / GROUPS_DIR
    save_image_atomic(Image.new("RGB", (4, 4)), d / "group-2.png")
    od.finish()
    assert _claim_sheets(tmp_path) is not None                    # untouched: still animeid's own
    time.sleep(0.01)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(d / "group-2.png")   # the user saves their own picture there
    before = (d / "group-2.png").read_bytes()
    with pytest.raises(OutputError, match="group-2.png"):
        _claim_sheets(tmp_path)
    assert (d / "group-2.png").read_bytes() == before


def test_links_do_not_lead_outputs_into_a_workspace_or_an_input_folder(ws, tmp_path, capsys):
    from animeid.sample import make_characters, render_face

    pics = tmp_path / "pics"
    pics.mkdir()
    render_face(make_characters(1, seed=1)[0], np.random.default_rng(0), size=96).save(pics / "a.png")
    (tmp_path / "to_ws").symlink_to(ws / "unlabeled", target_is_directory=True)
    (tmp_path / "to_pics").symlink_to(pics, target_is_directory=True)
    before = _digest(ws)
    assert main(["detect", str(pics), "--out", str(tmp_path / "to_ws" / "crops")]) == 1
    assert "an animeid workspace" in capsys.readouterr().err
    assert main(["detect", str(pics), "--out", str(tmp_path / "to_pics" / "crops")]) == 1
    assert "an input folder" in capsys.readouterr().err
    assert _digest(ws) == before and not (pics / "crops").exists()


def test_dataset_stats_sheet_never_replaces_a_users_file_nor_lands_among_the_faces(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for name in ("aoba", "kou"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 90, 40, 0)).save(data / name / f"{i}.png")
    mine = tmp_path / "mine.png"
    Image.new("RGB", (8, 8)).save(mine)                           # a PNG animeid did not draw
    before = mine.read_bytes()
    assert main(["dataset", "stats", str(data), "--sheet", str(mine)]) == 1
    assert "not a contact sheet animeid wrote" in capsys.readouterr().err and mine.read_bytes() == before
    assert main(["dataset", "stats", str(data), "--sheet", str(data / "aoba" / "sheet.png")]) == 1
    assert not (data / "aoba" / "sheet.png").exists()
    assert main(["dataset", "stats", str(data), "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert main(["dataset", "stats", str(data), "--sheet", str(tmp_path / "sheet.png")]) == 0   # its own: replaced
