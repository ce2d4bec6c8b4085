"""Shared fixtures. Real data lives in ../shared/data (never in the repo); tests that need it skip.

Tests whose behaviour does not depend on real faces use drawn ones instead (:func:`generated_model`),
so that they run on a fresh clone too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data"))
# exported ONNX backbones and cached features: one folder for the whole test run (ignored by git)
os.environ.setdefault("ANIMEID_CACHE", str(ROOT / ".cache" / "animeid-tests"))


def _shared(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real data folder {p} is absent (it sits beside the repo on the developers' machines)")
    return p


@pytest.fixture(scope="session")
def detect_tadne() -> Path:
    """36 512x512 illustrations with reference face boxes in boxes.json."""
    return _shared("detect-tadne")


@pytest.fixture(scope="session")
def newgame8() -> Path:
    """272 real 96x96 face crops of 8 characters, one folder each."""
    return _shared("newgame8-faces96")


@pytest.fixture(scope="session")
def holoen16() -> Path:
    """4,931 real 128x128 face crops of 16 characters, one folder each."""
    return _shared("holoen16-dev")


# ---- data the project makes itself: drawn faces (animeid.sample), for every test whose behaviour
# does not depend on real faces (the web app, the label flow, timelines, ...). No ../shared/data.

#: the characters of :func:`generated_model` (the 8 built-in drawn ones), and two made-up ones it never saw
GENERATED_CHARS = ("akari", "sora", "kin", "kuro", "hinata", "yuki", "midori", "ren")
GENERATED_STRANGERS = ("extra01", "extra02")
GENERATED_TRAIN = 10        # faces per character in the model's training set; 6 more per character are held out


@dataclass(frozen=True)
class GeneratedModel:
    """A logistic model on drawn faces. ``faces``: ``<character>/<character>_NN.jpg``, 16 96x96 face
    crops per character (cut the way ``animeid detect`` cuts, margin 0.2, and found by AnimeFace),
    for the model's 8 characters and 2 strangers; ``path``: the model file, trained on the first
    :data:`GENERATED_TRAIN` faces of each of :data:`GENERATED_CHARS`."""

    path: Path
    faces: Path
    chars: tuple[str, ...] = GENERATED_CHARS
    strangers: tuple[str, ...] = GENERATED_STRANGERS

    def held_out(self, name: str) -> list[Path]:
        """Faces of ``name`` the model was not trained on."""
        return sorted((self.faces / name).iterdir())[GENERATED_TRAIN:]


@pytest.fixture(scope="session")
def generated_faces(tmp_path_factory) -> Path:
    """16 drawn 96x96 face crops (JPEG) of each of 10 characters; see :class:`GeneratedModel` (~10 s)."""
    import numpy as np

    from animeid.detect import crop_face
    from animeid.sample import make_characters, render_face_with_box

    root = tmp_path_factory.mktemp("generated-faces")
    specs = make_characters(len(GENERATED_CHARS) + len(GENERATED_STRANGERS), seed=0)
    assert tuple(s.name for s in specs) == GENERATED_CHARS + GENERATED_STRANGERS, [s.name for s in specs]
    rng = np.random.default_rng(5)
    for spec in specs:
        (root / spec.name).mkdir()
        for k in range(16):
            img, box = render_face_with_box(spec, rng, 256)
            crop_face(img, box, margin=0.2, size=96).save(root / spec.name / f"{spec.name}_{k:02d}.jpg", quality=95)
    return root


@pytest.fixture(scope="session")
def generated_model(generated_faces, tmp_path_factory) -> GeneratedModel:
    """A logistic model on :data:`GENERATED_TRAIN` drawn faces of each of the 8 characters (~10 s)."""
    import shutil

    from animeid.train import train

    root = tmp_path_factory.mktemp("generated-model")
    for name in GENERATED_CHARS:
        (root / "data" / name).mkdir(parents=True)
        for f in sorted((generated_faces / name).iterdir())[:GENERATED_TRAIN]:
            shutil.copy(f, root / "data" / name / f.name)
    path = train(root / "data", root / "generated.animeid", method="logistic", progress=False).model_path
    return GeneratedModel(path=path, faces=generated_faces)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """12 drawn scenes (192x128) of 1 or 2 faces with their boxes in ``boxes.json``: data for tiny detectors."""
    from animeid.detect.annotations import Annotated, save_boxes_json
    from animeid.sample import make_characters, render_scene

    out = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(5)
    specs = make_characters(3, seed=0)
    items = []
    for i in range(12):
        img, faces = render_scene(specs, rng, (192, 128), n_faces=1 + i % 2)
        p = out / f"s{i:02d}.png"
        img.save(p)
        items.append(Annotated(p, np.asarray([b for _, b in faces], np.float32).reshape(-1, 4)))
    save_boxes_json(out / "boxes.json", items)
    return out
