"""Workspaces: collect (timestamps, resume, kill), sync, import, export, stats, bad input."""
from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animeid.dataset import (CollectConfig, Workspace, collect, export, group_near_duplicates, hamming,
                             import_illustrations, label_faces, stats, sync)
from animeid.errors import DatasetError
from manifest_rows import FACES, rows

ROOT = Path(__file__).resolve().parent.parent
TILES = ["tadne_r0c1.jpg", "tadne_r0c2.jpg", "tadne_r1c0.jpg", "tadne_r1c3.jpg", "tadne_r2c2.jpg", "tadne_r3c1.jpg"]


def _tiles(detect_tadne: Path, names=TILES) -> list[np.ndarray]:
    return [np.asarray(Image.open(detect_tadne / n).convert("RGB")) for n in names]


def _video_from(images: list[np.ndarray], path: Path, seconds_each: int = 5) -> Path:
    """A 1 fps video showing each picture for ``seconds_each`` seconds."""
    from animeid.video import write_video

    frames = [im for im in images for _ in range(seconds_each)]
    write_video(frames, path, fps=1.0)
    return path


def _manifest(ws: Path) -> list[tuple]:
    """The stored faces, by crop file name."""
    return rows(ws, FACES.replace("ORDER BY f.id", "ORDER BY f.file"))


@pytest.fixture(scope="module")
def tile_video(detect_tadne, tmp_path_factory) -> Path:
    return _video_from(_tiles(detect_tadne), tmp_path_factory.mktemp("vid") / "episode01.mp4")


def test_collect_video_timestamps_and_rerun_adds_nothing(tile_video, detect_tadne, tmp_path):
    from animeid.detect import detect_faces

    ws = tmp_path / "ws"
    cfg = CollectConfig(every=5, workers=1, skip_similar_frames=None)
    s = collect([tile_video], ws, cfg)
    assert s.ok, s.failed
    assert s.items == len(TILES)                 # one sampled frame per tile: t = 0, 5, 10, ...
    rows = _manifest(ws)
    assert rows, "no face collected from a video of real anime pictures"
    times = sorted({r[2] for r in rows})
    assert set(times) <= {5.0 * i for i in range(len(TILES))}
    # every tile the detector finds a face in, seen directly, gives a face at its own timestamp
    for i, tile in enumerate(_tiles(detect_tadne)):
        if detect_faces(tile, threshold=0.8):
            assert any(abs(r[2] - 5.0 * i) < 1e-6 for r in rows), f"no face at t={5 * i}s for {TILES[i]}"
    for r in rows:
        assert (ws / r[0]).is_file() and r[0].startswith("unlabeled/")
        assert r[3] is None and r[10] is None
    # a second run adds nothing
    s2 = collect([tile_video], ws, cfg)
    assert s2.skipped_sources == 1 and s2.faces == 0 and s2.items == 0
    assert _manifest(ws) == rows


