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
