"""Collect, batch prediction and timelines on a Dask cluster (animeid.remote, animeid.batch), on loopback only.

Fast cases use an in-process LocalCluster (two single-threaded workers); the end-to-end case starts a
real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 and kills one of them.
Generated data only (drawn scenes), AnimeFace named explicitly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from animeid.dataset import CollectConfig, collect  # noqa: E402
from animeid.remote import ClusterError  # noqa: E402
from manifest_rows import manifest as _manifest, rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(every=1.0, workers=1, detector="animeface", segment_frames=4)


def _items(ws: Path) -> list[tuple]:
    return rows(ws, "SELECT s.path, i.key, i.n_faces, i.n_duplicates FROM items i JOIN sources s"
                    " ON s.id = i.source_id ORDER BY s.path, i.key")


def _scenes(n: int, size=(320, 180), seed=1) -> list[np.ndarray]:
    from animeid.sample import make_characters, render_scene

    specs = make_characters(4, seed=0)
    rng = np.random.default_rng(seed)
    return [np.asarray(render_scene(specs, rng, size, n_faces=int(rng.integers(1, 3)))[0]) for _ in range(n)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A 24 s video (8 scenes of 3 s at 2 fps: similar frames in a row) and 3 pictures."""
    from PIL import Image

    from animeid.video import write_video

    root = tmp_path_factory.mktemp("dist-inputs")
    write_video([s for s in _scenes(8) for _ in range(6)], root / "episode.mp4", fps=2.0)
    (root / "pics").mkdir()
    for i, s in enumerate(_scenes(3, size=(320, 240), seed=2)):
        Image.fromarray(s).save(root / "pics" / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def local_ws(inputs, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("dist-local") / "ws"
    s = collect([inputs / "episode.mp4", inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False)
    assert s.ok and s.faces > 0, s.to_dict()
    return ws


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                                  memory_limit=0) as lc, \
            distributed.Client(lc, set_as_default=False) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the sampler's segments

def test_segments_give_the_frames_of_one_pass(inputs):
    from animeid.video import sample_frames

    video = inputs / "episode.mp4"

    def times(**kw):
        return [round(f.time, 3) for f in sample_frames(video, 1.0, skip_similar=4, **kw)]

    whole = times(similar_restart=4.0)
    parts = []
    for j in range(6):
        parts += times(start=4.0 * j, stop=4.0 * (j + 1) if j < 5 else None, similar_restart=4.0)
    assert parts == whole
    assert 0.0 in whole and 4.0 in whole and 8.0 in whole      # each border starts the chain again
    assert len(whole) < 24                                      # and similar frames are still skipped


# --------------------------------------------------------------------------- collect

def test_collect_on_a_cluster_equals_a_local_run_and_rerun_adds_nothing(inputs, local_ws, client, tmp_path):
    ws = tmp_path / "ws"
    s = collect([inputs / "episode.mp4", inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False, client=client)
    assert s.ok, s.failed
    assert _manifest(ws) == _manifest(local_ws)
    assert _items(ws) == _items(local_ws)
    for row in _manifest(ws):
        assert (ws / row[0]).is_file()
    s2 = collect([inputs / "episode.mp4", inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False, client=client)
    assert s2.skipped_sources == s2.sources and s2.faces == 0 and s2.items == 0
    assert _manifest(ws) == _manifest(local_ws)


def _sources(ws: Path) -> list[tuple]:
    return rows(ws, "SELECT path, kind, status, error IS NOT NULL FROM sources ORDER BY id")


def test_several_videos_one_unreadable_in_between_equal_a_local_run(inputs, client, tmp_path):
    """The segments of all videos form one stream of tasks: the store order, each video's status and
    a broken video between two good ones are the same as a local run's, video after video."""
    from animeid.video import write_video

    vids = tmp_path / "vids"
    vids.mkdir()
    write_video([s for s in _scenes(3, seed=5) for _ in range(4)], vids / "a.mp4", fps=2.0)
    (vids / "b.mp4").write_bytes(b"not a video at all" * 50)
    write_video([s for s in _scenes(4, seed=6) for _ in range(3)], vids / "c.mp4", fps=2.0)
    args = [vids / "a.mp4", vids / "b.mp4", vids / "c.mp4"]
    local = collect(args, tmp_path / "local", CollectConfig(**CFG), show_progress=False)
    remote = collect(args, tmp_path / "remote", CollectConfig(**CFG), show_progress=False, client=client)
    assert [Path(p).name for p, _ in local.failed] == [Path(p).name for p, _ in remote.failed] == ["b.mp4"]
    expected = [(str(vids / n), "video", st, err) for n, st, err in
                [("a.mp4", "done", 0), ("b.mp4", "failed", 1), ("c.mp4", "done", 0)]]
    assert _sources(tmp_path / "local") == _sources(tmp_path / "remote") == expected
    rows = _manifest(tmp_path / "remote")
    assert rows == _manifest(tmp_path / "local")
    names = [Path(r[1]).name for r in rows]
    assert names == sorted(names) and {"a.mp4", "c.mp4"} <= set(names)    # a's faces all stored before c's
    assert _items(tmp_path / "remote") == _items(tmp_path / "local")


def test_import_on_a_cluster_equals_a_local_import(inputs, client, tmp_path):
    from animeid.dataset import import_illustrations

    local, remote = tmp_path / "local", tmp_path / "remote"
    a = import_illustrations([inputs / "pics"], local, "someone", CollectConfig(**CFG), show_progress=False)
    b = import_illustrations([inputs / "pics"], remote, "someone", CollectConfig(**CFG), show_progress=False,
                             client=client)
    assert a.ok and b.ok and a.items == b.items == 3 and a.faces == b.faces > 0
    assert _manifest(remote) == _manifest(local)


def test_a_partly_done_workspace_is_finished_on_a_cluster(inputs, local_ws, client, tmp_path):
    ws = tmp_path / "ws"
    collect([inputs / "episode.mp4", inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False)
    con = sqlite3.connect(ws / "manifest.sqlite")      # forget the second half of the video, as a kill would
    with con:
        rows = con.execute("SELECT file FROM faces WHERE time >= 12").fetchall()
        con.execute("DELETE FROM faces WHERE time >= 12")
        con.execute("DELETE FROM items WHERE key LIKE 't=%' AND CAST(substr(key, 3) AS REAL) >= 12")
        con.execute("UPDATE sources SET status='partial' WHERE kind='video'")
    con.close()
    for (f,) in rows:
        (ws / f).unlink()
    s = collect([inputs / "episode.mp4", inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False, client=client)
    assert s.ok and s.items > 0
    assert sorted(_manifest(ws)) == sorted(_manifest(local_ws))


def test_unreachable_scheduler_is_a_clear_error_and_writes_nothing(inputs, tmp_path):
    ws = tmp_path / "ws"
    addr = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.time()
    with pytest.raises(ClusterError, match="no Dask scheduler answers at"):
        collect([inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False, client=addr)
    assert time.time() - t0 < 20
    assert not ws.exists()
    # the CLI says it in one line, exit 1
    r = subprocess.run([sys.executable, "-m", "animeid", "collect", str(inputs / "pics"), "--workspace", str(ws),
                        "--detector", "animeface", "--scheduler", addr], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no Dask scheduler answers at" in r.stderr and "Traceback" not in r.stderr
    assert not ws.exists()


def test_worker_with_another_animeid_is_refused(inputs, client, tmp_path, monkeypatch):
    import animeid.remote as remote

    monkeypatch.setattr(remote, "_worker_version", lambda: "0.0.0-other")
    ws = tmp_path / "ws"
    with pytest.raises(ClusterError, match=r"animeid 0\.0\.0-other"):
        collect([inputs / "pics"], ws, CollectConfig(**CFG), show_progress=False, client=client)
    assert not ws.exists()
    # and a task that reaches such a worker anyway refuses it
    with pytest.raises(ClusterError, match="install the same animeid"):
        remote._check_version("0.0.0-driver")


def test_an_input_a_worker_cannot_read_is_named_with_the_worker(inputs, client, tmp_path, monkeypatch):
    import animeid.remote as remote

    real = remote._unreadable
    hidden = str((inputs / "pics" / "p1.png").resolve())

    def unreadable(path):                 # as if p1.png were not on this worker's shared folder
        return "cannot be read on worker x (no such file); inputs must lie on a path every worker can read" \
            if str(path) == hidden else real(path)

    monkeypatch.setattr(remote, "_unreadable", unreadable)
    s = collect([inputs / "pics"], tmp_path / "ws", CollectConfig(**CFG), show_progress=False, client=client)
    assert [p for p, _ in s.failed] == [hidden]
    assert "cannot be read on worker" in s.failed[0][1] and "every worker" in s.failed[0][1]
    # what a real worker says for a file it lacks
    why = real(tmp_path / "missing.png")
    assert "no such file" in why and "shared folder" in why


def test_without_dask_the_message_names_the_extra(monkeypatch):
    import animeid.remote as remote

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"animeid\[distributed\]"):
        remote.connect("tcp://127.0.0.1:8786")


# --------------------------------------------------------------------------- predict and timeline

def _pictures(generated_model) -> list[Path]:
    return [f for name in generated_model.chars[:3] for f in generated_model.held_out(name)[:3]]


def test_predict_files_on_a_cluster_equals_a_local_run_in_order_and_resumes(generated_model, client, tmp_path):
    from animeid.batch import predict_files
    from animeid.predict import PredictConfig

    files = _pictures(generated_model)
    cfg = PredictConfig(detector="animeface")
    local = tmp_path / "local.jsonl"
    predict_files(generated_model.path, files, local, cfg=cfg)
    # the model is shipped to the workers: a copy that disappears after shipping is not needed there
    model = tmp_path / "copy.animeid"
    model.write_bytes(generated_model.path.read_bytes())
    remote = tmp_path / "remote.jsonl"
    s = predict_files(model, files[:4], remote, cfg=cfg, client=client, chunk=2)
    assert s == {"pictures": 4, "skipped": 0, "done": 4, "failed": 0, "failed_before": 0}
    with open(remote, "a", encoding="utf-8") as f:            # a line cut off by a killed driver
        f.write('{"path": "half')
    s = predict_files(model, files, remote, cfg=cfg, client=client, chunk=2)
    assert s["skipped"] == 4 and s["done"] == len(files) - 4
    a = [json.loads(x) for x in local.read_text(encoding="utf-8").splitlines()]
    b = [json.loads(x) for x in remote.read_text(encoding="utf-8").splitlines()]
    assert [r["path"] for r in b] == [str(f) for f in files]
    assert a == b
    # CSV: one row per face, same order
    csv_l, csv_r = tmp_path / "l.csv", tmp_path / "r.csv"
    predict_files(generated_model.path, files, csv_l, cfg=cfg)
    predict_files(model, files, csv_r, cfg=cfg, client=client)
    assert csv_l.read_text() == csv_r.read_text()
    assert csv_l.read_text().splitlines()[0] == "path,face,x0,y0,x1,y1,name,p,unknown,error"


def test_predict_cli_with_scheduler_needs_out_and_reports_unreachable(generated_model, tmp_path):
    files = [str(f) for f in _pictures(generated_model)[:2]]
    r = subprocess.run([sys.executable, "-m", "animeid", "predict", str(generated_model.path), *files,
                        "--scheduler", "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--out" in r.stderr
    out = tmp_path / "r.jsonl"
    r = subprocess.run([sys.executable, "-m", "animeid", "predict", str(generated_model.path), *files,
                        "--detector", "animeface", "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no Dask scheduler answers" in r.stderr and not out.exists()


def test_timelines_on_a_cluster_equal_local_ones(generated_model, inputs, client, tmp_path):
    from animeid.batch import timelines
    from animeid.predict import PredictConfig

    cfg = PredictConfig(detector="animeface", detect="always")
    videos = [inputs / "episode.mp4", tmp_path / "missing.mp4"]
    local = list(timelines(generated_model.path, videos, every=4.0, cfg=cfg))
    remote = list(timelines(generated_model.path, videos, every=4.0, cfg=cfg, client=client))
    assert [v for v, _ in remote] == [str(v) for v in videos]
    assert remote[0] == local[0] and isinstance(remote[0][1], dict) and remote[0][1]["frames"]
    # missing here too: said as a local run says it, no worker blamed
    assert remote[1] == local[1] == (str(videos[1]), f"{videos[1]}: no such file")


# --------------------------------------------------------------------------- a real cluster on loopback

def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _count_items(ws: Path) -> int:
    try:
        con = sqlite3.connect(ws / "manifest.sqlite", timeout=1)
        try:
            return con.execute("SELECT count(*) FROM items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_real_scheduler_and_workers_survive_a_killed_worker_and_a_killed_driver(inputs, local_ws, generated_model,
                                                                                  tmp_path, monkeypatch):
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--dashboard-address", "127.0.0.1:0", "--no-show"], tmp_path / "scheduler.log")]
    try:
        time.sleep(1)
        def worker(i: int) -> subprocess.Popen:
            return _start(["distributed.cli.dask_worker", addr, "--nthreads", "1", "--nworkers", "1", "--host",
                           "127.0.0.1", "--no-nanny", "--dashboard-address", "127.0.0.1:0"], tmp_path / f"w{i}.log")

        workers = [worker(i) for i in range(2)]
        procs += workers
        with distributed.Client(addr, timeout=30, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
        args = [str(inputs / "episode.mp4"), str(inputs / "pics")]
        code = ("import sys; from animeid.dataset import collect, CollectConfig; "
                f"s = collect({args!r}, sys.argv[1], CollectConfig(**{CFG!r}), show_progress=False, client={addr!r}); "
                "sys.exit(0 if s.ok else 1)")
        # 1. the driver killed mid-run, then run again: nothing twice
        ws = tmp_path / "ws"
        driver = subprocess.Popen([sys.executable, "-c", code, str(ws)], cwd=ROOT)
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None and _count_items(ws) < 3:
            time.sleep(0.02)
        killed = driver.poll() is None
        driver.kill()
        driver.wait()
        # 2. a worker killed (SIGKILL) while the rerun goes on: its tasks run again on the other one
        driver = subprocess.Popen([sys.executable, "-c", code, str(ws)], cwd=ROOT)
        start_items = _count_items(ws)
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None and _count_items(ws) <= start_items:
            time.sleep(0.02)
        worker_killed_mid_run = driver.poll() is None
        workers[0].send_signal(signal.SIGKILL)
        assert driver.wait(300) == 0
        assert worker_killed_mid_run, "the rerun finished before a worker could be killed"
        assert workers[0].wait(10) == -signal.SIGKILL
        assert _manifest(ws) == _manifest(local_ws)
        assert _items(ws) == _items(local_ws)
        assert killed, "the driver finished before it could be killed"
        # 3. predict with relative paths from another folder than the workers', a worker killed
        # (SIGKILL) mid-run: the model reaches the worker that takes over, the results equal a local run's
        workers.append(worker(2))
        procs.append(workers[-1])
        with distributed.Client(addr, timeout=30, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
        src = _pictures(generated_model)
        (tmp_path / "many").mkdir()
        for i in range(96):
            (tmp_path / "many" / f"{i:03d}{src[i % len(src)].suffix}").symlink_to(src[i % len(src)])
        code = ("import sys; from animeid.batch import predict_files; from animeid.predict import PredictConfig; "
                f"predict_files({str(generated_model.path)!r}, ['many'], sys.argv[1], "
                f"cfg=PredictConfig(detector='animeface'), client={addr!r}, chunk=8)")
        out = tmp_path / "remote.jsonl"
        driver = subprocess.Popen([sys.executable, "-c", code, out.name], cwd=tmp_path,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None and not (out.exists() and out.stat().st_size):
            time.sleep(0.02)
        worker_killed_mid_predict = driver.poll() is None
        workers[1].send_signal(signal.SIGKILL)
        assert driver.wait(300) == 0
        assert worker_killed_mid_predict, "predict finished before a worker could be killed"
        from animeid.batch import predict_files
        from animeid.predict import PredictConfig

        local = tmp_path / "local.jsonl"
        monkeypatch.chdir(tmp_path)
        predict_files(generated_model.path, ["many"], local, cfg=PredictConfig(detector="animeface"))
        got = out.read_text().splitlines()
        assert len(got) == 96 and not any('"error"' in line for line in got)
        assert got == local.read_text().splitlines()
    finally:
        for p in reversed(procs):
            _stop(p)


def test_cli_collect_predict_and_timeline_with_scheduler(generated_model, inputs, local_ws, client, tmp_path, capsys):
    from animeid.cli import main

    addr = client.scheduler.address
    ws = tmp_path / "ws"
    assert main(["collect", str(inputs / "episode.mp4"), str(inputs / "pics"), "--workspace", str(ws), "--every", "1",
                 "--detector", "animeface", "--scheduler", addr]) == 0
    # the CLI's segment size is the default (30 frames): one segment for this short video, as locally
    ref = tmp_path / "ref"
    assert main(["collect", str(inputs / "episode.mp4"), str(inputs / "pics"), "--workspace", str(ref), "--every", "1",
                 "--detector", "animeface", "--workers", "1"]) == 0
    assert _manifest(ws) == _manifest(ref)
    files = [str(f) for f in _pictures(generated_model)]
    out = tmp_path / "r.csv"
    capsys.readouterr()
    assert main(["predict", str(generated_model.path), *files, "--detector", "animeface", "--out", str(out),
                 "--scheduler", addr]) == 0
    assert f"{len(files)} named now, 0 already in" in capsys.readouterr().out
    assert main(["predict", str(generated_model.path), *files, "--detector", "animeface", "--out", str(out),
                 "--scheduler", addr]) == 0
    assert f"0 named now, {len(files)} already in" in capsys.readouterr().out
    assert main(["timeline", str(generated_model.path), str(inputs / "episode.mp4"), str(inputs / "episode.mp4"),
                 "--every", "4", "--detector", "animeface", "--no-png", "--json", "--scheduler", addr]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0]["frames"]


# --------------------------------------------------------------------------- addresses a user may get wrong

@pytest.mark.parametrize("address, says", [
    ("foo", "needs a host and a port"),
    ("tcp://127.0.0.1:notaport", "is not a scheduler address"),
    ("tcp://127.0.0.1:8786/x", "needs a host and a port"),
    ("tls://127.0.0.1:8786", "only tcp:// addresses can be given here"),
    ("http://127.0.0.1:8787/status", "is a web address"),
    ("", "empty scheduler address"),
])
def test_a_malformed_address_is_said_at_once(address, says):
    from animeid.remote import connect

    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=says):
        connect(address)
    assert time.monotonic() - t0 < 5, "no waiting for an address that cannot be right"


def _silent_or_greeting_server(greeting: bytes | None):
    """A TCP server on 127.0.0.1 that accepts and then says ``greeting`` (None: nothing, as an HTTP server)."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    conns = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            if greeting is not None:
                c.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    return srv, conns


@pytest.mark.parametrize("greeting", [None, b"SSH-2.0-OpenSSH_9.6\r\n"])
def test_a_server_that_is_no_dask_scheduler_is_said_not_waited_for(greeting, inputs, tmp_path):
    """The dashboard's HTTP port (silent: Dask's client would wait without end) or another service
    (greeting otherwise: Dask's client failed with a MemoryError traceback) give one clear line."""
    from animeid.remote import GREETING_TIMEOUT

    srv, conns = _silent_or_greeting_server(greeting)
    try:
        addr = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="something answers at .*, but not as a Dask scheduler"):
            collect([inputs / "pics"], tmp_path / "ws", CollectConfig(**CFG), show_progress=False, client=addr)
        assert time.monotonic() - t0 < GREETING_TIMEOUT + 10
        assert not (tmp_path / "ws").exists()
    finally:
        srv.close()
        for c in conns:
            c.close()


def test_cli_scheduler_option_empty_and_the_environment(generated_model, tmp_path, monkeypatch, capsys):
    from animeid.cli import main

    pic = str(_pictures(generated_model)[0])
    with pytest.raises(SystemExit) as e:
        main(["predict", str(generated_model.path), pic, "--scheduler", ""])
    assert e.value.code == 2 and "an empty address" in capsys.readouterr().err
    # $ANIMEID_SCHEDULER, set for collect's sake, does not stop a quick predict without --out: it runs here
    monkeypatch.setenv("ANIMEID_SCHEDULER", f"tcp://127.0.0.1:{_free_port()}")
    assert main(["predict", str(generated_model.path), pic, "--detector", "animeface", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["path"] == pic
    # with --out it is used (here: nobody answers, one line, exit 1, nothing written)
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(generated_model.path), pic, "--detector", "animeface", "--out", str(out)]) == 1
    assert "no Dask scheduler answers at" in capsys.readouterr().err and not out.exists()
    # and a blank one is as unset
    monkeypatch.setenv("ANIMEID_SCHEDULER", "  ")
    assert main(["predict", str(generated_model.path), pic, "--detector", "animeface", "--out", str(out)]) == 0
    assert out.exists()


def test_two_runs_of_one_model_share_a_cluster(generated_model, client, tmp_path):
    """Each run hands the model over under its own name: the end of one does not take it from the
    other's workers (it did: 'the model did not reach worker ...')."""
    import threading

    from animeid.batch import predict_files
    from animeid.predict import PredictConfig
    from animeid.remote import _MODEL_USERS, _keep_model

    src = _pictures(generated_model)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(48):
        (many / f"{i:03d}{src[i % len(src)].suffix}").symlink_to(src[i % len(src)])
    cfg = PredictConfig(detector="animeface")
    outs, errors = {}, []
    started, short_done = threading.Event(), threading.Event()

    def hold(path, res):                  # the long run waits, mid-way, until the short one has ended
        if not started.is_set():
            started.set()
            assert short_done.wait(300)

    def run(name, inputs, chunk, on_result=None):
        try:
            outs[name] = predict_files(generated_model.path, inputs, tmp_path / f"{name}.jsonl", cfg=cfg,
                                       client=client, chunk=chunk, on_result=on_result)
        except Exception as e:     # noqa: BLE001 - reported below
            errors.append(e)

    long = threading.Thread(target=run, args=("long", [many], 2, hold))
    long.start()
    assert started.wait(300), errors
    run("short", [src[0]], 32)            # starts and ends while the long one is mid-way
    short_done.set()
    long.join(300)
    assert not errors, errors
    assert outs["short"]["done"] == 1 and outs["long"]["done"] == 48 and outs["long"]["failed"] == 0
    assert not _MODEL_USERS, "every run's model is dropped from the workers at its end"
    # the count itself: two users, one leaves, the bytes stay for the other
    _keep_model("x", b"1")
    _keep_model("x", b"1")
    _keep_model("x", None)
    assert _MODEL_USERS == {"x": 1}
    _keep_model("x", None)
    assert _MODEL_USERS == {}


def test_cli_other_protocols_are_one_line_without_a_wait_at_exit(generated_model, tmp_path):
    for addr, says in (("tls://127.0.0.1:8786", "only tcp:// addresses"), ("http://127.0.0.1:8787/", "web address")):
        r = subprocess.run([sys.executable, "-m", "animeid", "predict", str(generated_model.path),
                            str(_pictures(generated_model)[0]), "--out", str(tmp_path / "r.jsonl"), "--scheduler", addr],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        # no Dask client is made for them: none is left half-made to time out at exit ("Exception ignored in
        # Client.__del__ ... timed out after 10 s", as before)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr and "Exception" not in r.stderr
        assert not (tmp_path / "r.jsonl").exists()


def test_a_killed_runs_model_copy_is_removed_by_the_next_run(generated_model, client, tmp_path):
    """A driver killed with -9 never unregisters its model plugin, which kept a copy of the model's
    bytes in every worker for as long as the cluster lived; the next run removes such plugins (their
    client has left the scheduler) and leaves those of runs still connected."""
    from distributed.diagnostics.plugin import WorkerPlugin

    from animeid.batch import predict_files
    from animeid.predict import PredictConfig
    from animeid.remote import _PLUGIN_PREFIX

    class Held(WorkerPlugin):
        def __init__(self, name):
            self.name = name

    gone, live = f"{_PLUGIN_PREFIX}0123-dead@Client-gone", f"{_PLUGIN_PREFIX}4567-live@{client.id}"
    for name in (gone, live):
        client.register_plugin(Held(name), name=name)

    def names(dask_scheduler):
        return sorted(n for n in dask_scheduler.worker_plugins if n.startswith("animeid-model-"))

    assert client.run_on_scheduler(names) == sorted([gone, live])
    out = predict_files(generated_model.path, _pictures(generated_model)[:2], tmp_path / "p.jsonl",
                        cfg=PredictConfig(detector="animeface"), client=client)
    assert out["done"] == 2
    assert client.run_on_scheduler(names) == [live], "the orphan went, the live run's stayed, this run's own went"
    client.unregister_worker_plugin(live)


def test_the_orphan_finder_runs_on_a_scheduler_without_animeid(tmp_path):
    """Dask sends run_on_scheduler's function pickled; one of animeid's own modules would be sent by
    reference and fail on a scheduler without animeid (only the driver and the workers need it)."""
    import cloudpickle

    from animeid.remote import _PLUGIN_PREFIX, _orphan_finder

    blob = tmp_path / "finder.pkl"
    blob.write_bytes(cloudpickle.dumps(_orphan_finder(_PLUGIN_PREFIX)))
    code = ("import pickle, sys, types\n"
            "sys.modules['animeid'] = None\n"
            f"fn = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
            "s = types.SimpleNamespace(clients={'Client-a': 1}, worker_plugins={\n"
            "    'animeid-model-1-x@Client-a': 0, 'animeid-model-2-y@Client-b': 0, 'other@Client-b': 0})\n"
            "print(fn(s))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "['animeid-model-2-y@Client-b']", r.stderr
