"""The dataset commands of the CLI: detect, frames, import, dataset export/stats; exit statuses."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.cli import main
from animeid.detect import default_threshold


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_detect_json_crops_and_previews(detect_tadne, tmp_path, capsys):
    pics = [detect_tadne / "tadne_r0c1.jpg", detect_tadne / "tadne_r1c3.jpg"]
    assert main(["detect", *map(str, pics), "--json", "--out", str(tmp_path / "crops"),
                 "--preview", str(tmp_path / "prev"), "--size", "64"]) == 0
    recs = [json.loads(x) for x in _lines(capsys)]
    assert [Path(r["path"]).name for r in recs] == ["tadne_r0c1.jpg", "tadne_r1c3.jpg"]
    for r in recs:
        assert set(r) == {"path", "width", "height", "faces"}
        assert (r["width"], r["height"]) == (512, 512)
        for f in r["faces"]:
            x0, y0, x1, y1 = f["box"]
            # the default detector's scores are calibrated probabilities, kept from its own threshold up
            assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512 and default_threshold() <= f["score"] <= 1
    n = sum(len(r["faces"]) for r in recs)
    assert n >= 2
    crops = sorted((tmp_path / "crops").glob("*.png"))      # beside them: the .animeid-output marker
    assert len(crops) == n and Image.open(crops[0]).size == (64, 64)
    assert len(list((tmp_path / "prev").glob("*.png"))) == 2


def test_detect_bad_inputs_are_named_and_others_go_on(detect_tadne, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.jpg").write_text("not a picture")
    code = main(["detect", str(tmp_path / "missing.png"), str(tmp_path / "empty"), str(tmp_path / "notes.jpg"),
                 str(detect_tadne / "tadne_r0c1.jpg"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "missing.png: no such file" in err and "folder holds no pictures" in err and "notes.jpg" in err
    assert "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["faces"]      # the good picture was still done


def test_frames_command(tmp_path, capsys):
    from animeid.video import write_video

    frames = [np.full((120, 160, 3), c, np.uint8) for c in (0, 60, 120, 180, 240) for _ in range(2)]
    write_video(frames, tmp_path / "ep.mp4", fps=1.0)
    assert main(["frames", str(tmp_path / "ep.mp4"), "--every", "2", "--out", str(tmp_path / "f")]) == 0
    names = sorted(p.name for p in (tmp_path / "f").glob("*.jpg"))
    assert len(names) == 5 and names[0].startswith("ep_t")
    assert main(["frames", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "f")]) == 1


def test_import_unicode_character_and_face_crops(detect_tadne, newgame8, tmp_path, capsys):
    ws = tmp_path / "ws"
    art = tmp_path / "art"
    art.mkdir()
    Image.open(detect_tadne / "tadne_r0c1.jpg").save(art / "a.png")
    crops = sorted((newgame8 / "toyama_rin").iterdir())[:3]
    for c in crops:                                        # face crops: taken whole if not detected
        Image.open(c).save(art / f"crop_{c.name}")
    assert main(["import", str(art), "--workspace", str(ws), "--character", "涼風青葉", "--workers", "1"]) == 0
    labelled = list((ws / "涼風青葉").iterdir())
    assert len(labelled) == 4
    assert main(["dataset", "sync", str(ws)]) == 0
    assert "涼風青葉: 4" in capsys.readouterr().out
    assert main(["import", str(art), "--workspace", str(ws), "--character", "../evil", "--workers", "1"]) == 1
    assert "invalid character name" in capsys.readouterr().err


def test_dataset_export_and_stats_commands(tmp_path, capsys):
    from test_dataset import _fake_workspace

    ws = _fake_workspace(tmp_path, per_char=10)
    for c, name in enumerate(["初音ミク", "aoba", "kou"]):
        (ws / name).mkdir()
        for i in range(10):
            os.replace(ws / f"unlabeled/{c}_{i}.png", ws / f"{name}/{c}_{i}.png")
    assert main(["dataset", "sync", str(ws)]) == 0
    assert main(["dataset", "export", str(ws), "--out", str(tmp_path / "data"), "--size", "32"]) == 0
    assert "30 faces of 3 characters" in capsys.readouterr().out
    assert main(["dataset", "stats", str(tmp_path / "data"), "--json"]) == 0
    r = json.loads(_lines(capsys)[-1])
    assert r["characters"]["初音ミク"]["train"] >= 6 and Path(r["contact_sheet"]).is_file()
    assert main(["dataset", "stats", str(tmp_path / "nope")]) == 1


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect"])
    assert e.value.code == 2


# --------------------------------------------------------------------------- each error said once (videos)

def test_frames_says_each_error_once(tmp_path, capsys, caplog):
    from animeid.video import write_video

    (tmp_path / "broken.mp4").write_text("not a video")
    write_video([np.full((48, 64, 3), 90, np.uint8)] * 40, tmp_path / "ep.mkv", fps=2, gop=4)
    data = (tmp_path / "ep.mkv").read_bytes()
    (tmp_path / "half.mkv").write_bytes(data[: len(data) // 2])
    code = main(["frames", str(tmp_path / "broken.mp4"), str(tmp_path / "half.mkv"), str(tmp_path / "nope.mkv"),
                 "--out", str(tmp_path / "f")])
    assert code == 1
    err_and_log = capsys.readouterr().err + "".join(r.getMessage() for r in caplog.records)
    for name in ("broken.mp4", "half.mkv", "nope.mkv"):
        assert err_and_log.count(f"{tmp_path / name}:") == 1, (name, err_and_log)


def test_timeline_says_its_note_once_and_true(tmp_path, capsys, caplog, monkeypatch):
    from test_timeline import RED, ColorRecognizer, _color_video
    from test_video import damage_packets

    from animeid.predict import Recognizer

    monkeypatch.setattr(Recognizer, "load", classmethod(lambda cls, *a, **k: ColorRecognizer()))
    src = _color_video(tmp_path / "src.mp4", [RED] * 40, fps=2, gop=4)
    video = damage_packets(src, tmp_path / "damaged.mp4", 8, 10)
    assert main(["timeline", "model.animeid", str(video), "--every", "1", "--no-png"]) == 1
    captured = capsys.readouterr()
    logged = "".join(r.getMessage() for r in caplog.records)
    assert (captured.err + logged).count(str(video) + ":") == 1
    assert "went on to 19.500 s" in captured.err and "covers the frames before" not in captured.err
    # ranges after the damage; the samples where no frame decodes (8 and 9 s) are left out, not invented
    assert "red: 18 frames, mean p 90%: 0:00-0:07, 0:10-0:19" in captured.out
    assert "no frame decodes from 7.500 to 10.000 s: 2 sample times there left out" in captured.err


def test_collect_missing_input_says_so_once_and_creates_no_workspace(tmp_path, capsys, caplog):
    ws = tmp_path / "ws"
    assert main(["collect", str(tmp_path / "nosuch.mkv"), "--workspace", str(ws), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    logged = "".join(r.getMessage() for r in caplog.records)
    assert (err + logged).count("nosuch.mkv") == 1 and "no such file" in err
    assert "no workspace created" in err
    assert not ws.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["import", str(empty), "--workspace", str(ws), "--character", "a", "--workers", "1"]) == 1
    assert not ws.exists()
    # a file that exists but cannot be read: said once, after the summary; nothing read, so no workspace
    (tmp_path / "broken.mkv").write_text("not a video")
    caplog.clear()
    assert main(["collect", str(tmp_path / "broken.mkv"), "--workspace", str(ws), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    logged = "".join(r.getMessage() for r in caplog.records)
    assert (captured.err + logged).count("broken.mkv") == 1 and "not a readable video" in captured.err
    assert "no workspace made" in captured.out and not ws.exists()
