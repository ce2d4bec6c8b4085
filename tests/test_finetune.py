"""Fine-tuning: a tiny real run on newgame8 (skipped without ../shared/data), resuming, ONNX export."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from animeid.finetune import FinetuneConfig, finetune, onnx_predict

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("torch")
pytest.importorskip("albumentations")

# threads=1: tiny batches on a busy 2-core machine run ~5x slower with 2 torch threads
TINY = dict(backbone="efficientnet_lite0", input_size=96, trainable_blocks=1, epochs=2, batch_size=8,
            lr=1e-3, head_lr=1e-2, augment="light", tta_flip=True, seed=0, threads=1)


def _pick(root: Path, per_class: int, offset: int) -> tuple[list[Path], list[str]]:
    paths, labels = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(d.glob("*.jpg"))[offset:offset + per_class]
        paths += files
        labels += [d.name] * len(files)
    return paths, labels


@pytest.fixture(scope="module")
def tiny_data(newgame8):
    train = _pick(newgame8, 7, 0)
    val = _pick(newgame8, 3, 7)
    return train, val


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    (xtr, ytr), (xv, yv) = tiny_data
    ck = tmp_path_factory.mktemp("ft-full")
    return finetune(xtr, ytr, xv, yv, FinetuneConfig(**TINY), checkpoint_dir=ck, progress=False)


def test_import_does_not_import_torch():
    code = "import sys, animeid.finetune; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_config_validation():
    with pytest.raises(ValueError, match="augment"):
        FinetuneConfig(augment="hue")
    with pytest.raises(ValueError, match="input_size"):
        FinetuneConfig(backbone="efficientnet_lite0@128")
    with pytest.raises(ValueError):
        FinetuneConfig(epochs=0)


def test_tiny_finetune_learns(tiny_run, tiny_data):
    r = tiny_run
    assert r.labels == sorted(set(tiny_data[0][1])) and len(r.labels) == 8
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert {"epoch", "step", "train_acc", "val_acc", "train_loss", "val_loss"} <= set(r.history[0])
    assert r.preprocessing["input_size"] == 96 and r.backbone.input_size == 96
    (xv, yv) = tiny_data[1]
    p = r.predict_proba(xv)
    assert p.shape == (len(xv), 8)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    acc = float(np.mean(np.array(r.labels)[p.argmax(1)] == np.array(yv)))
    # chance is 1/8; 56 training pictures and 2 epochs reach ~0.45
    assert acc >= 0.3, (acc, r.history)
    assert r.val_acc == pytest.approx(acc, abs=1e-6)


def test_onnx_matches_torch(tiny_run, tiny_data):
    import onnxruntime as ort
    import torch

    from animeid.backbones import create_torch_model, preprocess

    r = tiny_run
    x = preprocess(tiny_data[1][0][:5], r.backbone)
    with torch.no_grad():
        tp, te, ti = (t.numpy() for t in r.model(torch.from_numpy(x)))
    for bs in (1, 5):  # dynamic batch axis
        op, oe = onnx_predict(r.onnx_bytes, x, r.backbone, batch_size=bs)
        np.testing.assert_allclose(op, tp, atol=1e-4)
        np.testing.assert_allclose(oe, te, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(oe, axis=1), 1.0, atol=1e-5)
    assert oe.shape == (5, 1280)
    sess = ort.InferenceSession(r.onnx_bytes, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["probs", "embedding", "identity"]
    oi = sess.run(["identity"], {"pixels": x})[0]
    np.testing.assert_allclose(oi, ti, atol=1e-4)
    # last block trained: frozen blocks 12 and 14 (192 each), ImageNet block 15 (320) and head (1280)
    assert oi.shape == (5, 1280 + 192 + 192 + 320 + 1280)
    from animeid.finetune import IDENTITY_FINETUNED_WEIGHT

    np.testing.assert_allclose(oi[:, :1280], IDENTITY_FINETUNED_WEIGHT * oe, atol=1e-5)
    # the last part is the untouched ImageNet network's pooled features (picture + mirror), not the fine-tuned
    ref = create_torch_model(r.backbone)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        f = (ref(xt) + ref(torch.flip(xt, dims=[3]))).numpy()
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(oi[:, -1280:], f, atol=1e-4)
    assert np.abs(oi[:, -1280:] - oe).max() > 1e-2


def test_resume_continues_and_matches(tiny_run, tiny_data, tmp_path, capsys):
    (xtr, ytr), (xv, yv) = tiny_data
    # a time budget of 1 s stops after the first epoch: an interrupted run
    first = finetune(xtr, ytr, xv, yv, FinetuneConfig(**{**TINY, "time_budget_s": 1.0}),
                     checkpoint_dir=tmp_path, progress=False)
    assert first.stopped_early and [h["epoch"] for h in first.history] == [1]
    assert (tmp_path / "finetune.pt").is_file()
    capsys.readouterr()
    second = finetune(xtr, ytr, xv, yv, FinetuneConfig(**TINY), checkpoint_dir=tmp_path, progress=True)
    assert not second.stopped_early
    assert [h["epoch"] for h in second.history] == [1, 2]  # epoch 1 not repeated
    # progress=True off a terminal: one line per epoch and one at the end on stderr, no bar (issue 13)
    err = capsys.readouterr().err
    assert "finetune: epoch 2/2, train top-1 " in err and ", val top-1 " in err and "epoch 1/2" not in err
    assert "finetune: kept epoch " in err and "\r" not in err
    assert second.history[0] == first.history[0]
    # same seeds per epoch, same thread count: the same numbers as the uninterrupted run
    for key in ("train_loss", "train_acc", "val_acc", "val_loss", "step"):
        assert [h[key] for h in second.history] == pytest.approx([h[key] for h in tiny_run.history], abs=1e-6), key
    np.testing.assert_allclose(second.predict_proba(xv), tiny_run.predict_proba(xv), atol=1e-5)
    assert second.seconds >= first.seconds
    # a third call finds training finished and only exports
    third = finetune(xtr, ytr, xv, yv, FinetuneConfig(**TINY), checkpoint_dir=tmp_path, progress=False)
    assert third.history == second.history
    # a checkpoint of another configuration is refused, not overwritten
    with pytest.raises(ValueError, match="another configuration"):
        finetune(xtr, ytr, xv, yv, FinetuneConfig(**{**TINY, "lr": 1e-4}), checkpoint_dir=tmp_path, progress=False)


def test_identity_taps_follow_the_frozen_part():
    from animeid.finetune import _identity_taps

    # EfficientNet-Lite0 (16 blocks), last 6 trained: frozen blocks 7 and 9; ImageNet copy: 10 and 14
    assert _identity_taps(16, 6) == ([7, 9], [10, 14])
    assert _identity_taps(16, 1) == ([12, 14], [15])
    # nothing frozen to share, or nothing trained: no identity output
    assert _identity_taps(16, 16) is None and _identity_taps(16, 0) is None and _identity_taps(16, -1) is None


def test_one_view_graph_gives_the_flip_averaged_outputs_exactly(tiny_run, tiny_data):
    """The exported graph averages each picture with its mirror image; split into one view
    (:func:`one_view_graph`), two runs (picture, mirror image) combine into exactly its outputs, and
    one run gives the picture's own (not the average). A graph without flip averaging is not split."""
    import onnxruntime as ort

    from animeid.backbones import preprocess
    from animeid.finetune import _export_onnx, _Exported
    from animeid.onnx_export import combine_views, one_view_graph

    r = tiny_run
    x = preprocess(tiny_data[1][0][:6], r.backbone)
    whole = ort.InferenceSession(r.onnx_bytes, providers=["CPUExecutionProvider"])
    full = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, {"pixels": x})))
    one, recipe = one_view_graph(r.onnx_bytes)
    assert recipe["outputs"] == ["probs", "embedding", "identity"] and len(recipe["sums"]) == 5   # embedding + 4 blocks
    sess = ort.InferenceSession(one, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    a = dict(zip(names, sess.run(None, {"pixels": x})))
    b = dict(zip(names, sess.run(None, {"pixels": np.ascontiguousarray(x[..., ::-1])})))
    both = combine_views(a, b, recipe)
    for k in ("probs", "embedding", "identity"):
        np.testing.assert_allclose(both[k], full[k], atol=1e-5)
    alone = combine_views(a, None, recipe)
    np.testing.assert_allclose((alone["probs"] + combine_views(b, None, recipe)["probs"]) / 2, full["probs"], atol=1e-6)
    assert np.abs(alone["probs"] - full["probs"]).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(alone["embedding"], axis=1), 1.0, atol=1e-5)
    plain = _export_onnx(_Exported.make(r.model.net, False), r.backbone.input_size)
    assert one_view_graph(plain) is None
    assert one_view_graph(b"not a graph") is None
