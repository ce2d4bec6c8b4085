"""``animeid serve`` (the web app) and ``animeid timeline`` (who appears when in a video): flags -> API calls."""
from __future__ import annotations

import ipaddress
import signal
import sys
from pathlib import Path

from ._util import plural, print_json

__all__ = ["add_commands"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(a) -> int:
    try:
        import uvicorn

        from .serve import create_app
    except ImportError as e:
        print(f"animeid: serve needs the web extras: pip install 'animeid[serve]' ({e})", file=sys.stderr)
        return 1
    app = create_app(a.model, a.workspace, max_upload_mb=a.max_upload_mb, max_video_mb=a.max_video_mb, preload=True,
                     save_enrollments=a.save_enrollments, detector=a.detector)
    rec = app.state.animeid.recognizer
    sock = _listen(a.host, a.port)              # a port in use is said before anything else
    if not _loopback(a.host):
        print(f"animeid: warning: listening on {a.host}: the server has no authentication; anyone who can reach "
              "this address can use it" + (" and rename the workspace's faces" if a.workspace else ""), file=sys.stderr)
    shown = f"[{a.host}]" if ":" in a.host else a.host
    port = sock.getsockname()[1]                # --port 0: the port the system chose, not 0
    print(f"animeid: {rec.method} model with {len(rec.labels)} characters; "
          f"open http://{shown}:{port}/" + (" (label faces at /label)" if a.workspace else "")
          + ", API docs at /docs", file=sys.stderr, flush=True)
    if a.save_enrollments:
        print(f"animeid: enrolments and forgets through the API are saved to {a.model}", file=sys.stderr, flush=True)
    server = _make_server(uvicorn.Config(app, log_level="info" if a.verbose else "warning", access_log=a.verbose))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.interrupted:   # uvicorn raises Ctrl-C again after its clean shutdown, but asyncio can lose it
        raise KeyboardInterrupt
    return 0


def _make_server(config):
    """uvicorn's server for ``config``, remembering a Ctrl-C (``.interrupted``): uvicorn shuts down
    cleanly on it and then raises the signal again, which asyncio's runner can swallow when its main
    task has ended first (seen under load: exit 0 instead of 130); :func:`cmd_serve` then ends as for
    any Ctrl-C."""
    import uvicorn

    class Server(uvicorn.Server):
        interrupted = False

        def handle_exit(self, sig, frame):
            if sig == signal.SIGINT:
                self.interrupted = True
            super().handle_exit(sig, frame)

    return Server(config)


def _listen(host: str, port: int):
    """A socket bound to ``host:port`` and listening, for uvicorn; :class:`~animeid.errors.AnimeidError`
    naming the address when it cannot be (in use, not this machine's, no permission)."""
    import errno
    import socket

    from .errors import AnimeidError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = "the port is in use (another server?); pick another with --port" if e.errno == errno.EADDRINUSE else (e.strerror or e)
        raise AnimeidError(f"cannot listen on {host}:{port}: {why}") from None
    # listening from here on: a browser opening the printed address while the app still starts waits
    # in the queue instead of being refused (uvicorn says 'startup complete' before it serves a socket)
    sock.listen(2048)
    return sock


def _timeline_png(video: str) -> str:
    """The timeline picture's default name: ``<video stem>.timeline.png`` beside the current folder."""
    from .names import safe_filename

    return safe_filename(Path(video).stem, ".timeline.png")


def cmd_timeline(a) -> int:
    if len(a.videos) > 1 and a.png:
        print("animeid timeline: error: argument --png: only with one video (several get VIDEO-NAME.timeline.png each)",
              file=sys.stderr)
        return 2
    if len(a.videos) > 1 or a.scheduler:
        return _timelines(a)
    a.video = a.videos[0]
    return _timeline(a)


def _timelines(a) -> int:
    """Several videos, or a cluster (one task per video): each printed (and drawn) as it comes, in order."""
    from .batch import timelines
    from .outputs import is_animeid_png, prepare_output_file
    from .predict import PredictConfig
    from .timeline import plot_timeline

    pngs = {}
    if not a.no_png:
        for v in a.videos:
            pngs[v] = prepare_output_file(a.png or _timeline_png(v), own=is_animeid_png, suffix=".png", what="a timeline picture",
                                          overwrite=True, option="--png")
    failed = 0
    cfg = PredictConfig(threshold=a.threshold, detector=a.detector, detect="always")
    for video, tl in timelines(a.model, a.videos, every=a.every, cfg=cfg, client=a.scheduler or None):
        if isinstance(tl, str):
            failed += 1
            print(f"animeid: {tl}", file=sys.stderr)
            continue
        png = plot_timeline(tl, a.png or _timeline_png(video)) if not a.no_png else None
        failed += _show_timeline(a, video, tl, png)
    return 1 if failed else 0


def _show_timeline(a, video: str, tl: dict, png: Path | None) -> int:
    """Print one video's timeline (JSON or a summary) and its error if partial; 1 when partial."""
    from .timeline import summary_lines

    if tl["partial"]:
        # the error says which frames were read: those before a break, or before and after damaged data
        print(f"animeid: {video}: {tl['error']}", file=sys.stderr)
    if a.json:
        print_json({**tl, "png": str(png) if png else None})
    else:
        print(f"{video}: {plural(len(tl['frames']), 'frame')} (one every {a.every:g} s), "
              f"{plural(len(tl['characters']), 'character')}")
        for line in summary_lines(tl):
            print("  " + line)
        if png:
            print(f"timeline: {png}")
    return 1 if tl["partial"] else 0


def _timeline(a) -> int:
    from .predict import PredictConfig
    from .timeline import build_timeline, plot_timeline

    if not a.no_png:         # checked before the video is read: a file there that animeid did not draw is refused
        from .outputs import is_animeid_png, prepare_output_file

        prepare_output_file(a.png or _timeline_png(a.video), own=is_animeid_png, suffix=".png",
                            what="a timeline picture", overwrite=True, option="--png")
    bar = None
    if sys.stderr.isatty() and not a.json:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="s", desc=Path(a.video).name, leave=False, dynamic_ncols=True,
                   bar_format="{desc}: {n:.0f}/{total_fmt} s of video {bar} {elapsed}")

    def progress(done: float, duration: float | None, frames: int) -> None:
        if bar is not None:
            if duration and bar.total is None:
                bar.total = round(duration)
            bar.n = done
            bar.refresh()

    try:
        tl = build_timeline(a.model, a.video, every=a.every, progress=progress,
                            cfg=PredictConfig(threshold=a.threshold, detector=a.detector, detect="always"))
    finally:
        if bar is not None:
            bar.close()
    png = plot_timeline(tl, a.png or _timeline_png(a.video)) if not a.no_png else None
    return _show_timeline(a, a.video, tl, png)


