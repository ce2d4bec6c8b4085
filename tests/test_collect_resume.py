"""Resume after kill -9 of `animeid collect` over a folder of pictures, with one worker and with two.

README (Workspaces): every processed picture is committed with its faces at once, so a collect that is
killed continues where it stopped when run again. The child runs the real command line
(``animeid.cli.main``) and kills itself (SIGKILL, as ``kill -9``) right after its Nth committed
picture: the same point on every run, no timers. Drawn scenes only (no ../shared/data), AnimeFace.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.dataset import CollectConfig, collect
from manifest_rows import manifest as _manifest, rows

ROOT = Path(__file__).resolve().parent.parent
N_PICTURES = 8
KILL_AFTER = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _sources(ws: Path) -> list[tuple]:
    return rows(ws, "SELECT path, status FROM sources ORDER BY path")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """8 drawn scenes of 1 or 2 faces (PNG), and the workspace a whole one-worker collect makes of them."""
    from animeid.sample import make_characters, render_scene

    root = tmp_path_factory.mktemp("resume-pics")
    specs = make_characters(4, seed=0)
    rng = np.random.default_rng(3)
    (root / "pics").mkdir()
    for i in range(N_PICTURES):
        scene, _ = render_scene(specs, rng, (320, 240), n_faces=int(rng.integers(1, 3)))
        Image.fromarray(np.asarray(scene)).save(root / "pics" / f"p{i}.png")
    s = collect([root / "pics"], root / "ref", CollectConfig(workers=1, detector="animeface"), show_progress=False)
    assert s.ok and s.items == N_PICTURES and s.faces >= N_PICTURES, s.to_dict()
    return root


def _killed_collect(pics: Path, ws: Path, workers: int, log: Path) -> tuple[int, list[int]]:
    """`animeid collect PICS --workspace WS --workers N --detector animeface`, killed (SIGKILL) right
    after its 3rd committed picture: (its return code, the pids of the worker processes it had)."""
    pids = log.with_suffix(".pids")
    code = ("import multiprocessing, os, signal, sys; from animeid import dataset; from animeid.cli import main\n"
            "add = dataset._Store.add\n"
            "def dying_add(self, *a, **k):\n"
            "    n = add(self, *a, **k)\n"
            f"    if self.summary.items == {KILL_AFTER}:\n"
            f"        open({str(pids)!r}, 'w').write(' '.join(str(p.pid) for p in multiprocessing.active_children()))\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return n\n"
            "dataset._Store.add = dying_add\n"
            "sys.exit(main(sys.argv[1:]))")
    # output to a file, not a pipe: the killed command's workers outlive it a little and would hold a pipe open
    with open(log, "wb") as out:
        rc = subprocess.run([sys.executable, "-c", code, "collect", str(pics), "--workspace", str(ws),
                             "--workers", str(workers), "--detector", "animeface"],
                            cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT, timeout=300).returncode
    return rc, [int(p) for p in pids.read_text().split()] if pids.exists() else []


def _end(pids: list[int]) -> None:
    """End at once the worker processes of a killed collect (they end themselves within a second of
    their parent's death; before that was so, they waited for work forever), so that nothing of this
    test outlives it."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("workers", [1, 2])
def test_collect_of_pictures_killed_midway_resumes_to_the_same_workspace(pictures, tmp_path, workers):
    ws = tmp_path / "ws"
    log = tmp_path / "killed.log"
    rc, worker_pids = _killed_collect(pictures / "pics", ws, workers, log)
    _end(worker_pids)
    assert rc == -signal.SIGKILL, ("collect was not killed midway", rc, log.read_text(errors="replace"))
    assert len(worker_pids) == (0 if workers == 1 else workers), ("detection ran in the worker processes asked for",
                                                                   worker_pids)
    done_before = rows(ws, "SELECT count(*) FROM items")[0][0]
    assert done_before == KILL_AFTER, f"killed right after exactly {KILL_AFTER} committed pictures, not {done_before}"
    ref = _manifest(pictures / "ref")
    kept = _manifest(ws)
    assert kept == ref[:len(kept)], "what the killed run committed is the start of a whole run's manifest"
    # every crop the killed run recorded is on disk, whole
    for (f, *_rest) in kept:
        assert Image.open(ws / f).size == (128, 128), f
    # the same command again (as a user would) finishes the job: only the rest is read
    r = subprocess.run([sys.executable, "-m", "animeid", "collect", str(pictures / "pics"), "--workspace", str(ws),
                        "--workers", str(workers), "--detector", "animeface"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # only the pictures not committed before the kill are read (the 3rd picture's faces were committed;
    # the kill came before its source was marked done, so it counts as a source seen again, read no more)
    assert r.stdout.startswith(f"{N_PICTURES} sources ({KILL_AFTER - 1} already done), "
                               f"{N_PICTURES - KILL_AFTER} frames or pictures processed, "), r.stdout
    assert _manifest(ws) == ref, "the resumed workspace is the one a whole one-worker run makes"
    assert _sources(ws) == _sources(pictures / "ref")
    assert {s for _, s in _sources(ws)} == {"done"}
    on_disk = sorted(p.name for p in (ws / "unlabeled").iterdir() if not p.name.startswith("."))
    assert on_disk == sorted(Path(f).name for f, *_ in ref), "no crop lost, none extra"
    leftovers = [p for p in (ws / "unlabeled").iterdir() if p.name.startswith(".")]
    assert len(leftovers) <= 1, ("at most the one temporary file of the write the kill interrupted", leftovers)
    # a third run adds nothing
    s = collect([pictures / "pics"], ws, CollectConfig(workers=workers, detector="animeface"), show_progress=False)
    assert (s.items, s.faces) == (0, 0) and _manifest(ws) == ref
