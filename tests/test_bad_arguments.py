"""Wrong arguments never give a traceback (issue 13 §2, issue 16 §3-§4).

Every command with a value its option cannot take ends with one ``animeid...: error:`` line naming the
flag and a non-zero exit, before any file is read or written; the config dataclasses refuse bad
fields themselves (:class:`animeid.errors.ConfigError`, from the rules in :mod:`animeid.options`),
and the web API answers the same values with 422. Fast: no model is trained, nothing is detected.
"""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from animeid.cli import main
from animeid.errors import AnimeidError, CannotEnrollError, ConfigError, ModelFileError, UnknownNameError

# (arguments, the flag the message must name); PIC is a picture, MODEL a model file that need not exist:
# the options are checked while the flags are read, before anything is opened.
CASES = [
    ("detect PIC --margin -1", "--margin"),
    ("detect PIC --size 0", "--size"),
    ("detect PIC --size abc", "--size"),
    ("detect PIC --detector yolo", "--detector"),
    ("detect PIC --threshold 5", "--threshold"),
    ("frames VID --every 0 --out OUT", "--every"),
    ("frames VID --every -5 --out OUT", "--every"),
    ("frames VID --every nan --out OUT", "--every"),
    ("frames VID --skip-similar -1 --out OUT", "--skip-similar"),
    ("collect PIC --every -1 -w WS", "--every"),
    ("collect PIC --dedupe 65 -w WS", "--dedupe"),
    ("collect PIC --crop-size 0 -w WS", "--crop-size"),
    ("collect PIC --workers 0 -w WS", "--workers"),
    ("collect PIC --margin inf -w WS", "--margin"),
    ("import PIC -c aoba --threshold -0.1 -w WS", "--threshold"),
    ("dataset export WS --crop-size 0 --out OUT", "--crop-size"),
    ("dataset export WS --size 0 --out OUT", "--crop-size"),
    ("dataset export WS --val 1 --out OUT", "--val"),
    ("dataset export WS --val 0.6 --test 0.5 --out OUT", "--test"),
    ("cluster WS --threshold -1", "--threshold"),
    ("cluster WS --min-size 0", "--min-size"),
    ("suggest WS --model MODEL --min-p -1", "--min-p"),
    ("suggest WS --model MODEL --min-p 1.5", "--min-p"),
    ("train DATA --method forest --epochs 3 --out MODEL", "--epochs"),
    ("train DATA --method logistic --backbone bogus --out MODEL", "--backbone"),
    ("train DATA --steps 0 --method softmax --out MODEL", "--steps"),
    ("train DATA --method finetune --learning-rate -1 --out MODEL", "--learning-rate"),
    ("train DATA --method finetune --time-budget 0 --out MODEL", "--time-budget"),
    ("compare DATA --augment -1 --out OUT", "--augment"),
    ("predict MODEL PIC --top 0", "--top"),
    ("predict MODEL PIC --top -2", "--top"),
    ("predict MODEL PIC --threshold 5", "--threshold"),
    ("predict MODEL PIC --detect bogus", "--detect"),
    ("predict MODEL PIC --unknown-threshold -0.5", "--unknown-threshold"),
    ("predict MODEL PIC --unknown-threshold 5", "did you mean 5%, that is 0.05?"),
    ("evaluate MODEL DATA --reliability r.txt", "--reliability a file name ending in .png"),
    ("evaluate MODEL DATA --confusion c.jpg", "--confusion a file name ending in .png"),
    ("timeline MODEL VID --png t.svg", "--png a file name ending in .png"),
    ("enroll MODEL aoba PIC --threshold 2", "--threshold"),
    ("timeline MODEL VID --every 0", "--every"),
    ("serve MODEL --port 70000", "--port"),
    ("serve MODEL --max-upload-mb 0", "--max-upload-mb"),
    ("serve MODEL --detector yolo", "--detector"),
    ("detector evaluate default --boxes DATA --iou 0", "--iou"),
    ("detector train DATA --out OUT.onnx --epochs 0", "epochs"),
]