def add_commands(sub) -> None:
    from . import options as o

    p = sub.add_parser("serve", help="the web app: recognise pictures, video timelines, label a workspace, JSON API")
    p.add_argument("model", help="model file (.animeid)")
    p.add_argument("--workspace", "-w", help="workspace whose unlabeled faces the label page shows")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=o.whole(0, 65535).arg("--port"), default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=o.MEGABYTES.arg("--max-upload-mb"), default=20,
                   help="largest picture upload in MB (default 20)")
    p.add_argument("--max-video-mb", type=o.MEGABYTES.arg("--max-video-mb"), default=500,
                   help="largest video upload in MB (default 500)")
    from .cli import renamed

    p.add_argument("--save-enrollments", "--save-enrolments", dest="save_enrollments", nargs=0, const=True,
                   default=False, action=renamed("--save-enrollments", "--save-enrolments"),
                   help="write MODEL (atomically) after each enrolment or forget through the API, so that it "
                        "survives a restart (default: such changes live in the server's memory only; "
                        "--save-enrolments is the older spelling)")
    p.add_argument("--detector", type=o.detector().arg("--detector"), default=None, metavar="NAME|FILE",
                   help="face detector: 'default' (animeid's learned detector), 'animeface', or a detector file")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("timeline", help="who appears when in a video: time ranges per character and a PNG")
    p.add_argument("model", help="model file (.animeid)")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (several: one after the other, "
                   "or one task each with --scheduler)")
    p.add_argument("--every", type=o.SECONDS.arg("--every"), default=2.0,
                   help="seconds between sampled frames (default 2)")
    from .cli_detect import add_detector_opts

    add_detector_opts(p)
    p.add_argument("--png", help="where to draw the timeline (default VIDEO-NAME.timeline.png here); an existing "
                                 "file there is replaced only when animeid drew it")
    p.add_argument("--no-png", action="store_true", help="draw no picture")
    p.add_argument("--json", action="store_true", help="print one JSON object (ranges per character and frames) "
                   "per video, one a line")
    from .cli import add_scheduler_opt

    add_scheduler_opt(p, "one task per video on its workers (the model is sent once to each; the videos must be "
                         "readable by every worker at the same path)")
    p.set_defaults(func=cmd_timeline)
