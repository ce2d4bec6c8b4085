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
