"""Int8 detectors (``animeid detector quantize``, :mod:`animeid.detect.quantize`) and the shipped int8 default.

A tiny detector is trained on drawn scenes for two steps and quantized; the shipped files are only read.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from animeid.detect.annotations import load_boxes
from animeid.errors import InputError, ModelFileError

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny(scenes, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from animeid.detect.training import DetectorTrainConfig, train_detector

    out = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    cfg = DetectorTrainConfig(size=128, input_size=128, batch_size=4, epochs=1, threads=1, max_steps=2,
                              warmup_steps=1, val_fraction=0.25, test_fraction=0.0)
    train_detector(load_boxes(scenes), out, cfg, progress=False, log=lambda s: None)
    return out


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_copy_computes_nearly_what_the_float_file_does(scenes, tiny, tmp_path):
    from animeid.detect.learned import LearnedDetector
    from animeid.detect.quantize import quantize_detector

    items = load_boxes(scenes)
    out = tmp_path / "tiny-int8.onnx"
    meta = quantize_detector(tiny, out, items[:8], held_out=items[8:], pictures=8)
    assert meta["quantized"] == "int8" and meta["quantized_from"] == "tiny.onnx"
    assert meta["input_size"] == 128 and "threshold" in meta and "calibration" in meta
    assert "QLinearConv" in _op_types(out) and "QLinearConv" not in _op_types(tiny)
    assert out.stat().st_size < tiny.stat().st_size / 2.5, "8-bit weights: about a quarter of the file"
    f, q = LearnedDetector(tiny, threads=1), LearnedDetector(out, threads=1)
    assert q.quantized_from == "tiny.onnx" and f.quantized_from is None
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 128, 160)).astype(np.float32)
    (_, lf), (_, lq) = f.run(x), q.run(x)
    assert lq.shape == lf.shape
    # the box sides agree closely (an untrained head's outputs vary little, so compare to their spread)
    assert np.abs(lq - lf).mean() < 0.2 * lf.std() + 1e-3
    # the same calibration data gives the same file (seeded choice, deterministic ranges)
    again = tmp_path / "again.onnx"
    quantize_detector(tiny, again, items[:8], held_out=items[8:], pictures=8)
    assert again.read_bytes() == out.read_bytes()


def test_bad_quantize_requests_are_refused_before_writing(scenes, tiny, tmp_path):
    from animeid.detect.quantize import quantize_detector
    from animeid.detect.training import load_onnx_weights

    items = load_boxes(scenes)
    with pytest.raises(InputError, match="no calibration pictures"):
        quantize_detector(tiny, tmp_path / "a.onnx", [])
    with pytest.raises(InputError, match="would replace the detector itself"):
        quantize_detector(tiny, tiny, items)
    assert not (tmp_path / "a.onnx").exists()
    q = tmp_path / "q.onnx"
    quantize_detector(tiny, q, items, pictures=2)
    with pytest.raises(ModelFileError, match="quantized already"):
        quantize_detector(q, tmp_path / "qq.onnx", items)
    torch = pytest.importorskip("torch")
    from animeid.detect.training import DetectorTrainConfig, FaceNet

    net = FaceNet(DetectorTrainConfig(size=128, input_size=128), pretrained=False)
    with pytest.raises(ModelFileError, match=r"int8 copy .* cannot be trained further.*tiny\.onnx"):
        load_onnx_weights(net, q)
    assert torch is not None


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "animeid", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_cli_detector_quantize(scenes, tiny, tmp_path):
    out = tmp_path / "q.onnx"
    here = tmp_path / "cwd"
    here.mkdir()
    r = _cli("detector", "quantize", str(tiny), "--boxes", str(scenes), "--out", str(out), "--pictures", "4", cwd=here)
    assert r.returncode == 0, r.stderr
    assert not list(here.iterdir()), "no temporary files left where the command ran"
    assert r.stdout.startswith(f"int8 detector written to {out} (") and "threshold" in r.stdout
    assert "calibrating on 4 of " in r.stderr and "Traceback" not in r.stderr
    assert "bias" not in r.stderr, "the quantizer's own warnings are not shown"
    r = _cli("detector", "evaluate", str(out), "--boxes", str(scenes), "--json", "-q")
    assert r.returncode == 0, r.stderr
    notes = tmp_path / "notes.onnx"
    notes.write_text("mine")
    for args, why in (([str(tiny), "--out", str(notes)], "not a detector file"),
                      ([str(tiny), "--out", str(out)], "--overwrite"),
                      ([str(tiny), "--out", str(tmp_path / "b.onnx"), "--pictures", "0"], "--pictures"),
                      ([str(out), "--out", str(tmp_path / "c.onnx")], "quantized already")):
        r = _cli("detector", "quantize", *args, "--boxes", str(scenes))
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert notes.read_text() == "mine"
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "c.onnx").exists()
    r = _cli("detector", "quantize", str(tmp_path / "missing.onnx"), "--boxes", str(scenes), "--out",
             str(tmp_path / "d.onnx"))
    assert r.returncode == 1 and "missing.onnx: no such file" in r.stderr, r.stderr
    assert "calibrating" not in r.stderr, "nothing is said to start before the detector file is checked"
    r = _cli("detector", "quantize", str(tiny), "--boxes", str(scenes), "--out", str(tmp_path / "e.onnx"),
             "--pictures", "0")
    assert "error: --pictures: must be at least 1" in r.stderr, r.stderr
    r = _cli("detector", "quantize", str(tiny), "--boxes", str(scenes), "--out", str(tmp_path / "f.onnx"),
             "--val-fraction", "0", "--pictures", "2")
    # tiny.onnx was trained with under 20 validation faces: its scores are raw, and stay so
    assert r.returncode == 0 and "the scores stay uncalibrated, as tiny.onnx: 0 boxed faces" in r.stderr, r.stderr
    r = _cli("detector", "quantize", str(tiny), "--boxes", str(scenes), "--out", str(tmp_path / "g.onnx"),
             "--val-fraction", "0.3", "--pictures", "2")
    # a few validation pictures (under 20 faces): a threshold fitted on them came out at 0.99-1.00
    assert r.returncode == 0 and "the scores stay uncalibrated, as tiny.onnx" in r.stderr, r.stderr
    from animeid.detect.learned import LearnedDetector

    kept, src = LearnedDetector(tmp_path / "g.onnx"), LearnedDetector(tiny)
    assert kept.meta["recalibrated"] is False and kept.default_threshold == src.default_threshold


def test_when_nothing_can_be_fitted_the_calibration_is_kept(scenes, tiny, tmp_path):
    """Enough boxed faces, but every detection on them a false alarm (the boxes moved to a corner):
    `recalibrate` refuses and leaves the file as it was; `quantize` keeps the source's calibration
    and says so in the metadata (it used to write the identity and call it a refit)."""
    import dataclasses

    from animeid.detect.learned import read_metadata
    from animeid.detect.quantize import quantize_detector
    from animeid.detect.training import MIN_CALIBRATION_FACES, recalibrate, set_metadata
    from animeid.errors import InputError

    src = tmp_path / "calibrated.onnx"
    src.write_bytes(tiny.read_bytes())
    set_metadata(src, {"calibration": [2.0, 0.5], "threshold": 0.45, "calibrated": True})
    corner = np.array([[0, 0, 4, 4], [4, 0, 8, 4]], np.float32)
    nowhere = [dataclasses.replace(a, boxes=corner) for a in load_boxes(scenes)]
    assert sum(len(a.boxes) for a in nowhere) >= MIN_CALIBRATION_FACES
    before = src.read_bytes()
    with pytest.raises(InputError, match="all faces or all false alarms"):
        recalibrate(src, nowhere)
    assert src.read_bytes() == before
    meta = quantize_detector(src, tmp_path / "q.onnx", load_boxes(scenes), held_out=nowhere, pictures=2)
    assert meta["recalibrated"] is False and meta["calibration"] == [2.0, 0.5] and meta["threshold"] == 0.45


def test_detector_train_from_an_int8_or_missing_file_is_refused_before_writing(scenes, tiny, tmp_path):
    from animeid.detect.quantize import quantize_detector

    q = tmp_path / "q.onnx"
    quantize_detector(tiny, q, load_boxes(scenes), pictures=2)
    tiny_args = ["--epochs", "1", "--size", "128", "--input-size", "128", "--threads", "1", "-q"]
    junk = tmp_path / "junk.txt"
    junk.write_text("not a checkpoint")
    model_zip = tmp_path / "model.animeid"          # a zip archive, but not one torch.save wrote
    with zipfile.ZipFile(model_zip, "w") as z:
        z.writestr("animeid-model.json", "{}")
    for init, why in ((q, "cannot be trained further"), (tmp_path / "nope.onnx", "no such file"),
                      (junk, "nor a detector training checkpoint"), (model_zip, "nor a detector training checkpoint")):
        out = tmp_path / f"ft-{init.stem}.onnx"
        r = _cli("detector", "train", str(scenes), "--out", str(out), "--from", str(init), *tiny_args)
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not out.exists() and not out.with_name(out.name + ".work").exists()


def test_fine_tuning_the_default_keeps_its_input_size_and_box_geometry(scenes, tmp_path):
    """`detector train --from default` without --input-size reads pictures at the size the shipped
    detector was trained for (it made 512 px detectors from the 640 px one) and keeps its crop_scale."""
    from animeid.detect.learned import FLOAT_DETECTOR_FILE, read_metadata

    out = tmp_path / "ft.onnx"
    r = _cli("detector", "train", str(scenes), "--out", str(out), "--from", "default", "--max-steps", "1",
             "--size", "128", "--batch-size", "2", "--threads", "1", "-q")
    assert r.returncode == 0, r.stderr
    shipped, tuned = read_metadata(FLOAT_DETECTOR_FILE), read_metadata(out)
    assert tuned["input_size"] == shipped["input_size"] == 640
    assert tuned["crop_scale"] == shipped["crop_scale"]
    # and it fine-tunes gently (FINETUNE_RECIPE: 10 epochs at lr 0.002 with 5 blocks frozen wrecked it)
    assert (tuned["config"]["lr"], tuned["config"]["frozen_blocks"]) == (0.0005, 2)
    # from that training's checkpoint: its input size too; an explicit rate is kept as given
    again = tmp_path / "again.onnx"
    r = _cli("detector", "train", str(scenes), "--out", str(again), "--from", str(out) + ".work/checkpoint.pt",
             "--max-steps", "1", "--size", "128", "--batch-size", "2", "--threads", "1", "-q", "--lr", "0.001")
    assert r.returncode == 0, r.stderr
    meta = read_metadata(again)
    assert meta["input_size"] == 640 and (meta["config"]["lr"], meta["config"]["frozen_blocks"]) == (0.001, 2)


def test_shipped_default_is_the_int8_copy_of_the_shipped_float_file():
    import onnx

    from animeid.detect import get_detector
    from animeid.detect.learned import DEFAULT_DETECTOR_FILE, FLOAT_DETECTOR_FILE, LearnedDetector

    det = get_detector("default")
    assert det.path == DEFAULT_DETECTOR_FILE and det.quantized_from == FLOAT_DETECTOR_FILE.name
    assert FLOAT_DETECTOR_FILE.is_file() and LearnedDetector(FLOAT_DETECTOR_FILE).quantized_from is None
    assert DEFAULT_DETECTOR_FILE.stat().st_size + FLOAT_DETECTOR_FILE.stat().st_size < 20e6
    assert 0.2 < det.default_threshold < 0.6 and det.meta["quantization"]["pictures"] == 160
    model = onnx.load(str(DEFAULT_DETECTOR_FILE))
    # only the operator sets its nodes use: ONNX Runtime 1.17 (allowed by pyproject) refuses ai.onnx.ml 5
    assert {o.domain for o in model.opset_import} == {"", "com.microsoft"}
    # the heads' ends stay float32: scores and box sides are continuous, not in 8-bit steps
    ends = {n.name: n.op_type for n in model.graph.node if n.output[0] in ("peaks", "ltrb")}
    assert set(ends.values()) == {"Mul"}, ends


def test_a_crop_fill_holds_for_the_int8_copy_and_its_float_source():
    from animeid.detect.base import crop_box, crop_box_for
    from animeid.detect.learned import DEFAULT_DETECTOR_FILE, FLOAT_DETECTOR_FILE

    box = (100.0, 100.0, 200.0, 200.0)
    # the shipped pair, and the v2 pair they replaced (models trained with v2 keep their measured fill:
    # v3's boxes of the same faces are the same size, BENCHMARKS.md)
    for measured_with in (FLOAT_DETECTOR_FILE.name, DEFAULT_DETECTOR_FILE.name,
                          "animeid-faces-v2.onnx", "animeid-faces-v2-int8.onnx"):
        fill = {"fill": 0.7, "detector": measured_with, "n": 100}
        for used in (None, FLOAT_DETECTOR_FILE):
            x0, y0, x1, y1 = crop_box_for(box, 0.2, fill, used)
            assert x1 - x0 == pytest.approx(100 / (0.7 * 1.4)), (measured_with, used)
    other = {"fill": 0.7, "detector": "someone-elses.onnx", "n": 100}
    assert crop_box_for(box, 0.2, other, None) == crop_box(box, None), "another detector's fill is not used"
