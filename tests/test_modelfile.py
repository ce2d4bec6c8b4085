"""The .animeid model file: round trips and every way a file can be wrong."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from animeid import _version
from animeid.errors import ModelFileError
from animeid.modelfile import FORMAT_VERSION, ModelBundle, read_model, save_model
from animeid.heads import LogisticHead, PixelForest, SoftmaxHead

LABELS = ["ahagon_umiko", "涼風青葉", "yagami_kou"]


def _features(seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(i * 2.0, 1.0, (15, 6)) for i in range(3)])
    y = np.repeat(LABELS, 15)
    return X, y


@pytest.fixture
def saved(tmp_path) -> tuple[Path, LogisticHead, np.ndarray]:
    X, y = _features()
    head = LogisticHead().fit(X, y)
    path = save_model(tmp_path / "m.animeid", head, method="inception_v3+logistic",
                      backbone={"name": "inception_v3", "version": "tf-1", "preprocess": {"size": 299, "mean": [0.5] * 3}},
                      backbone_onnx=b"\x08\x07fake-onnx-graph", features={"color_histogram": {"bins": [12, 4, 4]}},
                      training={"n_train": 45, "top1": 0.93}, thresholds={"unknown": 0.35},
                      extra_arrays={"centroids": np.ones((3, 6))})
    return path, head, X


def _rewrite(src: Path, dst: Path, change_meta=None, replace: dict[str, bytes] | None = None) -> Path:
    """Copy a model file, editing its JSON and/or replacing members."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    if change_meta:
        meta = json.loads(members["animeid-model.json"])
        change_meta(meta)
        members["animeid-model.json"] = json.dumps(meta).encode()
    members.update(replace or {})
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return dst


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------
def test_round_trip_everything(saved):
    path, head, X = saved
    b = read_model(path)
    assert isinstance(b, ModelBundle) and b.path == path
    assert b.labels == sorted(LABELS) == list(head.classes_)
    assert b.method == "inception_v3+logistic"
    assert b.backbone["name"] == "inception_v3" and b.backbone["preprocess"]["size"] == 299
    assert b.backbone["onnx"] == "backbone.onnx" and b.backbone_onnx == b"\x08\x07fake-onnx-graph"
    assert b.features == {"color_histogram": {"bins": [12, 4, 4]}}
    assert b.training["top1"] == 0.93 and b.thresholds == {"unknown": 0.35}
    assert np.array_equal(b.extra_arrays["centroids"], np.ones((3, 6)))
    assert b.animeid_version == _version.__version__ and b.format_version == FORMAT_VERSION and b.created
    assert np.array_equal(b.predict_proba(X), head.predict_proba(X))
    with zipfile.ZipFile(path) as z:
        assert set(z.namelist()) == {"animeid-model.json", "arrays.npz", "backbone.onnx"}
        meta = json.loads(z.read("animeid-model.json"))
    assert meta["format"] == "animeid-model" and meta["head"]["type"] == "LogisticHead"
    assert meta["head"]["params"]["C"] == 1.0 and "涼風青葉" in meta["labels"]


def test_round_trip_forest_and_softmax(tmp_path):
    rng = np.random.default_rng(1)
    pics = rng.integers(0, 255, (30, 12, 12, 3), dtype=np.uint8)
    y = np.repeat(["a", "b", "c"], 10)
    pics[y == "a", :6] = (250, 0, 0)
    forest = PixelForest(size=12, n_estimators=15).fit(pics, y)
    b = read_model(save_model(tmp_path / "forest.animeid", forest, method="pixel_forest"))
    assert b.backbone is None and b.backbone_onnx is None
    assert np.array_equal(b.predict_proba(pics), forest.predict_proba(pics))
    assert b.head.get_params() == forest.get_params()

    X, yf = _features()
    soft = SoftmaxHead(steps=300, eval_every=50, label_smoothing=0.1).fit(X, yf)
    b = read_model(save_model(tmp_path / "soft.animeid", soft, method="softmax",
                              training={"history": soft.history_}))
    assert np.array_equal(b.predict_proba(X), soft.predict_proba(X))
    assert b.head.history_ == soft.history_ and b.training["history"]["step"][-1] == 300
    assert b.head.label_smoothing == 0.1