def test_collect_two_workers_gives_the_same_manifest(tile_video, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    collect([tile_video], a, CollectConfig(workers=1, skip_similar_frames=None))
    collect([tile_video], b, CollectConfig(workers=2, skip_similar_frames=None))
    assert _manifest(a) == _manifest(b)


def test_collect_killed_midway_resumes_to_the_same_manifest(detect_tadne, tmp_path):
    names = sorted(p.name for p in detect_tadne.glob("*.jpg"))[:14]
    video = _video_from(_tiles(detect_tadne, names), tmp_path / "long.mp4")
    ref = tmp_path / "ref"
    collect([video], ref, CollectConfig(workers=1, skip_similar_frames=None))
    ws = tmp_path / "ws"
    # the child kills itself (SIGKILL, as kill -9) right after its 4th frame is committed: the same
    # point on every run, not wherever a timer happens to catch it
    code = ("import os, signal; from animeid import dataset; from animeid.dataset import collect, CollectConfig\n"
            "add = dataset._Store.add\n"
            "def dying_add(self, *a, **k):\n"
            "    n = add(self, *a, **k)\n"
            "    if self.summary.items == 4: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return n\n"
            "dataset._Store.add = dying_add\n"
            f"collect([{str(video)!r}], {str(ws)!r}, CollectConfig(workers=1, skip_similar_frames=None), "
            "show_progress=False)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL, "collect was not killed midway"
    con = sqlite3.connect(ws / "manifest.sqlite")
    done_before = con.execute("SELECT count(*) FROM items").fetchone()[0]
    status = con.execute("SELECT status FROM sources").fetchone()[0]
    con.close()
    assert done_before == 4 and status == "partial", "killed after exactly 4 committed frames"
    s = collect([video], ws, CollectConfig(workers=1, skip_similar_frames=None))
    assert s.ok and s.items == len(names) - done_before     # only the rest was processed
    assert _manifest(ws) == [tuple(r) for r in _manifest(ref)]
    # no stray temporary files from the killed run's atomic writes, apart from a possible single one
    leftovers = [p for p in (ws / "unlabeled").iterdir() if p.name.startswith(".")]
    assert len(leftovers) <= 1


def test_collect_pictures_dedupes_near_duplicates(detect_tadne, tmp_path):
    src = tmp_path / "pics"
    src.mkdir()
    im = Image.open(detect_tadne / "tadne_r0c1.jpg").convert("RGB")
    im.save(src / "a.png")
    im.save(src / "b.jpg", quality=90)                 # same picture, recompressed: a near-duplicate
    s = collect([src], tmp_path / "ws", CollectConfig(workers=1))
    assert s.ok and s.sources == 2
    assert s.faces >= 1 and s.duplicates >= 1
    assert s.faces == len(_manifest(tmp_path / "ws"))


# --------------------------------------------------------------------------- bad input

def test_bad_inputs_are_named_and_the_rest_goes_on(detect_tadne, tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    for n in TILES[:3]:
        Image.open(detect_tadne / n).save(src / n)
    (src / "broken.jpg").write_bytes((detect_tadne / TILES[3]).read_bytes()[:2000])   # truncated
    (src / "notes.png").write_text("this is not a picture")                          # lies about its kind
    Image.new("RGB", (1, 1), (255, 0, 0)).save(src / "tiny.png")                     # 1x1
    bomb = src / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)                                        # 400 Mpx, tiny file
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    ws = tmp_path / "ws"
    # something written before must survive the failures
    s0 = collect([src / TILES[0]], ws, CollectConfig(workers=1))
    before = _manifest(ws)
    assert before
    s = collect([src, empty, bad_video, tmp_path / "missing.mp4", tmp_path / "readme.txt"], ws,
                CollectConfig(workers=2))
    failed = {Path(p).name: why for p, why in s.failed}
    assert not s.ok
    assert "broken.jpg" in failed and "notes.png" in failed and "bomb.png" in failed
    assert "decompression bomb" in failed["bomb.png"] or "pixels" in failed["bomb.png"]
    assert "empty" in failed and "no videos or pictures" in failed["empty"]
    assert "bad.mp4" in failed and "missing.mp4" in failed and "readme.txt" in failed
    assert "tiny.png" not in failed                    # a 1x1 picture is fine: it has no face
    assert set(before) <= set(_manifest(ws))           # nothing lost
    assert len(_manifest(ws)) > len(before)            # the good pictures went on


def test_cli_exit_status_says_whether_anything_failed(detect_tadne, tmp_path):
    from animeid.cli import main

    ok = main(["collect", str(detect_tadne / TILES[0]), "--workspace", str(tmp_path / "ws"), "--workers", "1"])
    assert ok == 0
    bad = main(["collect", str(tmp_path / "nope.mp4"), "--workspace", str(tmp_path / "ws"), "--workers", "1"])
    assert bad == 1


def test_not_a_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not an animeid workspace"):
        sync(tmp_path)
    (tmp_path / "manifest.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(DatasetError, match="corrupt"):
        Workspace(tmp_path)


# --------------------------------------------------------------------------- labelling, export, stats

def _fake_workspace(tmp_path: Path, per_char: int = 12) -> Path:
    """A workspace of generated crops (distinct colours per character) collected as 'pictures'."""
    rng = np.random.default_rng(0)
    ws = tmp_path / "ws"
    w = Workspace(ws, create=True)
    with w.conn:
        w.conn.execute("INSERT INTO sources(path, kind, status) VALUES ('x', 'manual', 'done')")
    rows = []
    for c, name in enumerate(["初音ミク", "aoba", "kou"]):
        for i in range(per_char):
            img = np.zeros((64, 64, 3), np.uint8)
            img[:] = rng.integers(0, 255, 3)
            img[rng.integers(0, 40):, rng.integers(0, 40):] = rng.integers(0, 255, 3)
            rel = f"unlabeled/{c}_{i}.png"
            Image.fromarray(img).save(ws / rel)
            from animeid.dataset import _phash
            rows.append((rel, 1, float(i), None, 0, 0, 64, 64, 0.9, f"{_phash(Image.fromarray(img)):016x}", None))
    with w.conn:
        w.conn.executemany("INSERT INTO faces(file, source_id, time, page, x0, y0, x1, y1, score, phash, label)"
                           " VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    w.close()
    return ws


def test_sync_records_folder_moves_unicode_and_deletions(tmp_path):
    ws = _fake_workspace(tmp_path)
    (ws / "初音ミク").mkdir()
    for i in range(12):
        os.replace(ws / f"unlabeled/0_{i}.png", ws / f"初音ミク/0_{i}.png")
    (ws / "aoba").mkdir()
    for i in range(10):
        os.replace(ws / f"unlabeled/1_{i}.png", ws / f"aoba/1_{i}.png")
    os.remove(ws / "unlabeled/2_0.png")             # the user rejected a crop
    s = sync(ws)
    assert s.characters == {"初音ミク": 12, "aoba": 10}
    assert s.deleted == 1 and s.unlabeled == 2 + 11
    # moving back un-labels; a picture dropped in by hand is added
    os.replace(ws / "aoba/1_0.png", ws / "unlabeled/1_0.png")
    Image.new("RGB", (50, 50), (1, 2, 3)).save(ws / "aoba/extra.png")
    s = sync(ws)
    assert s.characters["aoba"] == 10 and s.added == 1
    with Workspace(ws) as w:
        assert w.characters() == ["aoba", "初音ミク"]
    # a link in aoba/ to a face of 初音ミク is not a second face of aoba's
    (ws / "aoba" / "0_3.png").symlink_to(ws / "初音ミク" / "0_3.png")
    s = sync(ws)
    assert s.characters == {"初音ミク": 12, "aoba": 10} and s.added == 0


def test_label_faces_moves_crops(tmp_path):
    ws = _fake_workspace(tmp_path)
    with Workspace(ws) as w:
        ids = [r["id"] for r in w.faces()][:3]
    assert label_faces(ws, ids, "kou") == 3
    assert len(list((ws / "kou").iterdir())) == 3
    with pytest.raises(DatasetError, match="reserved"):
        label_faces(ws, ids, "unlabeled")


def test_export_split_is_stratified_seeded_and_leak_free(tmp_path):
    ws = _fake_workspace(tmp_path, per_char=20)
    for c, name in enumerate(["初音ミク", "aoba", "kou"]):
        (ws / name).mkdir()
        for i in range(20):
            os.replace(ws / f"unlabeled/{c}_{i}.png", ws / f"{name}/{c}_{i}.png")
    # a near-duplicate pair inside one character must land in one split
    dup = Image.open(ws / "kou/2_0.png")
    dup.save(ws / "kou/2_0_copy.png")
    sync(ws)
    out = tmp_path / "export"
    r = export(ws, out, size=48, seed=3)
    assert r["faces"] == 61
    rows = list(csv.DictReader(open(out / "split.csv", encoding="utf-8")))
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    for name in ["初音ミク", "aoba", "kou"]:
        splits = [row["split"] for row in rows if row["label"] == name]
        assert splits.count("test") >= 1 and splits.count("val") >= 1 and splits.count("train") >= 10
    img = Image.open(out / rows[0]["path"])
    assert img.size == (48, 48)
    assert rows[0]["path"].startswith(rows[0]["label"] + "/")
    # same seed, same split; the near-duplicates are together
    r2 = export(ws, tmp_path / "export2", size=48, seed=3)
    rows2 = list(csv.DictReader(open(tmp_path / "export2" / "split.csv", encoding="utf-8")))
    assert [(a["label"], a["split"]) for a in rows] == [(b["label"], b["split"]) for b in rows2]
    with Workspace(ws) as w:
        sp = {Path(x["file"]).name: x["split"] for x in w.faces(labeled=True)}
    assert sp["2_0.png"] == sp["2_0_copy.png"]


def test_export_with_no_labels_is_a_clear_error_and_keeps_the_old_export(tmp_path):
    ws = _fake_workspace(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(DatasetError, match="no labeled faces"):
        export(ws, out)
    assert (out / "keep.txt").read_text() == "old"


def test_stats_counts_and_contact_sheet(tmp_path):
    ws = _fake_workspace(tmp_path)
    r = stats(ws)
    assert r["characters"]["(unlabeled)"]["all"] == 36
    sheet = np.asarray(Image.open(r["contact_sheet"]).convert("RGB"))
    # one row ('(unlabeled)'): a 180-px label column, 12 of the 36 faces as 64-px thumbnails, 4-px gaps
    assert sheet.shape == (4 + 68, 180 + 12 * 68 + 4, 3), ("contact sheet: one row of 12 thumbnails", sheet.shape)
    first = np.asarray(Image.open(ws / "unlabeled/0_0.png").convert("RGB").resize((64, 64), Image.BILINEAR))
    assert np.array_equal(sheet[4:68, 184:248], first), "the first face is the row's first thumbnail"


def test_hamming_and_grouping():
    a = np.array([0, 1, 3, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
    assert list(hamming(0, a)) == [0, 1, 2, 64]
    assert group_near_duplicates([0, 1, 0xFF00, 0xFF01], 2) == [0, 0, 2, 2]


def test_truncated_video_keeps_its_readable_part_and_is_reported(detect_tadne, tmp_path):
    from animeid.video import write_video

    frames = [im for im in _tiles(detect_tadne) for _ in range(5)]
    full = tmp_path / "full.mkv"                 # mkv: its index is not needed to read the first part
    write_video(frames, full, fps=1.0)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    s = collect([cut], tmp_path / "ws", CollectConfig(workers=1, skip_similar_frames=None))
    assert not s.ok and Path(s.failed[0][0]).name == "cut.mkv"
    assert 0 < s.items < len(TILES)              # the first part was sampled and kept
    rows = _manifest(tmp_path / "ws")
    assert rows and max(r[2] for r in rows) < 5.0 * len(TILES)


def test_near_duplicate_pairs_from_constructed_hashes_split_whole_in_exact_proportions():
    """Hand-made hashes: 15 bases, each one even-parity byte repeated 8 times (any two differ in 2+ bits
    per byte, so 16+ bits). Character a has bases 0-9; b has 5 pairs, base 10-14 and that base with one
    bit flipped. At 10 bits each pair is one group and the rest stay alone; the 80/10/10 split then
    gives a (8, 1, 1) faces and b (6, 2, 2) (test and val get a pair each, train the other three),
    whatever order the seed draws the groups in."""
    from animeid.dataset import _split_groups

    even = [v for v in range(256) if bin(v).count("1") % 2 == 0][:15]
    bases = [int.from_bytes(bytes([v] * 8), "big") for v in even]
    d = [int(hamming(h, np.array([g], np.uint64))[0]) for i, h in enumerate(bases) for g in bases[i + 1:]]
    assert min(d) == 16
    hashes = bases[:10] + [h for base in bases[10:] for h in (base, base ^ 1)]
    groups = group_near_duplicates(hashes, 10)
    assert groups == list(range(10)) + [10, 10, 12, 12, 14, 14, 16, 16, 18, 18], \
        ("far-apart hashes each their own group, each 1-bit pair one group", groups)
    labels = ["a"] * 10 + ["b"] * 10
    for seed in range(5):
        split = _split_groups(labels, groups, seed, (0.8, 0.1, 0.1))
        counts = {lab: tuple([split[i] for i in range(20) if labels[i] == lab].count(k) for k in ("train", "val", "test"))
                  for lab in "ab"}
        assert counts == {"a": (8, 1, 1), "b": (6, 2, 2)}, ("exact 80/10/10 split by whole groups", seed, counts)
        assert all(split[10 + 2 * k] == split[11 + 2 * k] for k in range(5)), "a near-duplicate pair never straddles"


def test_export_split_fractions_of_zero_hold_nothing_out():
    """`dataset export --val 0 --test 0` keeps every face for training (a character with 3+ groups used
    to give test and val a group each whatever the fractions)."""
    from animeid.dataset import _split_groups

    labels, groups = ["a"] * 10 + ["b"] * 4, list(range(14))
    assert set(_split_groups(labels, groups, 0, (1.0, 0.0, 0.0))) == {"train"}
    no_val = _split_groups(labels, groups, 0, (0.9, 0.0, 0.1))
    assert "val" not in no_val and no_val[:10].count("test") == 1 and no_val[10:].count("test") == 1
    both = _split_groups(labels, groups, 0, (0.8, 0.1, 0.1))
    assert both[:10].count("test") == 1 and both[:10].count("val") == 1 and both[:10].count("train") == 8


def test_collect_of_unreadable_inputs_leaves_no_workspace(tmp_path, capsys):
    from animeid.cli import main

    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    ws = tmp_path / "ws"
    assert main(["collect", str(bad), "--workspace", str(ws), "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert "nothing read: no workspace made" in out.out and "not a readable video" in out.err
    assert not ws.exists()
    ws.mkdir()
    (ws / "notes.txt").write_text("mine")            # a folder the user made: kept, with their file
    assert main(["collect", str(bad), "--workspace", str(ws), "--workers", "1"]) == 1
    assert sorted(p.name for p in ws.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)              # empty folders the user made: kept too
    assert main(["collect", str(bad), "--workspace", str(empty), "--workers", "1"]) == 1
    assert [p.name for p in empty.iterdir()] == ["sub"]


def test_video_ends_marks_every_video_in_order_even_those_without_frames():
    from pathlib import Path

    from animeid.dataset import _DetectJob, _video_ends, _VideoTodo

    todo = [_VideoTodo(Path(f"v{i}.mp4"), source_id=10 + i, done=set()) for i in range(5)]
    # frames only of videos 1 and 3 (0, 2 and 4 give none: unreadable or all done)
    stream = [(_DetectJob(11, "t=0.000", 0.0, None), "r1a"), (_DetectJob(11, "t=1.000", 1.0, None), "r1b"),
              (_DetectJob(13, "t=0.000", 0.0, None), "r3")]
    got = [(v.path.name, None if job is None else res) for v, job, res in _video_ends(todo, iter(stream))]
    assert got == [("v0.mp4", None), ("v1.mp4", "r1a"), ("v1.mp4", "r1b"), ("v1.mp4", None), ("v2.mp4", None),
                   ("v3.mp4", "r3"), ("v3.mp4", None), ("v4.mp4", None)]


def test_pool_workers_end_when_collect_is_killed(tmp_path):
    """A collect killed with SIGKILL cannot shut its process pool down; its workers end themselves,
    even those still starting when it died."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import multiprocessing, os, signal, sys\n"
            "from animeid.dataset import _Runner, CollectConfig\n"
            "if __name__ == '__main__':\n"
            "    r = _Runner(2, CollectConfig(detector='animeface'))\n"
            "    r.pool.submit(abs, -1)\n"    # workers start; killed before they are ready (the harder case)
            "    print(' '.join(str(p.pid) for p in multiprocessing.active_children()), flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    script = tmp_path / "killed.py"
    script.write_text(code)
    out = tmp_path / "pids.txt"
    with open(out, "wb") as f:        # a file, not a pipe, which orphaned workers would hold open
        rc = subprocess.run([sys.executable, str(script)], stdout=f, timeout=120).returncode
    assert rc == -signal.SIGKILL
    pids = [int(p) for p in out.read_text().split()]
    assert pids, "the pool started a worker"

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie (ended, not yet reaped by init) counts as ended
        try:
            with open(f"/proc/{pid}/stat") as st:
                return st.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"pool workers still running after their parent was killed: {left}"
