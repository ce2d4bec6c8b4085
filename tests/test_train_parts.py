"""train's small parts, with exact answers: method names, option checks (before any work), the faces'
fingerprint, curves, the checkpoint folder's rules. No training, no shared data."""
from __future__ import annotations

import hashlib

import pytest

from animeid.errors import ConfigError, DatasetError, OutputError, UnknownNameError
from animeid.train import (_check_outputs, _curves, _remove_checkpoints, face_hash, list_methods, train,
                           training_fingerprint)


def test_methods_are_listed_in_the_clis_order_and_by_pattern():
    assert list_methods() == ["forest", "softmax", "logistic", "finetune", "auto"]
    assert list_methods("f*") == ["forest", "finetune"]


@pytest.mark.parametrize("method, options, error, message", [
    ("forest", {"steps": 5}, ConfigError,
     "steps: is not an option of method 'forest' (its options: size, tune, n_iter, cv, n_estimators, max_depth, "
     "min_samples_split, min_samples_leaf, max_features, seed)"),
    ("forest", {"n_estimators": 0}, ConfigError, "n_estimators: must be a positive whole number, got 0"),
    ("logistic", {"backbone": "resnet9"}, UnknownNameError,
     "backbone: unknown backbone 'resnet9'; known: inception_v3, efficientnet_lite0, efficientnet_lite2, "
     "efficientnet_lite0_stages"),
])
def test_bad_options_are_refused_before_the_dataset_is_read(tmp_path, method, options, error, message):
    with pytest.raises(error) as e:
        train(tmp_path / "no-such-dataset", tmp_path / "m.animeid", method=method, **options)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_unset_options_take_the_methods_defaults(tmp_path):
    """None means 'not given' (the CLI passes unset flags so): not refused, even where the method lacks it."""
    with pytest.raises(DatasetError, match="no such dataset folder"):   # the option check let steps=None by
        train(tmp_path / "no-such-dataset", tmp_path / "m.animeid", method="forest", steps=None)


def test_face_fingerprint_is_the_sha256_of_the_file_and_skips_unreadable_files(tmp_path):
    a, b, twin = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "twin.png"
    a.write_bytes(b"abc")
    b.write_bytes(b"another face")
    twin.write_bytes(b"abc")
    assert face_hash(a) == "ba7816bf8f01cfea", "the first 16 hex digits of SHA-256('abc')"
    assert face_hash(tmp_path / "gone.png") == "", "a file that cannot be read has no hash"
    fp = training_fingerprint([b, a, twin, tmp_path / "gone.png"], [b])
    assert fp == {"hash": "sha256-16",
                  "train": sorted({"ba7816bf8f01cfea", hashlib.sha256(b"another face").hexdigest()[:16]}),
                  "val": [hashlib.sha256(b"another face").hexdigest()[:16]]}, \
        "sorted, each file's bytes once, the unreadable left out, no names or paths"


def test_curves_from_a_history_dict_or_rows_drop_missing_values():
    assert _curves({"step": [1, 2], "val_accuracy": [0.5, 0.75]}) == {"step": [1.0, 2.0], "val_accuracy": [0.5, 0.75]}
    rows = [{"step": 1, "train_accuracy": 0.25, "val_accuracy": None}, {"step": 2, "train_accuracy": 0.5,
                                                                        "val_accuracy": 0.75}]
    assert _curves(rows) == {"step": [1.0, 2.0], "train_accuracy": [0.25, 0.5], "val_accuracy": [0.75]}
    assert _curves(None) == {} and _curves([]) == {}


def test_checkpoint_folder_may_hold_only_what_training_writes(tmp_path):
    out = tmp_path / "m.animeid"
    ck = tmp_path / "m.animeid.checkpoints"
    ck.mkdir()
    (ck / "finetune.pt").write_bytes(b"state")
    (ck / "finetune.pt.tmp").write_bytes(b"half")          # an interrupted checkpoint write
    _check_outputs(out, overwrite=False, checkpoints=ck)     # training's own files: accepted
    for name in ("notes.txt", "b.txt", "a.txt", "c.txt"):
        (ck / name).write_text("mine")
    with pytest.raises(OutputError) as e:
        _check_outputs(out, overwrite=False, checkpoints=ck)
    assert str(e.value).startswith(f"{ck}: holds a.txt, b.txt, c.txt, which animeid did not write: "), \
        "the first three foreign files, sorted"
    as_file = tmp_path / "f.animeid.checkpoints"
    as_file.write_text("a file, not a folder")
    with pytest.raises(OutputError, match=r"holds f\.animeid\.checkpoints, which animeid did not write"):
        _check_outputs(tmp_path / "f.animeid", overwrite=False, checkpoints=as_file)


def test_removing_checkpoints_removes_only_trainings_files(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "finetune.pt").write_bytes(b"state")
    _remove_checkpoints(own)
    assert not own.exists(), "emptied: the folder goes too"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "finetune.pt").write_bytes(b"state")
    (shared / "notes.txt").write_text("mine")
    _remove_checkpoints(shared)
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"]
    _remove_checkpoints(tmp_path / "never-made")             # nothing there: nothing to do, no error
