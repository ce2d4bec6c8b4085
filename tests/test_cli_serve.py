"""`animeid serve` and `animeid timeline` through the real command (animeid/cli_serve.py): a real
server started and stopped with Ctrl-C, addresses it cannot listen on, several videos with one
unreadable, the --png rule for several videos.

Drawn model (``generated_model``, tests/conftest.py) and videos of blank frames: no ../shared/data.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from PIL import Image


def _animeid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "animeid", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_timeline_png_with_several_videos_is_refused_before_anything_is_read(tmp_path):
    r = _animeid("timeline", str(tmp_path / "none.animeid"), "a.mp4", "b.mp4", "--png", "x.png", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("animeid timeline: error: argument --png: only with one video (several get "
                        "VIDEO-NAME.timeline.png each)\n")
    assert list(tmp_path.iterdir()) == []


def test_serve_on_an_address_not_of_this_machine_says_so(generated_model):
    pytest.importorskip("uvicorn")
    r = _animeid("serve", str(generated_model.path), "--host", "192.0.2.1", "--port", "0")   # TEST-NET-1
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "animeid serve: error: cannot listen on 192.0.2.1:0: Cannot assign requested address\n"


def test_serve_on_ipv6_loopback_with_a_workspace_says_where_and_stops_on_ctrl_c(generated_model, tmp_path):
    """The real server: its lines (the URL with the port the system chose for --port 0, the label page,
    where enrolments are saved), /health answered, Ctrl-C ends it cleanly (exit 130, as any Ctrl-C)."""
    pytest.importorskip("uvicorn")
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"this machine has no IPv6 loopback ({e.strerror})")
    from animeid.dataset import Workspace
    from animeid.predict import Recognizer

    rec = Recognizer.load(generated_model.path)
    with Workspace(tmp_path / "ws", create=True):
        pass
    # -v: uvicorn says when the app is ready (the socket listens from the start: an early request waits)
    p = subprocess.Popen([sys.executable, "-m", "animeid", "-v", "serve", str(generated_model.path), "--host", "::1",
                          "--port", "0", "--workspace", str(tmp_path / "ws"), "--save-enrollments"],
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or "Application startup complete" not in lines[-1]:
            lines.append(p.stderr.readline())
            assert lines[-1], f"the server ended before it was ready: {lines}"
        head = f"animeid: {rec.method} model with {len(rec.labels)} characters; open http://[::1]:"
        [first] = [x for x in lines if x.startswith(head)]
        assert first.endswith("/ (label faces at /label), API docs at /docs\n"), first
        port = int(first[len(head):].split("/")[0])
        assert port != 0
        assert lines[lines.index(first) + 1] == \
            f"animeid: enrolments and forgets through the API are saved to {generated_model.path}\n"
        assert not any("warning" in x for x in lines), lines                # ::1 is this machine
        with urllib.request.urlopen(f"http://[::1]:{port}/health", timeout=60) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(120)
        rest = p.stderr.read()
        p.stderr.close()
    # uvicorn shuts down cleanly, then animeid ends as for any Ctrl-C: one line, exit 130
    assert (rc, rest.splitlines()[-1]) == (130, "animeid: interrupted") and "Traceback" not in rest, rest
    assert "Application shutdown complete" in rest


def test_several_videos_one_unreadable_each_said_and_drawn(generated_model, tmp_path):
    """Videos one after the other: each summarised (and drawn as VIDEO.timeline.png here); an
    unreadable one said on stderr, the others still read; exit 1."""
    pytest.importorskip("av")
    from animeid.video import write_video

    blank = Image.new("RGB", (320, 240), (200, 200, 200))
    write_video([blank] * 4, tmp_path / "quiet.mp4", fps=2.0)          # 2 s: frames at 0 and 1 s
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    r = _animeid("timeline", str(generated_model.path), "quiet.mp4", "broken.mp4", "--every", "1",
                 "--detector", "animeface", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stdout == "quiet.mp4: 2 frames (one every 1 s), 0 characters\ntimeline: quiet.timeline.png\n"
    assert r.stderr.startswith("animeid: broken.mp4: ") and "not a readable video" in r.stderr, r.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["broken.mp4", "quiet.mp4", "quiet.timeline.png"]
    with Image.open(tmp_path / "quiet.timeline.png") as im:
        assert im.format == "PNG"

    r = _animeid("timeline", str(generated_model.path), "quiet.mp4", "quiet.mp4", "--every", "1", "--json",
                 "--no-png", "--detector", "animeface", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    a, b = (json.loads(x) for x in r.stdout.splitlines())
    assert a == b and (a["characters"], a["png"], len(a["frames"]), a["partial"]) == ({}, None, 2, False)
    r = _animeid("timeline", str(generated_model.path), "quiet.mp4", "--every", "1", "--no-png",
                 "--detector", "animeface", cwd=tmp_path)                # one video: read in this process
    assert (r.returncode, r.stdout, r.stderr) == (0, "quiet.mp4: 2 frames (one every 1 s), 0 characters\n", "")


def test_which_hosts_get_the_no_authentication_warning():
    from animeid.cli_serve import _loopback

    assert [_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert [_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "my-pc.local")] == [False] * 4