def test_save_is_atomic_and_validates(saved, tmp_path):
    path, head, X = saved
    before = path.read_bytes()
    with pytest.raises(ValueError, match="differ"):
        save_model(path, head, method="x", labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="object"):
        save_model(path, head, method="x", extra_arrays={"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="training summary"):
        save_model(path, head, method="x", training={"score": float("nan")})
    with pytest.raises(TypeError, match="cannot be saved"):
        save_model(path, object(), method="x")
    assert path.read_bytes() == before  # the old file survived every failed save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.animeid"]  # no temporary leftovers


# ----------------------------------------------------------------------------------------------
# errors: each names the file
# ----------------------------------------------------------------------------------------------
def _expect(path: Path, *fragments: str) -> ModelFileError:
    with pytest.raises(ModelFileError) as e:
        read_model(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return e.value


def test_missing_folder_empty(tmp_path):
    _expect(tmp_path / "nope.animeid", "no such model file")
    _expect(tmp_path, "folder")
    (tmp_path / "empty.animeid").write_bytes(b"")
    _expect(tmp_path / "empty.animeid", "empty file")


def test_random_bytes_and_foreign_zips(tmp_path):
    p = tmp_path / "noise.animeid"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    _expect(p, "not an animeid model", "not a ZIP")
    foreign = tmp_path / "photos.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("holiday.jpg", b"\xff\xd8\xff")
    _expect(foreign, "not an animeid model", "without animeid-model.json")
    other = tmp_path / "other.animeid"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("animeid-model.json", json.dumps({"format": "something-else", "format_version": 1}))
    _expect(other, "not an animeid model")
    garbled = tmp_path / "garbled.animeid"
    with zipfile.ZipFile(garbled, "w") as z:
        z.writestr("animeid-model.json", b"{not json")
    _expect(garbled, "not valid JSON")


def test_corrupt_members(saved, tmp_path):
    path, _, _ = saved
    # 1. flip bytes in the middle of the compressed arrays member: zip CRC / zlib fails
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("arrays.npz")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 20, start + 60):
        data[i] ^= 0x5A
    bad = tmp_path / "flipped.animeid"
    bad.write_bytes(bytes(data))
    _expect(bad, "damaged", "arrays.npz")
    # 2. a well-formed zip whose member no longer matches the recorded checksum
    with zipfile.ZipFile(path) as z:
        npz = z.read("arrays.npz")
    swapped = _rewrite(path, tmp_path / "swapped.animeid", replace={"arrays.npz": npz[:-10] + b"\0" * 10})
    _expect(swapped, "damaged", "checksum")
    # 3. arrays that hold a pickle are refused, never unpickled
    buf = io.BytesIO()
    np.savez(buf, **{"head.classes": np.array([object()], dtype=object)})
    pickled = _rewrite(path, tmp_path / "pickled.animeid", replace={"arrays.npz": buf.getvalue()},
                       change_meta=lambda m: m["members"].pop("arrays.npz"))
    _expect(pickled, "damaged", "arrays.npz")
    # 4. head arrays missing
    buf = io.BytesIO()
    np.savez(buf, other=np.zeros(3))
    hollow = _rewrite(path, tmp_path / "hollow.animeid", replace={"arrays.npz": buf.getvalue()},
                      change_meta=lambda m: m["members"].pop("arrays.npz"))
    _expect(hollow, "cannot rebuild the head")
    # 5. arrays member absent
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(tmp_path / "noarrays.animeid", "w") as out:
        out.writestr("animeid-model.json", z.read("animeid-model.json"))
    _expect(tmp_path / "noarrays.animeid", "arrays.npz is missing")
    # 6. truncated file
    trunc = tmp_path / "trunc.animeid"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect(trunc)


def test_newer_format_or_animeid(saved, tmp_path):
    path, _, _ = saved

    def newer_format(m):
        m["format_version"] = FORMAT_VERSION + 1

    def newer_major(m):
        m["animeid_version"] = "99.0.0"

    _expect(_rewrite(path, tmp_path / "f.animeid", newer_format), "newer", "upgrade")
    err = _expect(_rewrite(path, tmp_path / "v.animeid", newer_major),
                  "made by animeid 99.0.0", f"this is {_version.__version__}", "upgrade")
    assert err.path == str(tmp_path / "v.animeid")

    def newer_minor(m):  # same major: readable
        major = _version.__version__.split(".")[0]
        m["animeid_version"] = f"{major}.999.0"

    assert read_model(_rewrite(path, tmp_path / "ok.animeid", newer_minor)).labels == sorted(LABELS)


def test_labels_must_match_head(saved, tmp_path):
    path, _, _ = saved

    def relabel(m):
        m["labels"] = ["x", "y", "z"]

    _expect(_rewrite(path, tmp_path / "relabel.animeid", relabel), "labels do not match")


# ----------------------------------------------------------------------------------------------
# what a model file may hold, and the last ways it can be damaged
# ----------------------------------------------------------------------------------------------
def _identity_onnx(tmp_path: Path) -> Path:
    """A real ONNX graph: y = x, for a (1, 3) float input."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    p = tmp_path / "identity.onnx"
    onnx.save(model, p)
    return p


def test_backbone_graph_from_a_file_runs_and_a_model_without_one_says_so(tmp_path):
    X, y = _features()
    head = LogisticHead().fit(X, y)
    graph = _identity_onnx(tmp_path)
    path = save_model(tmp_path / "g.animeid", head, method="m", backbone={"name": "identity"}, backbone_onnx=graph)
    b = read_model(path)
    assert b.backbone_onnx == graph.read_bytes() and b.backbone == {"name": "identity", "onnx": "backbone.onnx"}
    x = np.array([[1.5, -2.0, 3.25]], np.float32)
    assert b.onnx_session().run(None, {"x": x})[0].tolist() == x.tolist(), "the bundled graph runs as saved"
    bare = read_model(save_model(tmp_path / "bare.animeid", head, method="m"))
    with pytest.raises(ModelFileError) as e:
        bare.onnx_session()
    assert str(e.value) == f"{tmp_path / 'bare.animeid'}: this model carries no backbone.onnx"


def test_json_parts_take_numpy_values_sets_paths_and_dataclasses(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class Backbone:
        name: str
        size: int

    X, y = _features()
    head = LogisticHead().fit(X, y)
    training = {"top1": np.float32(0.5), "n": np.int64(7), "curve": np.arange(3), "chars": frozenset({"a"}),
                "pair": (1, 2), "where": Path("runs") / "a"}
    path = save_model(tmp_path / "j.animeid", head, method="m", backbone=Backbone("tiny", 96), training=training)
    b = read_model(path)
    assert b.backbone == {"name": "tiny", "size": 96}, "a config dataclass is stored as its fields"
    assert b.training == {"top1": 0.5, "n": 7, "curve": [0, 1, 2], "chars": ["a"], "pair": [1, 2],
                          "where": str(Path("runs") / "a")}
    with pytest.raises(ValueError) as e:
        save_model(tmp_path / "big.animeid", head, method="m", training={"all": np.zeros(10_001)})
    assert str(e.value) == "training summary cannot be stored in a model file: ndarray is not JSON-serialisable", \
        "an array over 10,000 values belongs in extra_arrays, not the JSON"
    with pytest.raises(ValueError, match="^backbone must be a mapping with a 'name'$"):
        save_model(tmp_path / "nameless.animeid", head, method="m", backbone={"version": "1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.animeid"], "refused saves write nothing"


@pytest.mark.parametrize("fv", ["1", True, None, 1.0])
def test_a_format_version_that_is_not_a_whole_number_is_damage(saved, tmp_path, fv):
    path, _, _ = saved
    bad = _rewrite(path, tmp_path / "fv.animeid", lambda m: m.update(format_version=fv))
    err = _expect(bad, f"damaged model file: bad format_version {fv!r}")
    assert str(err) == f"{bad}: damaged model file: bad format_version {fv!r}"


def test_a_member_whose_compressed_stream_is_broken_is_damage(saved, tmp_path):
    """The description's deflate stream made invalid (block type 3): zlib's own error, named."""
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("animeid-model.json")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] = 0xFF                       # BFINAL 1, BTYPE 11: a block type that does not exist
    bad = tmp_path / "deflate.animeid"
    bad.write_bytes(bytes(data))
    err = _expect(bad)
    assert str(err) == (f"{bad}: damaged model file: cannot read animeid-model.json "
                        "(Error -3 while decompressing data: invalid block type)")


def test_a_member_that_claims_more_than_the_limit_is_refused_unread(saved, tmp_path, monkeypatch):
    """Members claiming over 4 GiB are refused before reading (a zip bomb); the limit lowered to 100
    bytes here stands for it: the description, read first, is refused by its claimed size."""
    from animeid import modelfile

    path, _, _ = saved
    with zipfile.ZipFile(path) as z:
        size = z.getinfo("animeid-model.json").file_size
    monkeypatch.setattr(modelfile, "_MAX_MEMBER", 100)
    err = _expect(path)
    assert str(err) == f"{path}: damaged model file: animeid-model.json claims {size:,} bytes"


def test_files_of_format_1_still_read_the_same(saved, tmp_path):
    """Format 2 (a fine-tuned graph may be stored as one view) reads format 1 files as before."""
    path, head, X = saved
    old = _rewrite(path, tmp_path / "v1.animeid", lambda m: m.update(format_version=1))
    a, b = read_model(path), read_model(old)
    assert (a.format_version, b.format_version) == (FORMAT_VERSION, 1) == (2, 1)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert (a.backbone_onnx, a.features, a.thresholds) == (b.backbone_onnx, b.features, b.thresholds)
