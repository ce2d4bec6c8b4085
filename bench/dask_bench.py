"""Collect and predict locally and on a Dask cluster of this machine, as a user runs them, with a
scaling estimate to N machines from the measured per-segment and driver times (issue 14).

    .venv/bin/python bench/dask_bench.py MODEL.animeid [--videos 2] [--seconds 60] [--every 0.5] [--crops 1000]

Collect: ``animeid collect VIDEOS --workspace WS --every E --keep-similar`` on ``--videos`` 1920x1080
H.264 videos of real illustrations (``bench/collect_bench.py``'s video, made once in bench/out/; three
detect-tadne pictures side by side, a new trio every 5 s), into a fresh workspace per run: locally
with ``--workers 1`` and ``2``, then with ``--scheduler`` against a real ``dask scheduler`` and 1 and 2
``dask worker --nthreads 1`` processes on 127.0.0.1 (started before the timing, as a user's cluster
is). Predict: ``animeid predict MODEL CROPS --out results.jsonl`` over ``--crops`` holoen16-dev face
crops (linked into a temporary folder), the same four ways. Every command is timed from its start to
its exit; the driver's CPU seconds (the animeid command's own process: decoding nothing, writing the
manifest, crops and results) come from ``wait4``.

Per-task overhead: 300 no-op tasks one after another (submit, wait) and 3,000 at once (``map`` and
``gather``) on the 2-worker cluster. Scaling estimate: the workers' compute seconds per frame (the
scheduler's task stream of the 2-worker collect) and the driver's CPU seconds per frame give
``frames/s(N) = min(N * W / worker_s_per_frame, 1 / driver_s_per_frame)`` for N machines of W
single-threaded workers: an upper bound that leaves out the network, a shared folder's reads and
stragglers. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from collect_bench import build_video  # noqa: E402

BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "out" / "dask"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """``(wall seconds, the process's own CPU seconds, stderr tail)`` of a command; exits on failure."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err[-800:]}")
    return wall, usage.ru_utime + usage.ru_stime, err[-300:]


class Cluster:
    """A real ``dask scheduler`` and ``n`` single-threaded ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, n: int, log_dir: Path):
        import distributed

        self.address = f"tcp://127.0.0.1:{_free_port()}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                        self.address.rsplit(":", 1)[1], "--dashboard-address", "127.0.0.1:0"],
                                       stdout=open(log_dir / "scheduler.log", "wb"), stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)]
        t = time.perf_counter()
        for i in range(n):
            self.procs.append(subprocess.Popen([str(BIN / "dask"), "worker", self.address, "--nthreads", "1",
                                                "--dashboard-address", "127.0.0.1:0", "--memory-limit", "0"],
                                               stdout=open(log_dir / f"worker{i}.log", "wb"),
                                               stderr=subprocess.STDOUT, env=env, start_new_session=True))
        deadline = time.time() + 60
        while True:
            try:
                self.client = distributed.Client(self.address, timeout=5, set_as_default=False)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.client.wait_for_workers(n, timeout=60)
        self.start_s = time.perf_counter() - t
        self.client.get_task_stream(count=1)          # the scheduler records the task stream from here on

    def compute_seconds(self, since: float, prefix: str) -> tuple[float, int]:
        """(seconds of compute, tasks) of the tasks whose key starts with ``prefix`` since ``since``."""
        total, n = 0.0, 0
        for rec in self.client.get_task_stream(start=since):
            if str(rec["key"]).strip("('").startswith(prefix):
                for ss in rec["startstops"]:
                    if ss["action"] == "compute":
                        total += ss["stop"] - ss["start"]
                n += 1
        return total, n

    def close(self) -> None:
        self.client.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _noop(x):
    return x


def task_overhead(client) -> tuple[float, float]:
    """(ms a task one after another, ms a task when 3,000 are submitted at once)."""
    client.submit(_noop, -1, pure=False).result()
    t = time.perf_counter()
    for i in range(300):
        client.submit(_noop, i, pure=False).result()
    one = (time.perf_counter() - t) / 300 * 1000
    t = time.perf_counter()
    client.gather(client.map(_noop, range(3000), pure=False))
    many = (time.perf_counter() - t) / 3000 * 1000
    return one, many


def frames_and_faces(ws: Path) -> tuple[int, int]:
    con = sqlite3.connect(ws / "manifest.sqlite")
    try:
        n, faces = con.execute("SELECT COUNT(*), SUM(n_faces + n_duplicates) FROM items").fetchone()
    finally:
        con.close()
    return int(n), int(faces or 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--crops", type=int, default=1000)
    ap.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    base = ROOT / "bench" / "out" / f"tadne_1080p_{a.seconds}s.mp4"
    if not base.exists():
        build_video(base, a.seconds)
    videos = []
    for i in range(a.videos):                 # links: one file, several sources (their crops are near-duplicates)
        v = OUT / f"episode{i + 1}.mp4"
        if not v.exists():
            os.link(base, v)
        videos.append(str(v))
    from animeid.images import iter_image_files

    files = list(iter_image_files([DATA / "holoen16-dev"]))
    files = files[:: max(1, len(files) // a.crops)][:a.crops]
    crops = Path(tempfile.mkdtemp(prefix="dask-bench-crops-"))
    for i, f in enumerate(files):
        (crops / f"{i:05d}{f.suffix}").symlink_to(f.resolve())
    animeid = str(BIN / "animeid")
    load0 = os.getloadavg()[0]
    collect_rows, predict_rows, scaling = [], [], {}
    overhead = None

    def run_collect(label, extra):
        ws = OUT / "ws"
        shutil.rmtree(ws, ignore_errors=True)
        wall, cpu, _ = timed([animeid, "collect", *videos, "--workspace", str(ws), "--every", str(a.every),
                              "--keep-similar", *extra])
        n, faces = frames_and_faces(ws)
        collect_rows.append((label, n, faces, wall, cpu))
        return n, wall, cpu

    def run_predict(label, extra):
        out = OUT / "results.jsonl"
        out.unlink(missing_ok=True)
        wall, cpu, _ = timed([animeid, "predict", str(a.model), str(crops), "--out", str(out), *extra])
        n = sum(1 for line in out.read_text().splitlines() if line.strip())
        predict_rows.append((label, n, wall, cpu))

    try:
        for w in (1, 2):
            run_collect(f"local, `--workers {w}`", ["--workers", str(w)])
        run_predict("local (one process)", [])
        for n in (1, 2):
            cl = Cluster(n, OUT)
            try:
                since = time.time()
                frames, wall, cpu = run_collect(f"Dask, {n} worker process{'es' if n > 1 else ''}",
                                                ["--scheduler", cl.address])
                seg_s, seg_n = cl.compute_seconds(since, "_segment_task")
                run_predict(f"Dask, {n} worker process{'es' if n > 1 else ''}", ["--scheduler", cl.address])
                if n == 2:
                    overhead = task_overhead(cl.client)
                    scaling = dict(frames=frames, seg_s=seg_s, seg_n=seg_n, driver_cpu=cpu, wall=wall,
                                   start_s=cl.start_s)
            finally:
                cl.close()
    finally:
        shutil.rmtree(crops, ignore_errors=True)

    print(f"Collect: {a.videos} videos of {a.seconds} s, 1920x1080, sampled every {a.every:g} s, every sample "
          f"detected (`--keep-similar`); load average at the start {load0:.1f}, at the end "
          f"{os.getloadavg()[0]:.1f}.\n")
    print("| collect | frames | faces | seconds | frames/s | faces/s | CPU s of the command (locally with its "
          "worker processes) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, faces, wall, cpu in collect_rows:
        print(f"| {label} | {n} | {faces} | {wall:.1f} | {n / wall:.2f} | {faces / wall:.1f} | {cpu:.1f} |")
    print(f"\n| predict over {a.crops} face crops | pictures | seconds | faces/s | CPU s of the command |")
    print("|---|---:|---:|---:|---:|")
    for label, n, wall, cpu in predict_rows:
        print(f"| {label} | {n} | {wall:.1f} | {n / wall:.1f} | {cpu:.1f} |")
    if overhead:
        print(f"\nPer-task overhead on the 2-worker cluster: {overhead[0]:.2f} ms a task one after another, "
              f"{overhead[1]:.2f} ms a task with 3,000 submitted at once. Cluster start (scheduler and 2 "
              f"workers until both joined): {scaling['start_s']:.1f} s.")
    if scaling:
        f = scaling["frames"]
        w_pf = scaling["seg_s"] / f
        d_pf = scaling["driver_cpu"] / f
        print(f"\nScaling estimate from the 2-worker collect: {scaling['seg_n']} segment tasks, workers' compute "
              f"{scaling['seg_s']:.1f} s for {f} frames = {w_pf * 1000:.0f} ms a frame; the driver's CPU "
              f"{scaling['driver_cpu']:.1f} s = {d_pf * 1000:.0f} ms a frame (start, probing, manifest and crop "
              f"writes): the driver alone caps collect at {1 / d_pf:.0f} frames/s.\n")
        print(f"| machines (2 single-threaded workers each) | frames/s (bound) | limited by | "
              f"video read, times real time (a frame every {a.every:g} s) |")
        print("|---:|---:|---|---:|")
        for m in a.machines:
            work = m * 2 / w_pf
            rate = min(work, 1 / d_pf)
            print(f"| {m} | {rate:.1f} | {'workers' if work < 1 / d_pf else 'the driver (SQLite writer)'} | "
                  f"{rate * a.every:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
