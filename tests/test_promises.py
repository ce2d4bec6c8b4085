"""Promises the README makes that no other test held (issue 15 §4): EXIF orientation and file objects
through the one picture loader, a workspace of a newer animeid refused, serve's warning for a
non-loopback address, and an enrolment whose save fails answering `saved: false`. Generated data only."""
from __future__ import annotations

import io

import pytest
from PIL import Image


def test_the_loader_turns_a_picture_upright_by_its_exif_orientation_and_reads_file_objects(tmp_path):
    from animeid.images import load_image

    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))                       # red on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6                                              # "rotate 90 degrees clockwise to view"
    p = tmp_path / "phone.jpg"
    img.save(p, exif=exif, quality=95)
    up = load_image(p)
    assert up.size == (20, 40), "EXIF orientation 6 swaps width and height"
    r, g, b = up.getpixel((10, 3))
    assert r > 200 and g < 60, "after turning clockwise the red left edge is at the top"
    with open(p, "rb") as f:                                      # a file object, as uploads are
        assert load_image(f).size == (20, 40)
    assert load_image(io.BytesIO(p.read_bytes())).size == (20, 40)


def test_a_workspace_of_a_newer_animeid_is_refused_untouched(tmp_path):
    from animeid.dataset import Workspace
    from animeid.errors import DatasetError

    with Workspace(tmp_path / "ws", create=True) as ws:
        ws.set_meta("schema_version", "99")
    before = (tmp_path / "ws" / "manifest.sqlite").read_bytes()
    with pytest.raises(DatasetError, match="newer animeid \\(schema 99 > 1\\)"):
        Workspace(tmp_path / "ws")
    assert (tmp_path / "ws" / "manifest.sqlite").read_bytes() == before


def test_serve_warns_when_it_listens_beyond_this_machine(generated_model, capsys, monkeypatch):
    pytest.importorskip("uvicorn")
    import uvicorn

    from animeid.cli import main

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    assert main(["serve", str(generated_model.path), "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert served[0][0] == "127.0.0.1", "the default host is the loopback address"
    assert "warning" not in err and f"open http://127.0.0.1:{served[0][1]}/" in err and served[0][1] != 0
    assert main(["serve", str(generated_model.path), "--host", "0.0.0.0", "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert "animeid: warning: listening on 0.0.0.0: the server has no authentication" in err


def test_an_enrolment_whose_save_fails_answers_saved_false(generated_model, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    import shutil

    from fastapi.testclient import TestClient

    from animeid.predict import Recognizer
    from animeid.serve import create_app

    mf = tmp_path / "m.animeid"
    shutil.copy(generated_model.path, mf)
    before = mf.read_bytes()

    def fail(self, path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Recognizer, "save", fail)
    face = io.BytesIO()
    Image.new("RGB", (96, 96), (10, 200, 30)).save(face, "PNG")
    with TestClient(create_app(mf, save_enrollments=True)) as c:
        r = c.post("/api/v1/enroll", data={"name": "newcomer", "face_crops": "true"},
                   files={"image": ("a.png", face.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["saved"] is False and "cannot save the model: No space left on device" in body["save_error"]
        assert "newcomer" in body["characters"], "the enrolment stays in memory"
    assert mf.read_bytes() == before, "the model file is as it was"


def test_predict_json_gives_one_line_per_picture_a_refused_one_too(generated_model, tmp_path, capsys):
    import json

    from animeid.cli import main

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (30, 30, 30)).save(good)
    assert main(["predict", str(generated_model.path), str(bad), str(good), "--json", "--detector", "animeface"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["path"] for x in lines] == [str(bad), str(good)]
    assert "not a readable picture" in lines[0]["error"] and lines[1]["faces"] == []


def test_frames_of_an_unreadable_video_leave_no_empty_folder(tmp_path, capsys):
    from animeid.cli import main

    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00" * 4000)
    out = tmp_path / "frames"
    assert main(["frames", str(bad), "--out", str(out)]) == 1
    assert not out.exists() and "no frame written: no folder made" in capsys.readouterr().out
    out.mkdir()                                       # a folder that was there stays
    assert main(["frames", str(bad), "--out", str(out)]) == 1 and out.is_dir()


def test_a_deleted_crop_never_comes_back_in_a_later_collect(tmp_path):
    import shutil

    import numpy as np

    from animeid.dataset import CollectConfig, Workspace, collect, sync
    from animeid.sample import make_characters, render_scene

    scene, _ = render_scene(make_characters(3, seed=1), np.random.default_rng(11), n_faces=2)
    pic = tmp_path / "in" / "scene.png"
    pic.parent.mkdir()
    scene.save(pic)
    ws = tmp_path / "ws"
    cfg = CollectConfig(workers=1, detector="animeface")
    assert collect([pic], ws, cfg, show_progress=False).faces == 2
    crops = sorted((ws / "unlabeled").glob("*.png"))
    crops[0].unlink()                                        # the user rejects one crop
    assert sync(ws).deleted == 1
    again = tmp_path / "in2" / "same-scene-other-name.png"      # the same picture, a new source
    again.parent.mkdir()
    shutil.copy(pic, again)
    s = collect([again], ws, cfg, show_progress=False)
    assert s.items == 1 and s.faces == 0 and s.duplicates == 2, "the rejected face is a near-duplicate, kept out"
    assert not crops[0].exists()
    with Workspace(ws) as w:
        assert len(w.faces()) == 1, "one face left, the rejected one still marked deleted"


def test_a_write_that_fails_midway_leaves_the_old_file_whole_and_nothing_half_written(tmp_path, monkeypatch):
    import os

    from animeid._util import atomic_write, save_image_atomic

    target = tmp_path / "model.animeid"
    target.write_bytes(b"the earlier model")
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target) as f:
            f.write(b"half of the new one")
            raise OSError(28, "disk full")
    assert target.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.animeid"], "no temporary file left"
    # a picture whose encoder fails halfway: the same
    pic = tmp_path / "sheet.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(pic)
    before = pic.read_bytes()

    def broken_save(self, fp, *a, **k):
        fp.write(b"\x89PNG half")
        raise OSError(5, "I/O error")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_image_atomic(Image.new("RGB", (8, 8)), pic)
    assert pic.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["model.animeid", "sheet.png"]
