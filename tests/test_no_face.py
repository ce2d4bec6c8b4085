"""Pictures without a face: predict says so (no face, a separate whole-picture guess), enroll refuses them.

Built from the generated sample only (no ../shared/data): conftest's generated_model.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def model(generated_model) -> Path:
    return generated_model.path


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("blank") / "title-card.png"
    Image.new("RGB", (320, 180), (12, 12, 20)).save(p)
    return p


def test_predict_reports_no_face_and_keeps_the_whole_picture_guess_apart(model, blank):
    from animeid.predict import PredictConfig, Recognizer

    rec = Recognizer.load(model)
    res = rec.predict(blank, PredictConfig(detector="animeface"))
    assert res["faces"] == []
    assert res["whole_picture"]["box"] == [0, 0, 320, 180] and res["whole_picture"]["candidates"]
    always = rec.predict(blank, PredictConfig(detector="animeface", detect="always"))
    assert always["faces"] == [] and "whole_picture" not in always
    never = rec.predict(blank, PredictConfig(detect="never"))
    assert len(never["faces"]) == 1 and "whole_picture" not in never


def test_enroll_refuses_a_picture_without_a_face_unless_told_it_is_a_crop(model, blank):
    from animeid.errors import InputError
    from animeid.predict import PredictConfig, Recognizer

    rec = Recognizer.load(model)
    before = list(rec.labels)
    with pytest.raises(InputError, match=r"title-card.png: no face found.*face-crops"):
        rec.enroll("sky", [blank], PredictConfig(detector="animeface"))
    assert rec.labels == before                       # nothing enrolled
    other = blank.with_name("black-frame.png")
    Image.new("RGB", (200, 200), (0, 0, 0)).save(other)
    with pytest.raises(InputError, match=r"2 of the 2 pictures.*title-card.png: no face found.*black-frame.png: no face"):
        rec.enroll("sky", [blank, other], PredictConfig(detector="animeface"))   # every refused picture is named
    assert rec.labels == before
    r = rec.enroll("sky", [blank], PredictConfig(detector="animeface"), face_crops=True)
    assert r == {"name": "sky", "added": 1, "faces": 1, "new": True}


def test_cli_predict_says_no_face_found(model, blank):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "animeid", "predict", str(model), str(blank), "--detector", "animeface"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{blank}: no face found; read whole as a face crop: " in r.stdout
    assert "1 face(s)" not in r.stdout


def test_detect_and_predict_read_the_frame_of_an_animated_gif_that_shows_faces(model, tmp_path):
    """A black title frame first, faces in the second: detect and predict say which frame they read."""
    import json
    import subprocess
    import sys

    import numpy as np

    from animeid.detect import detect_files
    from animeid.predict import PredictConfig, Recognizer
    from animeid.sample import make_characters, render_scene

    scene, truth = render_scene(make_characters(3, seed=1), np.random.default_rng(11), n_faces=2)
    gif = tmp_path / "clip.gif"
    title = Image.new("RGB", scene.size, (0, 0, 0))
    title.save(gif, save_all=True, append_images=[scene, title], duration=400)
    [rec] = list(detect_files([gif]))
    assert rec["frame"] == 1 and rec["frames"] == 3 and len(rec["faces"]) == 2
    res = Recognizer.load(model).predict(gif, PredictConfig())
    assert res["frame"] == 1 and res["frames"] == 3 and len(res["faces"]) == 2
    r = subprocess.run([sys.executable, "-m", "animeid", "detect", str(gif)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{gif}: 2 faces (frame 2 of 3)" in r.stdout
    # a long animation: only 16 frames, evenly spaced, are searched, and the answer says so
    long = tmp_path / "long.gif"
    shades = [Image.new("RGB", scene.size, (k, 0, 0)) for k in range(41)]     # distinct: GIF merges equal frames
    shades[0].save(long, save_all=True, append_images=shades[1:], duration=100)
    [rec] = list(detect_files([long]))
    assert rec["frames"] == 41 and rec["searched"] == 16
    from animeid._util import frame_note

    assert frame_note(rec) == " (frame 1 of 41; 16 frames searched, evenly spaced)"
    # enroll reads the frame with the face too
    r = Recognizer.load(model)
    assert r.enroll("gif-person", [gif], PredictConfig())["added"] == 1
    still = tmp_path / "still.png"
    scene.save(still)
    [rec] = list(detect_files([still]))
    assert "frame" not in rec and len(rec["faces"]) == 2
