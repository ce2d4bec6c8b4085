"""`animeid demo` runs the whole pipeline on the generated sample and says where it wrote what."""
from __future__ import annotations

import json
import zipfile

from PIL import Image

from animeid.cli import main


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    text = capsys.readouterr().out
    assert "PROCEDURALLY GENERATED" in text and str(out) in text
    assert (out / "sample" / "README.txt").is_file()
    assert (out / "workspace" / "manifest.sqlite").is_file()
    assert (out / "dataset" / "split.csv").is_file()
    assert (out / "contact_sheet.png").is_file()
    with zipfile.ZipFile(out / "characters.animeid") as z:
        meta = json.loads(z.read("animeid-model.json"))
    assert len(meta["labels"]) == 4
    assert len(list((out / "predictions").glob("*.png"))) == 4
    # the suggested next command runs on a clean scene (no boxes drawn on it), the same size as its preview
    assert sorted(p.name for p in (out / "scenes").glob("*.png")) == [f"scene_{i}.png" for i in range(1, 5)]
    assert Image.open(out / "scenes" / "scene_1.png").size == Image.open(out / "predictions" / "scene_1.png").size
    # a second run replaces its own earlier output; a folder that is not a demo output is refused
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    # a file the user added to the earlier demo output is never deleted: the run is refused
    (out / "dataset" / "my_notes.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--quick"]) == 1
    assert (out / "dataset" / "my_notes.txt").read_text() == "mine"
    assert (out / "characters.animeid").is_file()
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(other), "--quick"]) == 1
    assert (other / "keep.txt").read_text() == "mine"
