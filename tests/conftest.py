"""Shared fixtures. Real data lives in ../shared/data (never in the repo); tests that need it skip."""
from __future__ import annotations

import os
from pathlib import Path

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
