"""Latency and throughput of ``POST /api/v1/recognize`` on a real uvicorn server on 127.0.0.1.

    .venv/bin/python bench/serve_bench.py [--model M.animeid] [--requests 200] [--concurrency 1 8]

Pictures: a real 128x128 face crop (``holoen16-dev``) and a 640x360 picture (a real
``detect-tadne`` illustration, resized and centre-cropped). Without ``--model``, a logistic
model is trained once on ``newgame8-faces96`` into ``bench/out/`` (which names do not matter for
timing). Each (picture, concurrency) cell: 10 warm-up requests, then ``--requests`` requests
from ``concurrency`` client threads (urllib, one request at a time each); latency is measured
per request by the client. Traffic goes to loopback only; every loop is bounded.
For comparison, each picture is also named by ``Recognizer.predict`` in-process, one at a time
(``--requests / 4`` calls): the difference is the cost of HTTP, multipart parsing and JSON.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _pictures() -> dict[str, bytes]:
    from PIL import Image

    face = sorted((DATA / "holoen16-dev").rglob("*.jpg"))[0]
    illus = sorted((DATA / "detect-tadne").glob("*.jpg"))[0]
    img = Image.open(illus).convert("RGB").resize((640, 640), Image.Resampling.LANCZOS).crop((0, 140, 640, 500))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return {f"face crop 128x128 ({face.parent.name}/{face.name})": face.read_bytes(),
            f"picture 640x360 ({illus.name}, cropped)": buf.getvalue()}


def _model(path: str | None) -> Path:
    if path:
        return Path(path)
    out = ROOT / "bench" / "out" / "serve-bench.animeid"
    if not out.is_file():
        from animeid.train import train

        print(f"training a logistic model on newgame8 into {out} ...", file=sys.stderr)
        train(DATA / "newgame8-faces96", out, method="logistic", progress=False)
    return out


def _run(url: str, body: bytes, ctype: str, n: int, concurrency: int) -> tuple[list[float], int, float]:
    def one(_):
        req = urllib.request.Request(url + "/api/v1/recognize", data=body, headers={"Content-Type": ctype})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                ok = r.status == 200 and json.loads(r.read())["faces"] is not None
        except Exception:  # noqa: BLE001 - counted, not fatal
            ok = False
        return time.perf_counter() - t0, ok

    with cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(10)))                                   # warm-up
        t0 = time.perf_counter()
        res = list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    return [r[0] for r in res], sum(not r[1] for r in res), wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    a = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"bench: {DATA} is absent (real data beside the repo)", file=sys.stderr)
        return 1

    from animeid.serve import create_app, encode_multipart, serve_in_thread

    model = _model(a.model)
    pics = _pictures()
    rows = []
    app = create_app(model, preload=True)
    rec = app.state.animeid.recognizer
    with serve_in_thread(app) as url:
        for name, data in pics.items():
            lat = []                                         # the same work without HTTP, for comparison
            for i in range(10 + a.requests // 4):
                t0 = time.perf_counter()
                rec.predict(data)
                if i >= 10:
                    lat.append(time.perf_counter() - t0)
            q = statistics.quantiles(lat, n=100)
            rows.append((name, "library call, no HTTP", len(lat), 1000 * statistics.median(lat), 1000 * q[94],
                         len(lat) / sum(lat), 0))
            body, ctype = encode_multipart([("image", "bench.jpg", data, "image/jpeg")])
            for c in a.concurrency:
                lat, errors, wall = _run(url, body, ctype, a.requests, c)
                q = statistics.quantiles(lat, n=100)
                rows.append((name, c, a.requests, 1000 * statistics.median(lat), 1000 * q[94], a.requests / wall,
                             errors))
                print(f"  {name}, concurrency {c}: done", file=sys.stderr, flush=True)
    print(f"`POST /api/v1/recognize` on 127.0.0.1, model {model.name}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"ANIMEID_ORT_THREADS={os.environ.get('ANIMEID_ORT_THREADS', 'unset')}\n")
    print("| picture | concurrency | requests | p50 ms | p95 ms | requests/s | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c, n, p50, p95, rps, err in rows:
        print(f"| {name} | {c} | {n} | {p50:.0f} | {p95:.0f} | {rps:.1f} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
