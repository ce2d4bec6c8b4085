"""Learned face detector: annotation formats, metrics, decoding, a tiny training run, the CLI.

Everything here runs on pictures the tests draw themselves (animeid.sample), never on ../shared/data.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.detect.annotations import Annotated, detect_format, load_boxes, load_many, save_boxes_json
from animeid.detect.learned import decode, nms
from animeid.detect.metrics import match, score_detections
from animeid.errors import InputError, ModelFileError, OutputError, UnknownNameError


def _pictures(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"pic{i}.png"
        Image.new("RGB", (200, 100), (i * 40, 80, 120)).save(p)
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------- formats

def test_boxes_json_clips_boxes_and_keeps_ignore_regions(tmp_path):
    _pictures(tmp_path, 1)
    (tmp_path / "boxes.json").write_text(json.dumps({
        "_about": "comment", "pic0.png": {"faces": [{"box": [-10, 10, 50, 60]}], "ignore": [[100, 0, 150, 40]]}}))
    [a] = load_boxes(tmp_path)
    assert a.image == tmp_path / "pic0.png" and a.size == (200, 100)
    assert a.boxes.tolist() == [[0, 10, 50, 60]]          # clipped to the picture
    assert a.ignore.tolist() == [[100, 0, 150, 40]]


def test_coco_yolo_voc_give_the_same_boxes(tmp_path):
    ref = [[20.0, 10.0, 80.0, 70.0], [100.0, 20.0, 140.0, 60.0]]
    coco = tmp_path / "coco"
    _pictures(coco, 1)
    (coco / "instances.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "pic0.png", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "hand"}],
        "annotations": [{"image_id": 7, "category_id": 1, "bbox": [20, 10, 60, 60]},
                        {"image_id": 7, "category_id": 1, "bbox": [100, 20, 40, 40]},
                        {"image_id": 7, "category_id": 2, "bbox": [0, 0, 10, 10]}]}))
    yolo = tmp_path / "yolo"
    _pictures(yolo / "images", 1)
    (yolo / "labels").mkdir()
    (yolo / "labels" / "pic0.txt").write_text("0 0.25 0.4 0.3 0.6\n0 0.6 0.4 0.2 0.4\n")
    voc = tmp_path / "voc"
    _pictures(voc, 1)
    objs = "".join(f"<object><name>face</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for b in ref)
    (voc / "pic0.xml").write_text(f"<annotation>{objs}</annotation>")
    for folder, fmt in ((coco, "coco"), (yolo, "yolo"), (voc, "voc")):
        assert detect_format(folder) == fmt
        [a] = load_boxes(folder)
        assert np.allclose(a.boxes, ref, atol=1e-4), (fmt, a.boxes)


@pytest.mark.parametrize("content, message", [
    ("", "empty annotation file"),
    ("{not json", "not valid JSON"),
    ('{"pic0.png": {"faces": [{"box": [10, 10, 5, 20]}]}}', "x0 < x1"),
    ('{"pic0.png": {"faces": [{"box": [300, 10, 350, 20]}]}}', "wholly outside"),
    ('{"pic0.png": {"faces": [{"box": [1, 2, 3]}]}}', "four numbers"),
    ('{"missing.png": {"faces": []}}', "does not exist"),
    ('[1, 2]', "object mapping picture names"),
])
def test_bad_annotations_name_the_file_and_the_problem(tmp_path, content, message):
    _pictures(tmp_path, 1)
    (tmp_path / "boxes.json").write_text(content)
    with pytest.raises(InputError) as e:
        load_boxes(tmp_path)
    assert message in str(e.value) and "boxes.json" in str(e.value)


def test_yolo_picture_without_labels_and_unknown_folder_are_refused(tmp_path):
    _pictures(tmp_path / "a", 2)
    (tmp_path / "a" / "pic0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="pic1.png.*no label file"):
        load_boxes(tmp_path / "a")
    _pictures(tmp_path / "b", 1)
    with pytest.raises(InputError, match="no face boxes found"):
        load_boxes(tmp_path / "b")


def test_a_picture_annotated_twice_is_refused(tmp_path):
    _pictures(tmp_path, 1)
    save_boxes_json(tmp_path / "boxes.json", [Annotated(tmp_path / "pic0.png", np.array([[1, 1, 20, 20]], np.float32))])
    with pytest.raises(InputError, match="annotated twice"):
        load_many([tmp_path, tmp_path / "boxes.json"])


# ------------------------------------------------------------------------------------------- metrics

def test_scores_on_a_hand_made_case():
    refs = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 10, 10]])]
    dets = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 29, 30]]), np.array([0.9, 0.8, 0.3])),
            (np.array([[1, 1, 10, 10], [0, 0, 10, 10]]), np.array([0.7, 0.6]))]
    s = score_detections(dets, refs, threshold=0.5)
    # at 0.5: 0.9 hit, 0.8 false alarm, 0.7 hit (IoU 0.81), 0.6 duplicate = false alarm; 0.3 below
    assert (s.true_positives, s.false_positives, s.faces) == (2, 2, 3)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # the PR curve by score: hit, fa, hit, fa, hit -> precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1
    # interpolated AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5
    assert s.ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert s.best_f1 == pytest.approx(0.75) and s.best_threshold == pytest.approx(0.3)
    assert s.faces_by_size == {"<32": 3, "32-64": 0, "64-128": 0, ">=128": 0}
    assert s.recall_by_size["<32"] == pytest.approx(2 / 3)


def test_ignore_regions_count_neither_way():
    state, hit = match(np.array([[0, 0, 10, 10], [100, 100, 110, 110]]), np.array([0.9, 0.8]),
                       np.zeros((0, 4)), ignore=np.array([[95, 95, 120, 120]]))
    assert state.tolist() == [0, -1] and hit.tolist() == []


def test_nms_and_decode():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7])).tolist() == [1, 2]
    # a smaller box on part of a face a better box holds whole (IoU 0.16): dropped; one that only
    # overlaps a corner, and a better one inside a worse one, are kept
    nested = np.array([[0, 0, 100, 100], [10, 10, 50, 50], [80, 80, 180, 180]], float)
    assert nms(nested, np.array([0.9, 0.5, 0.6])).tolist() == [0, 2]
    assert nms(nested, np.array([0.9, 0.5, 0.6]), contain=1.0).tolist() == [0, 2, 1]
    assert nms(nested[:2], np.array([0.4, 0.9])).tolist() == [1, 0]
    peaks = np.zeros((4, 4), np.float32)
    peaks[1, 2] = 0.8
    ltrb = np.zeros((4, 4, 4), np.float32)
    ltrb[:, 1, 2] = [4, 6, 8, 10]
    b, s = decode(peaks, ltrb, stride=8, min_peak=0.1)
    # the place (1, 2) is the pixel (20, 12)
    assert b.tolist() == [[16, 6, 28, 22]] and s.tolist() == pytest.approx([0.8])


# ------------------------------------------------------------------------------------------- training

def test_tiny_training_writes_a_detector_that_resumes_and_loads(scenes, tmp_path):
    pytest.importorskip("torch")
    from animeid.detect import detect_faces, get_detector
    from animeid.detect.learned import LearnedDetector
    from animeid.detect.training import (MIN_CALIBRATION_FACES, UNCALIBRATED_THRESHOLD, DetectorTrainConfig,
                                         train_detector)

    items = load_boxes(scenes)
    cfg = dict(size=128, input_size=128, batch_size=4, epochs=1, warmup_steps=1, checkpoint_every=1, threads=1,
               val_fraction=0.2, test_fraction=0.0)
    out = tmp_path / "tiny.onnx"
    logs: list[str] = []
    train_detector(items, out, DetectorTrainConfig(max_steps=1, **cfg), progress=False, log=logs.append)
    first = out.stat().st_mtime_ns
    logs.clear()
    r = train_detector(items, out, DetectorTrainConfig(max_steps=2, **cfg), progress=False, log=logs.append)
    assert out.stat().st_mtime_ns >= first
    assert any("resuming" in line and "step 1" in line for line in logs), logs
    assert r.history[-1]["step"] == 2
    det = LearnedDetector(out, threads=1)
    assert det.input_size == 128 and det.stride == 8
    assert r.metadata["counts"]["train"] + r.metadata["counts"]["val"] == 12
    # 2-3 validation pictures hold far fewer than 20 faces: the scores are left raw (a fit on them gave
    # thresholds of 0.99-1.00 that missed plain faces), at the threshold the shipped files stand for
    assert r.metadata["faces"]["val"] < MIN_CALIBRATION_FACES and r.metadata["calibrated"] is False
    assert det.default_threshold == UNCALIBRATED_THRESHOLD and r.metadata["calibration"] == [1.0, 0.0]
    faces = detect_faces(Image.open(items[0].image), threshold=0.0, detector=out)
    assert all(0 <= f.box[0] < f.box[2] <= 192 and 0 <= f.box[1] < f.box[3] <= 128 for f in faces)
    assert get_detector(str(out)) is get_detector(str(out))


def test_resuming_with_other_settings_is_refused(scenes, tmp_path):
    pytest.importorskip("torch")
    from animeid.detect.training import DetectorTrainConfig, train_detector

    items = load_boxes(scenes)
    cfg = dict(size=128, input_size=128, batch_size=4, epochs=1, checkpoint_every=1, threads=1, max_steps=1)
    train_detector(items, tmp_path / "a.onnx", DetectorTrainConfig(**cfg), progress=False, log=lambda s: None)
    with pytest.raises(OutputError, match="checkpoint of another training") as e:
        train_detector(items, tmp_path / "a.onnx", DetectorTrainConfig(**{**cfg, "lr": 0.1}), progress=False,
                       log=lambda s: None)
    assert e.value.path == str(tmp_path / "a.onnx.work") and "own command" in str(e.value)
    # through the CLI: one line naming the folder, no traceback (it was a bare ValueError)
    r = _cli("detector", "train", str(scenes), "--out", str(tmp_path / "a.onnx"), "--size", "128", "--input-size",
             "128", "--batch-size", "4", "--epochs", "1", "--threads", "1", "--max-steps", "1", "--lr", "0.1", "-q",
             "--overwrite")
    assert r.returncode == 1 and "a.onnx.work: holds a checkpoint of another training" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    for bad in ({"lr": float("inf")}, {"frozen_blocks": -3}, {"frozen_blocks": 17}):
        with pytest.raises(ValueError, match="lr|frozen_blocks"):
            DetectorTrainConfig(**bad)


def test_unknown_detector_names_and_foreign_files(tmp_path):
    from animeid.detect import get_detector

    with pytest.raises(UnknownNameError, match="known: default, animeface"):
        get_detector("yolo")
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(ModelFileError, match="x.onnx"):
        get_detector(bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "animeid", *args], capture_output=True, text=True, timeout=300)


def test_cli_detector_evaluate_json_and_bad_input(scenes, tmp_path):
    r = _cli("detector", "evaluate", "animeface", "--boxes", str(scenes), "--json", "-q")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    [row] = out["detectors"]
    n_faces = sum(len(a.boxes) for a in load_boxes(scenes))
    assert out["pictures"] == 12 and row["detector"] == "animeface" and row["faces"] == n_faces > 12
    tp, fp = row["true_positives"], row["false_positives"]
    assert tp + fp == row["detections"] and row["ms_per_picture"] > 0
    assert (row["precision"], row["recall"]) == (round(tp / (tp + fp), 4), round(tp / n_faces, 4)), \
        ("precision = hits / detections, recall = hits / reference faces", row)
    (tmp_path / "boxes.json").write_text("{broken")
    r = _cli("detector", "train", str(tmp_path), "--out", str(tmp_path / "d.onnx"))
    assert r.returncode == 1 and "boxes.json: not valid JSON" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d.onnx").exists()
    r = _cli("detect", str(scenes / "s00.png"), "--detector", "yolo")
    assert r.returncode != 0 and "unknown face detector 'yolo'" in r.stderr and "Traceback" not in r.stderr


def test_fine_tuning_starts_from_the_given_detector_file(scenes, tmp_path):
    torch = pytest.importorskip("torch")
    from animeid.detect.learned import LearnedDetector
    from animeid.detect.training import DetectorTrainConfig, FaceNet, load_onnx_weights, train_detector

    items = load_boxes(scenes)
    cfg = dict(size=128, input_size=128, batch_size=4, epochs=1, threads=1, max_steps=1, warmup_steps=1)
    first = tmp_path / "first.onnx"
    train_detector(items, first, DetectorTrainConfig(**cfg), progress=False, log=lambda s: None)
    # the torch network rebuilt from the ONNX file computes exactly what the file does
    net = FaceNet(DetectorTrainConfig(**cfg), pretrained=False).eval()
    load_onnx_weights(net, first)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 160)).astype(np.float32)
    with torch.no_grad():
        _, ltrb = net(torch.from_numpy(x))
    assert np.allclose(ltrb.numpy(), LearnedDetector(first, threads=1).run(x)[1], atol=1e-4)
    second = tmp_path / "second.onnx"
    r = train_detector(items, second, DetectorTrainConfig(**cfg), init=first, progress=False, log=lambda s: None)
    assert second.is_file() and r.metadata["counts"]["train"] > 0
    with pytest.raises(ValueError, match="not a detector file this network can start from"):
        bad = FaceNet(DetectorTrainConfig(**{**cfg, "width": 32}), pretrained=False)
        load_onnx_weights(bad, first)


def test_cli_detector_train_then_evaluate_a_split_as_a_table_with_curves(scenes, tmp_path):
    """The real `animeid detector train` (one epoch of a step or two) and `animeid detector evaluate` (a split, the text
    table, the precision-recall PNG): what each prints and writes."""
    from animeid.detect.evaluate import evaluate_detector, format_table
    from animeid.detect.training import split_items
    from animeid.outputs import is_animeid_png

    det = tmp_path / "d.onnx"
    tiny = ["--epochs", "1", "--size", "128", "--input-size", "128", "--batch-size", "8", "--threads", "1", "-q",
            "--val-fraction", "0.3"]     # a few validation pictures: a learning curve to draw
    r = _cli("detector", "train", str(scenes), "--out", str(det), *tiny)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"detector written to {det} (") and "; threshold " in r.stdout, r.stdout
    assert "12 pictures, " in r.stderr and " boxed faces" in r.stderr
    assert "not calibrated probabilities" in r.stderr and "--val-fraction" in r.stderr, r.stderr
    from animeid.detect.learned import read_metadata

    cfg = read_metadata(det)["config"]                 # without --from: the training defaults
    assert (cfg["lr"], cfg["frozen_blocks"]) == (0.002, 5)
    history = det.with_suffix(".history.png")
    assert is_animeid_png(history), "the learning curve is drawn beside the detector"
    assert is_animeid_png(det.with_suffix(".pr.png")), "and its precision-recall curve on the validation part"
    assert "precision-recall curve on the " in r.stdout and str(det.with_suffix(".pr.png")) in r.stdout, r.stdout
    # before any picture is read: an earlier detector (without its .work folder) is kept without
    # --overwrite, and a file that is not a detector is never replaced
    earlier, notes = tmp_path / "earlier.onnx", tmp_path / "notes.onnx"
    earlier.write_bytes(det.read_bytes())
    notes.write_text("my notes")
    for target, why in ((earlier, "--overwrite"), (notes, "not a detector file")):
        r = _cli("detector", "train", str(scenes), "--out", str(target), *tiny)
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert earlier.read_bytes() == det.read_bytes() and notes.read_text() == "my notes"
    # a picture of the user's where a curve would be drawn is never replaced (checked before training)
    mine = tmp_path / "mine.pr.png"
    Image.new("RGB", (4, 4)).save(mine)
    before = mine.read_bytes()
    r = _cli("detector", "train", str(scenes), "--out", str(tmp_path / "mine.onnx"), *tiny)
    assert r.returncode == 1 and "not a plot animeid wrote" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "mine.onnx").exists() and mine.read_bytes() == before
    # the same command again after it finished (its .work folder kept): the detector is an earlier
    # output like any other, kept without --overwrite (it used to be written again as a "resume")
    assert (det.parent / (det.name + ".work") / "checkpoint.pt").is_file()
    before = det.stat().st_mtime_ns
    r = _cli("detector", "train", str(scenes), "--out", str(det), *tiny)
    assert r.returncode == 1 and "--overwrite" in r.stderr and det.stat().st_mtime_ns == before, r.stderr

    items = split_items(load_boxes(scenes), 0.05, 0.4, 0)["test"]
    assert 0 < len(items) < 12
    pr = tmp_path / "pr.png"
    r = _cli("detector", "evaluate", str(det), "animeface", "--boxes", str(scenes), "--split", "test",
             "--test-fraction", "0.4", "--pr-curve", str(pr), "-q")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [evaluate_detector(d, items, progress=False) for d in (str(det), "animeface")]
    want = format_table(rows, len(items)).splitlines()
    assert lines[:2] == want[:2], "the test part's pictures and faces, then the header"
    # each detector's row as computed here, but for its speed (the last column)
    assert [ln.rsplit(None, 1)[0] for ln in lines[2:4]] == [ln.rsplit(None, 1)[0] for ln in want[2:4]]
    # the tiny detector's scores could not be calibrated (too few validation faces): the table says so
    assert [r.calibrated for r in rows] == [False, None]
    assert want[4].startswith(f"{det}: its scores are the network's raw heatmap peaks, not calibrated")
    assert "boxed faces in its validation part, 20 needed" in want[4], want[4]
    assert lines[4:] == [want[4], f"precision-recall curves in {pr}"] and is_animeid_png(pr)
    r = _cli("detector", "evaluate", str(det), "default", "--boxes", str(scenes), "--json", "-q")
    rows_json = json.loads(r.stdout)["detectors"]     # strict JSON: a size bin without faces is null, not NaN
    assert [d["calibrated"] for d in rows_json] == [False, True], r.stderr
    assert rows_json[0]["uncalibrated_reason"].endswith("20 needed to calibrate them") and not rows_json[1]["uncalibrated_reason"]
    r = _cli("detector", "evaluate", "animeface", "--boxes", str(scenes), "--split", "val", "--val-fraction", "0")
    assert (r.returncode, r.stderr.strip()) == (1, "animeid: the val part of the seeded split is empty")


def test_a_fitted_threshold_lies_between_the_faces_and_the_false_alarms(tmp_path):
    """Validation faces all scored far above every false alarm (a fine-tuning on easy pictures): the
    threshold is halfway between them, not on the lowest face's score (it came out at 0.99 and
    missed real faces scored a little lower)."""
    from animeid.detect.learned import platt
    from animeid.detect.training import fit_calibration

    face, alarm = np.array([[10, 10, 50, 50]], np.float32), np.array([[100, 10, 140, 50]], np.float32)
    items = [Annotated(tmp_path / f"p{i}.png", face, size=(200, 100)) for i in range(3)]
    dets = [(np.vstack([face, alarm]), np.array([f, fa])) for f, fa in ((0.9, 0.1), (0.85, 0.05), (0.8, 0.2))]
    fit = fit_calibration(dets, items)
    a, b = fit["calibration"]
    lowest_face, highest_alarm = float(platt(np.array([0.8]), a, b)[0]), float(platt(np.array([0.2]), a, b)[0])
    assert fit["calibrated"] and highest_alarm < fit["threshold"] < lowest_face
    assert lowest_face > 0.9 and 0.1 < fit["threshold"] < 0.9
