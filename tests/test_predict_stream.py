"""Prediction over many pictures: predict_stream gives predict_batch's answers in input order, an
unreadable picture's error in its place, with the next chunk's faces found in a second thread.

Built from the generated sample only (no ../shared/data): conftest's generated_model.
"""
from __future__ import annotations

import threading

import pytest

from animeid.errors import InputError
from animeid.predict import PredictConfig, Recognizer


@pytest.fixture(scope="module")
def rec(generated_model):
    return Recognizer.load(generated_model.path)


def test_stream_equals_batch_in_order_with_errors_in_place(rec, generated_model, tmp_path):
    faces = [p for c in generated_model.chars[:3] for p in generated_model.held_out(c)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a picture")
    files = faces[:5] + [bad] + faces[5:]
    cfg = PredictConfig(detect="never")
    got = list(rec.predict_stream(files, cfg, chunk=4))
    assert [f for f, _ in got] == files                      # every picture, in input order
    assert isinstance(got[5][1], InputError) and "broken.jpg" in str(got[5][1])
    expected = rec.predict_batch(faces, cfg)
    answers = [r for f, r in got if f != bad]
    for key in ("faces", "whole_picture", "path"):
        assert [r.get(key) for r in answers] == [r.get(key) for r in expected]
    assert all(len(r["faces"]) == 1 and r["faces"][0]["box"] == [0, 0, r["width"], r["height"]] for r in answers)


def test_stream_finds_the_next_chunk_in_another_thread(rec, generated_model, monkeypatch):
    files = [p for c in generated_model.chars[:2] for p in generated_model.held_out(c)][:6]
    seen = []
    real = rec._find

    def spy(images, cfg):
        seen.append(threading.current_thread().name)
        return real(images, cfg)

    monkeypatch.setattr(rec, "_find", spy)
    assert len(list(rec.predict_stream(files, PredictConfig(), chunk=2))) == 6
    assert len(seen) == 3 and all(name.startswith("animeid-find") for name in seen)


def test_stream_refuses_a_bad_setting_before_reading_anything(rec, tmp_path):
    with pytest.raises(InputError, match="not both"):
        next(iter(rec.predict_stream([tmp_path / "missing.jpg"], PredictConfig(unknown_threshold=1.0, unknown_rate=0.1))))
    assert list(rec.predict_stream([], PredictConfig())) == []


def test_stream_takes_one_path_as_one_picture_and_refuses_a_bad_chunk(rec, generated_model):
    face = generated_model.held_out(generated_model.chars[0])[0]
    got = list(rec.predict_stream(str(face)))
    assert len(got) == 1 and got[0][0] == str(face) and not isinstance(got[0][1], Exception)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="chunk"):
            next(iter(rec.predict_stream([face], chunk=bad)))


def test_results_file_says_which_pictures_failed_and_a_rerun_reports_them(generated_model, tmp_path, capsys):
    """predict --out: a refused picture's record holds its error without repeating the path; the summary
    counts named and failed pictures apart; a rerun does not retry it but says so and exits 1."""
    import json
    import shutil

    from animeid.batch import read_done, read_failed
    from animeid.cli import main

    pics = tmp_path / "pics"
    pics.mkdir()
    for f in generated_model.held_out(generated_model.chars[0])[:2]:
        shutil.copy(f, pics / f.name)
    (pics / "zz_broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(generated_model.path), str(pics), "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert "3 pictures: 2 named now, 0 already in" in said.out and "1 failed" in said.out
    assert f"{pics / 'zz_broken.jpg'}:" in said.err                         # stderr names the file
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    broken = next(r for r in records if r["path"].endswith("zz_broken.jpg"))
    assert "zz_broken.jpg" not in broken["error"] and broken["error"]       # the path is the record's own field
    assert read_failed(out) == {broken["path"]} and len(read_done(out)) == 3
    assert main(["predict", str(generated_model.path), str(pics), "--out", str(out)]) == 1
    said = capsys.readouterr().out
    assert "0 named now, 3 already in" in said and "1 failed in an earlier run" in said


def test_results_file_resumes_a_path_given_another_way(generated_model, tmp_path, monkeypatch):
    """`shots` and `/abs/shots` are one folder: the rerun adds nothing (it used to add every picture again)."""
    from animeid.batch import predict_files

    shots = tmp_path / "shots"
    shots.mkdir()
    for f in generated_model.held_out(generated_model.chars[0])[:3]:
        (shots / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.jsonl"
    cfg = PredictConfig(detector="animeface")
    assert predict_files(generated_model.path, ["shots"], out, cfg=cfg)["done"] == 3
    again = predict_files(generated_model.path, [str(shots)], out, cfg=cfg)
    assert (again["skipped"], again["done"]) == (3, 0)
    assert len(out.read_text().splitlines()) == 3


def test_a_results_chunk_is_written_whole_or_not_at_all(generated_model, tmp_path, monkeypatch):
    """A write that fails midway (a full disk) leaves no part of its chunk: a .csv never keeps a
    picture's first face rows without the others, which a rerun could not see."""
    import errno
    import io

    import numpy as np
    from PIL import Image

    import animeid.batch as batch
    from animeid.batch import predict_files
    from animeid.sample import make_characters, render_scene

    specs = make_characters(4, seed=0)
    rng = np.random.default_rng(3)
    pics = []
    for i in range(2):
        scene, _ = render_scene(specs, rng, (480, 320), n_faces=3)
        pics.append(tmp_path / f"scene{i}.png")
        Image.fromarray(np.asarray(scene)).save(pics[-1])
    cfg = PredictConfig(detector="animeface")
    whole = tmp_path / "whole.csv"
    predict_files(generated_model.path, pics, whole, cfg=cfg, chunk=1)
    assert len(whole.read_text().splitlines()) >= 1 + 2 + 2, "two faces or more in each picture for this test"
    out = tmp_path / "r.csv"
    calls = {"n": 0}
    real_write = io.FileIO.write

    class Full(io.FileIO):
        def write(self, b):                   # the 3rd write (the second picture) stops after 40 bytes
            calls["n"] += 1
            if calls["n"] == 3:
                real_write(self, bytes(b)[:40])
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, b)

    monkeypatch.setattr(batch, "open", lambda path, mode, buffering=-1: Full(path, mode.replace("b", "")),
                        raising=False)
    with pytest.raises(OSError, match="No space"):
        predict_files(generated_model.path, pics, out, cfg=cfg, chunk=1)
    monkeypatch.undo()
    lines = whole.read_text().splitlines(keepends=True)
    first = [ln for ln in lines if not ln.startswith(str(pics[1]))]
    assert out.read_text() == "".join(first), "the header and the first picture's rows, nothing of the second"
    again = predict_files(generated_model.path, pics, out, cfg=cfg, chunk=1)
    assert (again["skipped"], again["done"]) == (1, 1)
    assert out.read_text() == whole.read_text()
