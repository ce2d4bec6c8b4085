"""Crops cut from a detector's boxes at prediction time keep the geometry of the model's training
crops (issue 11 §3): ``train`` measures how much of a training crop the face fills as the default
detector boxes it (``detect.measure_crop_fill``), and ``predict`` scales that detector's boxes to
match (``detect.crop_box_for``). Drawn faces only (conftest's generated_model)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from animeid.detect.learned import DEFAULT_DETECTOR_FILE, FLOAT_DETECTOR_FILE


def test_crop_box_for_makes_the_face_fill_the_crop_as_measured():
    from animeid.detect import crop_box, crop_box_for, detector_id

    box = (100.0, 50.0, 200.0, 150.0)               # 100 px face
    fill = {"fill": 0.7, "detector": detector_id(None), "n": 50}
    x0, y0, x1, y1 = crop_box_for(box, 0.2, fill)
    side = (x1 - x0) * (1 + 2 * 0.2)                  # the crop crop_face cuts around it
    assert side == pytest.approx(100 / 0.7)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (150.0, 100.0)
    # measured with another detector, or never: that detector's own crop_scale
    assert crop_box_for(box, 0.2, {**fill, "detector": "other.onnx"}) == crop_box(box, None)
    assert crop_box_for(box, 0.2, fill, "animeface") == crop_box(box, "animeface") == box
    assert crop_box_for(box, 0.2, None) == crop_box(box, None)


def test_a_crop_fill_measured_with_a_detector_the_file_replaced_holds_for_it(tmp_path):
    """A detector file's ``crop_fill_from`` (the shipped file lists the ones it replaced) lets models
    trained with those keep their measured fill; other names still fall back to ``crop_scale``."""
    pytest.importorskip("onnx")
    from animeid.detect import crop_box, crop_box_for
    from animeid.detect.training import set_metadata

    det = tmp_path / "new.onnx"
    det.write_bytes(DEFAULT_DETECTOR_FILE.read_bytes())
    set_metadata(det, {"crop_fill_from": ["old-faces.onnx"]})
    box = (100.0, 100.0, 200.0, 200.0)
    fill = {"fill": 0.7, "detector": "old-faces.onnx", "n": 100}
    x0, y0, x1, y1 = crop_box_for(box, 0.2, fill, det)
    assert x1 - x0 == pytest.approx(100 / (0.7 * 1.4))
    assert crop_box_for(box, 0.2, {**fill, "detector": "older.onnx"}, det) == crop_box(box, det)
    assert crop_box_for(box, 0.2, fill, None) == crop_box(box, None), "a file that does not list it"


def test_a_users_detector_named_like_a_shipped_one_is_not_taken_for_it(tmp_path):
    """A crop fill records the detector's file name; a user's own detector saved under a name animeid
    shipped (here the default's) holds other bytes, so it gets a name of its own and the model's fill
    measured with the real file is not applied to its boxes. A byte-identical copy of the shipped
    file elsewhere is still the shipped file."""
    pytest.importorskip("onnx")
    from animeid.detect import crop_box, crop_box_for, detector_id
    from animeid.detect.training import set_metadata

    copy = tmp_path / "copy" / DEFAULT_DETECTOR_FILE.name
    copy.parent.mkdir()
    copy.write_bytes(DEFAULT_DETECTOR_FILE.read_bytes())
    assert detector_id(copy) == DEFAULT_DETECTOR_FILE.name
    for shipped in (DEFAULT_DETECTOR_FILE, FLOAT_DETECTOR_FILE):
        assert detector_id(shipped) == shipped.name, "a shipped file's SHA-256 belongs in SHIPPED_SHA256"
    float_copy = tmp_path / "copy" / FLOAT_DETECTOR_FILE.name        # the float32 file, moved elsewhere:
    float_copy.write_bytes(FLOAT_DETECTOR_FILE.read_bytes())          # a fill measured with the int8 one holds
    assert crop_box_for((100.0, 100.0, 200.0, 200.0), 0.2, {"fill": 0.7, "detector": DEFAULT_DETECTOR_FILE.name,
                                                            "n": 100}, float_copy) != crop_box((100.0, 100.0, 200.0, 200.0), float_copy)
    mine = tmp_path / "mine" / DEFAULT_DETECTOR_FILE.name
    mine.parent.mkdir()
    mine.write_bytes(FLOAT_DETECTOR_FILE.read_bytes())            # not quantized from the shipped file
    set_metadata(mine, {"threshold": 0.3})                       # other bytes: a user's own file
    mine_id = detector_id(mine)
    assert mine_id.startswith(DEFAULT_DETECTOR_FILE.name + "@") and len(mine_id) == len(DEFAULT_DETECTOR_FILE.name) + 13
    box = (100.0, 100.0, 200.0, 200.0)
    fill = {"fill": 0.7, "detector": DEFAULT_DETECTOR_FILE.name, "n": 100}
    assert crop_box_for(box, 0.2, fill, copy) != crop_box(box, copy)
    assert crop_box_for(box, 0.2, fill, mine) == crop_box(box, mine)
    assert crop_box_for(box, 0.2, {**fill, "detector": mine_id}, mine) != crop_box(box, mine)


def test_measure_crop_fill_on_face_crops_and_on_pictures_without_faces(generated_model):
    from animeid.detect import measure_crop_fill

    crops = [p for c in generated_model.chars for p in sorted((generated_model.faces / c).iterdir())]
    m = measure_crop_fill(crops)
    assert m["detector"] == DEFAULT_DETECTOR_FILE.name and 10 <= m["n"] <= 100
    # the drawn crops were cut around AnimeFace's boxes with a 0.2 margin: the face fills about
    # 0.928 / 1.4 of the crop as the default detector boxes it (its boxes are 0.928 of AnimeFace's)
    assert 0.55 < m["fill"] < 0.8
    blank = [np.full((96, 96, 3), v, np.uint8) for v in range(0, 250, 10)]
    assert measure_crop_fill(blank) is None          # too few faces found to measure
    assert measure_crop_fill([]) is None
    # the sample spans the whole sequence (a dataset in folder order), not its first `limit` pictures
    spread = measure_crop_fill(blank * 5 + crops[:40], limit=50)
    assert spread is not None and 10 <= spread["n"] <= 20


def test_train_stores_the_fill_and_predict_cuts_crops_to_it(generated_model, monkeypatch):
    from animeid.detect import Face
    from animeid.predict import PredictConfig, Recognizer

    rec = Recognizer.load(generated_model.path)
    assert rec.crop_fill is not None and rec.crop_fill["detector"] == DEFAULT_DETECTOR_FILE.name
    assert rec.bundle.features["crop_fill"] == rec.crop_fill
    # a training crop pasted into a bigger picture, its face boxed: the crop cut from the box looks
    # like the training crop when cut to the measured fill, and less so with a wrong one
    crop = np.asarray(Image.open(generated_model.held_out(generated_model.chars[0])[0]).convert("RGB"))
    scene = np.full((400, 400, 3), 128, np.uint8)
    big = np.asarray(Image.fromarray(crop).resize((192, 192), Image.Resampling.BICUBIC))
    scene[100:292, 120:312] = big
    side = 192 * rec.crop_fill["fill"]               # the face's box in the scene, as the fill says
    cx, cy = 120 + 96, 100 + 96
    face = Face((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.9)
    cfg = PredictConfig(detect="always")

    def recut_error(fill):
        monkeypatch.setattr(rec, "crop_fill", fill)
        (_, cut), = rec._locate(Image.fromarray(scene), cfg, [face])[0]
        cut = np.asarray(cut.convert("RGB").resize((96, 96), Image.Resampling.BICUBIC), np.float64)
        return np.abs(cut - crop.astype(np.float64)).mean()

    right = recut_error(rec.crop_fill)
    assert right < 8                                  # nearly the training crop itself
    assert recut_error({**rec.crop_fill, "fill": rec.crop_fill["fill"] * 0.8}) > right + 3


@pytest.mark.parametrize("field, value", [("crop_fill", "wide"), ("crop_fill", {"fill": 0, "detector": "x"}),
                                          ("crop_fill", {"fill": 0.7}), ("one_view", {"sums": "embedding"}),
                                          ("one_view", {"sums": ["embedding"], "outputs": ["probs"],
                                                        "identity_scale": "big"})])
def test_a_damaged_geometry_or_one_view_field_is_refused_naming_it(generated_model, tmp_path, field, value):
    from animeid.errors import ModelFileError
    from animeid.modelfile import read_model, save_model
    from animeid.predict import Recognizer

    b = read_model(generated_model.path)
    bad = save_model(tmp_path / "bad.animeid", b.head, method=b.method, labels=list(b.labels), backbone=b.backbone,
                     backbone_onnx=b.backbone_onnx, features={**b.features, field: value}, training=b.training,
                     thresholds=b.thresholds, extra_arrays=b.extra_arrays)
    with pytest.raises(ModelFileError, match=f"damaged model file: features.{field} is"):
        Recognizer.load(bad)