@pytest.fixture()
def places(tmp_path):
    pic = tmp_path / "pic.png"
    Image.new("RGB", (64, 64), "white").save(pic)
    (tmp_path / "data").mkdir()
    return {"PIC": str(pic), "VID": str(tmp_path / "ep.mkv"), "OUT": str(tmp_path / "out"),
            "WS": str(tmp_path / "ws"), "MODEL": str(tmp_path / "m.animeid"), "DATA": str(tmp_path / "data")}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:              # argparse: a flag whose word its rule refuses
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("line,flag", CASES, ids=[c[0] for c in CASES])
def test_bad_values_give_one_error_line_naming_the_option(line, flag, places, tmp_path, capsys):
    argv = [places.get(w, w) for w in line.split()]
    argv = [w.replace("OUT.onnx", str(tmp_path / "d.onnx")) for w in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(argv, capsys)
    assert code not in (0, None), (line, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("animeid") and ": error: " in last and flag in last, (line, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing is written for a bad option"


def test_errors_are_domain_errors():
    for cls in (ConfigError, UnknownNameError):
        assert issubclass(cls, AnimeidError) and issubclass(cls, ValueError)
    assert issubclass(CannotEnrollError, ModelFileError)
    e = ConfigError("top", "must be a whole number from 1 to 50, got 0")
    assert str(e) == "top: must be a whole number from 1 to 50, got 0" and e.option == "top"
    assert str(UnknownNameError("unknown face detector 'x'")) == "unknown face detector 'x'"


# --------------------------------------------------------------------------- configs check themselves

def _bad(make, option: str) -> None:
    with pytest.raises(ConfigError) as ei:
        make()
    assert ei.value.option == option and str(ei.value).startswith(f"{option}: "), str(ei.value)


def test_predict_config_refuses_bad_fields():
    from animeid.predict import PredictConfig

    for kw, option in ((dict(top=0), "top"), (dict(top=-2), "top"), (dict(top=51), "top"), (dict(top=2.5), "top"),
                       (dict(top=True), "top"), (dict(threshold=5), "threshold"), (dict(threshold=-0.1), "threshold"),
                       (dict(detect="bogus"), "detect"), (dict(fill_ratio=0), "fill_ratio"),
                       (dict(batch_size=0), "batch_size"), (dict(unknown_threshold=float("nan")), "unknown_threshold"),
                       (dict(detector="yolo"), "detector")):
        _bad(lambda: PredictConfig(**kw), option)
    with pytest.raises(UnknownNameError):
        PredictConfig(detector="yolo")
    cfg = PredictConfig(top=5.0, threshold=0.5, detect="never", detector="animeface")
    assert cfg.top == 5 and isinstance(cfg.top, int)
    assert PredictConfig(detector="my/detector.onnx").detector == "my/detector.onnx"   # a file: opened when used


def test_collect_config_feature_spec_finetune_config_refuse_bad_fields():
    from animeid.dataset import CollectConfig
    from animeid.features import FeatureSpec
    from animeid.finetune import FinetuneConfig

    for kw, option in ((dict(every=0), "every"), (dict(every=float("inf")), "every"), (dict(margin=-1), "margin"),
                       (dict(crop_size=0), "crop_size"), (dict(dedupe_distance=65), "dedupe_distance"),
                       (dict(skip_similar_frames=-1), "skip_similar_frames"), (dict(workers=0), "workers"),
                       (dict(threshold=5), "threshold"), (dict(detector=""), "detector")):
        _bad(lambda: CollectConfig(**kw), option)
    assert CollectConfig(skip_similar_frames=None, workers=None, threshold=None).every == 5.0
    for kw, option in ((dict(kind="nope"), "kind"), (dict(kind="pixels", size=0), "size"),
                       (dict(color_weight=-1), "color_weight")):
        _bad(lambda: FeatureSpec(**kw), option)
    assert FeatureSpec(kind="network", backbone="efficientnet_lite0@128", output="probs").output == "probs"
    for kw, option in ((dict(augment="nope"), "augment"), (dict(epochs=0), "epochs"), (dict(lr=0), "lr"),
                       (dict(label_smoothing=1), "label_smoothing"), (dict(trainable_blocks=-2), "trainable_blocks"),
                       (dict(backbone="efficientnet_lite0@160"), "backbone")):
        _bad(lambda: FinetuneConfig(**kw), option)
    assert FinetuneConfig(threads=0, time_budget_s=None).epochs == 6


def test_library_functions_check_their_options_before_any_work(tmp_path):
    from animeid.cluster import cluster_workspace, suggest
    from animeid.dataset import export
    from animeid.timeline import build_timeline
    from animeid.train import train
    from animeid.video import sample_frames, write_frames

    _bad(lambda: write_frames([tmp_path / "ep.mkv"], 0, tmp_path / "frames"), "every")
    _bad(lambda: next(sample_frames(tmp_path / "ep.mkv", -1)), "every")
    _bad(lambda: export(tmp_path / "ws", tmp_path / "out", size=0), "size")
    _bad(lambda: export(tmp_path / "ws", tmp_path / "out", val=0.5, test=0.5), "test")
    _bad(lambda: cluster_workspace(tmp_path / "ws", threshold=-1), "threshold")
    _bad(lambda: cluster_workspace(tmp_path / "ws", linkage="ward"), "linkage")
    _bad(lambda: suggest(tmp_path / "ws", "m.animeid", min_p=-1), "min_p")
    _bad(lambda: build_timeline("m.animeid", tmp_path / "ep.mkv", every=0), "every")
    _bad(lambda: train(tmp_path, tmp_path / "m.animeid", method="forest", epochs=3), "epochs")
    _bad(lambda: train(tmp_path, tmp_path / "m.animeid", method="nope"), "method")
    with pytest.raises(UnknownNameError):
        train(tmp_path, tmp_path / "m.animeid", method="logistic", backbone="bogus")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unknown_registry_names_are_unknown_name_errors():
    from animeid.backbones import get_config
    from animeid.detect import get_detector

    with pytest.raises(UnknownNameError, match="unknown backbone 'nope'"):
        get_config("nope")
    with pytest.raises(UnknownNameError, match="unknown face detector 'yolo'"):
        get_detector("yolo")


def test_collect_from_python_makes_no_workspace_without_inputs(tmp_path):
    from animeid.dataset import collect, import_illustrations

    (tmp_path / "empty").mkdir()
    s = collect([tmp_path / "nope.mkv", tmp_path / "empty"], tmp_path / "ws")
    assert s.nothing_to_read and len(s.failed) == 2 and not (tmp_path / "ws").exists()
    s = import_illustrations([tmp_path / "nope.png"], tmp_path / "ws", "aoba")
    assert s.nothing_to_read and not (tmp_path / "ws").exists()


# --------------------------------------------------------------------------- the web API: 422 and 501

def _client(tmp_path, **kw):
    pytest.importorskip("fastapi")
    try:
        import httpx2  # noqa: F401
    except ImportError:
        pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from animeid.serve import create_app

    model = tmp_path / "m.animeid"        # never loaded: the requests below are refused first
    model.write_bytes(b"not read")
    app = create_app(model, **kw)
    return app, TestClient(app)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_api_answers_422_for_the_values_the_cli_refuses(tmp_path):
    from animeid.predict import PredictConfig

    app, client = _client(tmp_path)

    @app.get("/test-config")             # a ConfigError raised anywhere in a request: 422, the rule's message
    def _boom(top: int = 0):
        PredictConfig(top=top)

    with client as c:
        files = [("image", ("a.png", _png(), "image/png"))]
        for query in ("top=0", "top=-2", "threshold=5", "threshold=-0.5", "detect=bogus"):
            r = c.post(f"/api/v1/recognize?{query}", files=files)
            assert r.status_code == 422, (query, r.text)
            assert query.split("=")[0] in r.json()["detail"]
        r = c.post("/api/v1/timeline", data={"every": "0"}, files=[("video", ("v.mkv", b"x", "video/x-matroska"))])
        assert r.status_code == 422 and "every" in r.json()["detail"]
        r = c.get("/test-config?top=0")
        assert r.status_code == 422 and r.json()["detail"] == "top: must be a whole number from 1 to 50, got 0"


def test_create_app_checks_its_options(tmp_path):
    pytest.importorskip("fastapi")
    from animeid.serve import create_app

    with pytest.raises(ConfigError, match="max_upload_mb"):
        create_app(tmp_path / "m.animeid", max_upload_mb=0)
    with pytest.raises(UnknownNameError):
        create_app(tmp_path / "m.animeid", detector="yolo")


def test_a_model_that_cannot_enrol_answers_501_and_names_are_checked_by_the_one_rule(tmp_path):
    from animeid.predict import Recognizer

    app, client = _client(tmp_path)
    rec = Recognizer.__new__(Recognizer)     # a model without an open-set layer (an older animeid's)
    rec.openset, rec.bundle, rec.labels = None, SimpleNamespace(path=None), ["aoba", "hifumi"]
    app.state.animeid._rec = rec
    with client as c:
        files = [("image", ("a.png", _png(), "image/png"))]
        r = c.post("/api/v1/enroll", data={"name": "momiji"}, files=files)
        assert r.status_code == 501 and "cannot enrol" in r.json()["detail"], r.text
        r = c.post("/api/v1/forget", data={"name": "aoba"})
        assert r.status_code == 501 and "forget" in r.json()["detail"], r.text
        for bad in ("../x", ".hidden", "a\x00b", "unknown", "unlabeled", "x" * 201):
            r = c.post("/api/v1/enroll", data={"name": bad}, files=files)
            assert r.status_code == 400, (bad, r.text)
