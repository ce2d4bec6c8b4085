"""Past one machine: collect, batch prediction and timelines on a Dask cluster (``animeid[distributed]``).

A cluster is a Dask scheduler and workers started by the user::

    dask scheduler                              # on one machine: listens on tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1    # on each machine, as many as wanted

and animeid is given its address (``--scheduler tcp://HOST:8786``, ``$ANIMEID_SCHEDULER``, or a
``dask.distributed.Client`` / an address as ``client=`` in Python). What runs where:

* the *workers* decode, detect, crop, hash and name: every input must be readable by every worker
  under the same path as on the driver (a shared folder); a worker that cannot read a file says so,
  naming itself, and that file is reported as failed;
* the *driver* (the animeid command) stays the only writer of its outputs: a workspace's
  ``manifest.sqlite`` and crops (near-duplicate removal, atomic crop writes, one commit per frame, in
  the same order as a local run, so the workspace is the same as a local run's and stays resumable),
  or a predict results file (lines in input order).

Videos are cut into segments of :attr:`~animeid.dataset.CollectConfig.segment_frames` sampled
frames, one task each, so that one long episode spreads over many workers; the similar-frame chain
starts again at each segment border, locally as well (:func:`animeid.video.sample_frames`'s
``similar_restart``), so both give the same frames. A model is read once on the driver and its bytes
shipped once to each worker (``Client.scatter(..., broadcast=True)``), where it is loaded once per
worker process and kept (a worker needs no copy of the model file).

Every worker must run the same animeid version as the driver: checked when connecting and again by
each task. A worker that dies mid-task has its task run again elsewhere by Dask.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ._util import log
from ._version import __version__
from .errors import AnimeidError

__all__ = ["ClusterError", "SCHEDULER_ENV", "connect", "Cluster"]

#: the environment variable the CLI reads for ``--scheduler``'s default
SCHEDULER_ENV = "ANIMEID_SCHEDULER"
#: seconds to wait for a scheduler to answer, and for a first worker to join it
CONNECT_TIMEOUT = 5.0
WORKER_TIMEOUT = 60.0
EXTRA = "pip install 'animeid[distributed]'"


class ClusterError(AnimeidError):
    """The Dask cluster cannot be used: Dask is not installed, the scheduler does not answer, it has no
    workers, a worker runs another animeid, or a task failed on every worker it was tried on."""


def _dask():
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"running on a cluster needs Dask distributed, which is not installed: {EXTRA}") from None
    return distributed


# --------------------------------------------------------------------------- worker side

def _worker_version() -> str:
    return __version__


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this machine"


def _check_version(expected: str) -> None:
    """Every task starts with this: a worker with another animeid refuses the work, saying so."""
    if __version__ != expected:
        raise ClusterError(f"{_worker_name()} runs animeid {__version__}, the driver {expected}: install the same "
                           f"animeid version on every worker")


def _unreadable(path: str | os.PathLike) -> str | None:
    """Why a worker cannot read an input (None when it can), naming the worker (not the file)."""
    p = Path(path)
    if p.is_file() and os.access(p, os.R_OK):
        return None
    why = "no such file" if not p.exists() else ("not a file" if not p.is_file() else "permission denied")
    return (f"cannot be read on {_worker_name()} ({why}); inputs must lie on a path every worker "
            f"can read (a shared folder mounted at the same place)")


def _detect_jobs_task(jobs: list, cfg: Any, version: str) -> list:
    """Pictures (or frames of animated pictures): one detection job each, as the local pool runs them."""
    from .dataset import _detect_job, _Result

    _check_version(version)
    out = []
    for job in jobs:
        why = _unreadable(job.path) if job.path is not None else None
        out.append(_Result([], f"{job.path}: {why}") if why else _detect_job(job, cfg))
    return out


def _probe_task(path: str, version: str) -> tuple[float | None, str | None]:
    """``(duration, None)`` for a video, ``(None, why)`` when this worker cannot read it or it is no video."""
    from .errors import InputError
    from .video import probe

    _check_version(version)
    why = _unreadable(path)
    if why:
        return None, why
    try:
        return probe(path).duration, None
    except InputError as e:
        return None, e.message


def _segment_task(path: str, source_id: int, index: int, start: float, stop: float | None, done_ms: list[int],
                  cfg: Any, version: str) -> tuple[list, str | None]:
    """One segment of a video: its sampled frames (those not done already), each detected, cropped
    and hashed. Returns ``([(job without picture, result), ...], error or None)``; an error met in a
    segment after the first one that yielded no frame (a segment after the video's real end) is no error."""
    from .dataset import _detect_job, _DetectJob, _time_key
    from .errors import InputError
    from .video import sample_frames

    _check_version(version)
    why = _unreadable(path)
    if why:
        return [], why
    out: list = []
    known = [ms / 1000 for ms in done_ms]
    error = None
    try:
        for fr in sample_frames(path, cfg.every, start=start, stop=stop, skip_similar=cfg.skip_similar_frames,
                                similar_restart=cfg.every * cfg.segment_frames, skip_times=known):
            job = _DetectJob(source_id, _time_key(fr.time), round(fr.time, 3), None, image=fr.image)
            res = _detect_job(job, cfg)
            job.image = None
            out.append((job, res))
    except InputError as e:
        if index == 0 or out:
            error = e.message
    return out, error


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


_MODEL_BYTES: dict[str, bytes] = {}
_MODEL_USERS: dict[str, int] = {}


def _keep_model(sha: str, data: bytes | None) -> None:
    """On a worker: one more run using the model ``sha`` (its ``data``), or (None) one fewer; its bytes
    and loaded copy are dropped when no run uses it (two runs of one model may share a cluster)."""
    with _MODELS_LOCK:
        if data is not None:
            _MODEL_BYTES[sha] = data
            _MODEL_USERS[sha] = _MODEL_USERS.get(sha, 0) + 1
            return
        _MODEL_USERS[sha] = _MODEL_USERS.get(sha, 1) - 1
        if _MODEL_USERS[sha] <= 0:
            for d in (_MODEL_BYTES, _MODELS, _MODEL_USERS):
                d.pop(sha, None)


def _worker_model(sha: str) -> Any:
    """The model the driver registered for every worker (:meth:`Cluster.ship`), loaded once per
    worker process and kept by its SHA-256 while a run uses it."""
    from .predict import Recognizer

    with _MODELS_LOCK:
        rec = _MODELS.get(sha)
        if rec is None:
            data = _MODEL_BYTES.get(sha)
            if data is None:
                raise ClusterError(f"the model did not reach {_worker_name()}: run the command again")
            fd, name = tempfile.mkstemp(prefix="animeid-model-", suffix=".animeid")
            try:                      # read whole by the loader: the file goes at once
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                rec = _MODELS[sha] = Recognizer.load(name)
            finally:
                os.unlink(name)
        return rec


#: the names of the model plugins animeid registers start so; ``@`` and the run's Dask client id end them
_PLUGIN_PREFIX = "animeid-model-"


def _model_plugin(data: bytes, sha: str, client_id: str) -> Any:
    """A Dask worker plugin that hands the model's bytes to every worker, those that join later or
    replace a dead one included (data scattered to the workers instead is lost with a dead worker,
    and the tasks needing it are cancelled). Named for this run alone (``client_id``: its Dask
    client's id, which ends the name): another run of the same model on the cluster registers its
    own, and each run's end removes only its own (a run killed before its end: :func:`_drop_orphans`)."""
    import uuid

    from distributed.diagnostics.plugin import WorkerPlugin

    class AnimeidModel(WorkerPlugin):
        def __init__(self, data: bytes, sha: str):
            self.data, self.sha = data, sha
            self.name = f"{_PLUGIN_PREFIX}{sha[:16]}-{uuid.uuid4().hex[:12]}@{client_id}"

        def setup(self, worker: Any) -> None:
            from animeid.remote import _keep_model

            _keep_model(self.sha, self.data)

        def teardown(self, worker: Any) -> None:
            from animeid.remote import _keep_model

            _keep_model(self.sha, None)

    return AnimeidModel(data, sha)


def _orphan_finder(prefix: str) -> Callable[[Any], list[str]]:
    """A function to run on the scheduler (``run_on_scheduler``): the names of animeid's model plugins
    (``prefix``...``@CLIENT``) whose run's client is no longer connected to it, as a driver killed with
    -9 never removed its own. Made here, in a closure, so that Dask sends the function itself: the
    scheduler need not have animeid installed (a module-level function is sent by reference and
    failed there with ``No module named 'animeid.remote'``)."""

    def orphans(dask_scheduler: Any) -> list[str]:
        live = set(dask_scheduler.clients)
        return [n for n in dask_scheduler.worker_plugins
                if n.startswith(prefix) and "@" in n and n.rsplit("@", 1)[1] not in live]

    return orphans


def _drop_orphans(client: Any) -> list[str]:
    """Unregister the model plugins of runs that left without removing them (:func:`_orphan_finder`):
    each held a copy of a model's bytes in every worker's memory, for as long as the cluster lived.
    Returns their names; a scheduler that cannot be asked is left as it is."""
    try:
        names = list(client.run_on_scheduler(_orphan_finder(_PLUGIN_PREFIX)))
    except Exception:       # noqa: BLE001 - housekeeping only: the run itself goes on
        return []
    for name in names:
        try:
            client.unregister_worker_plugin(name)
        except Exception:   # noqa: BLE001 - removed meanwhile by another run's cleanup
            pass
    return names


def _predict_task(sha: str, files: list[str], cfg: Any, version: str) -> list:
    """``(file, result or error message)`` per file (absolute paths); the record names the file, the
    message does not."""
    from .batch import predict_chunk

    _check_version(version)
    rec = _worker_model(sha)
    bad = {f: _unreadable(f) for f in files}
    readable = [f for f in files if not bad[f]]
    got = dict(predict_chunk(rec, readable, cfg))
    return [(f, bad[f] or got[f]) for f in files]


def _timeline_task(sha: str, video: str, every: float, cfg: Any, version: str) -> Any:
    from .errors import InputError
    from .timeline import build_timeline

    _check_version(version)
    why = _unreadable(video)
    if why:
        return f"{video}: {why}"
    try:
        return build_timeline(_worker_model(sha), video, every=every, cfg=cfg)
    except InputError as e:
        return str(e)


# --------------------------------------------------------------------------- driver side

class Cluster:
    """A connected, checked Dask client and the work animeid sends it (results always in input order)."""

    def __init__(self, client: Any, owned: bool):
        self.client = client
        self.owned = owned

    def close(self) -> None:
        if self.owned:
            self.client.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def threads(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:       # noqa: BLE001 - only a sizing hint
            return 1

    def result(self, future: Any) -> Any:
        """A task's result; a failure on the cluster (not the input's) as :class:`ClusterError`."""
        distributed = _dask()
        try:
            return future.result()
        except ClusterError:
            raise
        except distributed.KilledWorker as e:
            raise ClusterError(f"a task failed on every worker it was tried on (each died running it): {e}") from None
        except (OSError, distributed.TimeoutError, distributed.CancelledError) as e:
            raise ClusterError(f"lost the scheduler at {self.address} ({type(e).__name__}: {e})") from None

    def ordered(self, calls: Iterable[tuple[Callable, tuple]], window: int | None = None) -> Iterator[Any]:
        """Submit ``(function, args)`` calls, at most ``window`` in flight, and yield results in order."""
        window = window or max(4, 2 * self.threads())
        pending: collections.deque = collections.deque()
        for fn, args in calls:
            pending.append(self.client.submit(fn, *args, pure=False))
            if len(pending) >= window:
                yield self.result(pending.popleft())
        while pending:
            yield self.result(pending.popleft())

    @contextlib.contextmanager
    def ship(self, path: str | os.PathLike) -> Iterator[str]:
        """A model file's bytes, handed to each worker (those joining later too) while the block runs:
        yields its SHA-256 for the tasks (:func:`_worker_model`); the workers drop it afterwards."""
        from .modelfile import read_model

        read_model(path)                  # a bad model fails here, before any work is sent
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        dropped = _drop_orphans(self.client)
        if dropped:
            log.info("removed %d model copies of earlier runs that ended without removing them", len(dropped))
        plugin = _model_plugin(data, sha, self.client.id)
        try:
            self.client.register_plugin(plugin, name=plugin.name)
        except Exception as e:      # noqa: BLE001 - a worker's own failure, re-raised by Dask
            raise ClusterError(f"the model could not be handed to every worker ({type(e).__name__}: {e})") from None
        try:
            yield sha
        finally:
            try:
                self.client.unregister_worker_plugin(plugin.name)
            except Exception:      # noqa: BLE001 - the cluster may be gone; the workers' copies go with them
                pass


def connect(scheduler: Any, *, timeout: float = CONNECT_TIMEOUT, worker_timeout: float = WORKER_TIMEOUT) -> Cluster:
    """A checked connection to a Dask cluster, for ``collect``, ``import``, ``predict_files`` and ``timelines``.

    Parameters
    ----------
    scheduler : dask.distributed.Client or str
        A client (used as it is, not closed by :meth:`Cluster.close`) or a scheduler address
        (``tcp://HOST:8786``; ``HOST:8786`` is read as TCP; connected here, closed by :meth:`Cluster.close`).
    timeout : float
        Seconds to wait for the scheduler to answer.
    worker_timeout : float
        Seconds to wait for a first worker to join the scheduler.

    Returns
    -------
    Cluster
        A context manager: ``with connect(...) as cluster: ...`` closes what it opened.

    Raises
    ------
    ClusterError
        Dask distributed is not installed (the message names ``animeid[distributed]``); an empty
        address; no scheduler answers within ``timeout``; no worker within ``worker_timeout``; a worker
        runs another animeid version, or cannot import animeid (each worker named).

    Examples
    --------
    >>> from animeid.remote import connect
    >>> with connect("tcp://10.0.0.5:8786") as cluster:                # doctest: +SKIP
    ...     print(cluster.address, cluster.threads())
    tcp://10.0.0.5:8786 16
    """
    distributed = _dask()
    if isinstance(scheduler, distributed.Client):
        client, owned = scheduler, False
    else:
        address = str(scheduler).strip()
        scheme = _scheme(address)
        if scheme == "tcp":                 # checked first: Dask's client alone may wait without end
            address = _probe(*_parse_address(address), timeout)
        elif scheme in ("http", "https"):
            raise ClusterError(f"{address!r} is a web address (the dashboard's?); give the scheduler's own, "
                               f"tcp://HOST:8786, as `dask scheduler` prints it")
        elif scheme != "inproc":            # (inproc: a cluster in this very process, from Python)
            raise ClusterError(f"{address!r}: only tcp:// addresses can be given here; for {scheme}:// (TLS or "
                               f"another protocol, with Dask's security settings) make a dask.distributed.Client "
                               f"in Python and pass it as client=")
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except Exception as e:      # noqa: BLE001 - whatever answers there, say so in one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClusterError(f"could not connect to a Dask scheduler at {address} within {timeout:g} s "
                               f"({type(e).__name__}: {why})") from None
        owned = True
    cluster = Cluster(client, owned)
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except (distributed.TimeoutError, TimeoutError):
            raise ClusterError(f"the scheduler at {cluster.address} has no workers (waited {worker_timeout:g} s); "
                               f"start some with `dask worker {cluster.address}`") from None
        check_versions(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _scheme(address: str) -> str:
    """An address's protocol: ``tcp`` for ``HOST:PORT`` without one."""
    scheme, sep, _ = address.partition("://")
    return scheme.lower() if sep else "tcp"


def _parse_address(scheduler: Any) -> tuple[str, int]:
    """``(host, port)`` of ``tcp://HOST:PORT`` or ``HOST:PORT``; :class:`ClusterError` for anything else."""
    from urllib.parse import urlsplit

    address = str(scheduler).strip()
    if not address:
        raise ClusterError("empty scheduler address; give tcp://HOST:8786")
    rest = address.partition("://")[2] if "://" in address else address
    try:
        parts = urlsplit(f"tcp://{rest}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ClusterError(f"{address!r} is not a scheduler address ({e}); give tcp://HOST:8786") from None
    if not host or port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ClusterError(f"{address!r} is not a scheduler address (it needs a host and a port); "
                           f"give tcp://HOST:8786")
    return host, port


#: seconds a Dask scheduler takes to greet a new connection (it speaks first; measured: under 1 ms)
GREETING_TIMEOUT = 3.0


def _probe(host: str, port: int, timeout: float) -> str:
    """``tcp://HOST:PORT`` once something there answers a TCP connection within ``timeout`` seconds
    and greets it as a Dask scheduler does (a length-prefixed message, before the client says
    anything); :class:`ClusterError` naming what went wrong. Dask's own client would wait without
    end for a server that never greets (the dashboard's HTTP port) and fails with a traceback on one
    that greets otherwise (SSH)."""
    import socket

    shown = f"[{host}]" if ":" in host else host
    address = f"tcp://{shown}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        waited = f" within {timeout:g} s" if isinstance(e, TimeoutError) else ""
        why = e.strerror or type(e).__name__
        raise ClusterError(f"no Dask scheduler answers at {address}{waited} ({why}); start one with "
                           f"`dask scheduler` and give its address") from None
    with sock:
        sock.settimeout(GREETING_TIMEOUT)
        head = b""
        try:
            while len(head) < 8:
                part = sock.recv(8 - len(head))
                if not part:
                    break
                head += part
        except OSError:
            pass
    # a Dask message starts with the byte count of its first frames as a little-endian 64-bit number:
    # for the greeting, tens of bytes
    if len(head) < 8 or not 0 < int.from_bytes(head, "little") < 1 << 20:
        hint = " (8787 is the dashboard's port; the scheduler's is 8786 unless set otherwise)" if port == 8787 else ""
        raise ClusterError(f"something answers at {address}, but not as a Dask scheduler{hint}; give the address "
                           f"`dask scheduler` prints (tcp://HOST:8786)")
    return address


def check_versions(cluster: Cluster, expected: str = __version__) -> None:
    """Every worker runs animeid ``expected``, else :class:`ClusterError` naming the others."""
    got = cluster.client.run(_worker_version, on_error="return")
    bad = []
    for worker, v in sorted(got.items()):
        if isinstance(v, BaseException):
            bad.append(f"{worker}: cannot run animeid ({type(v).__name__}: {v})")
        elif v != expected:
            bad.append(f"{worker}: animeid {v}")
    if bad:
        raise ClusterError(f"every worker must run animeid {expected}, as the driver does: " + "; ".join(bad))


def cluster_or_none(client: Any) -> Cluster | None:
    """:func:`connect` for ``client`` (a Client or an address), None for None (work locally)."""
    return None if client is None else connect(client)


# --------------------------------------------------------------------------- collect's runner

class DaskRunner:
    """:class:`animeid.dataset._Runner`'s interface on a cluster: detection jobs and video segments
    run on the workers, results come back in input order for the driver to store."""

    #: pictures per task
    BATCH = 8

    def __init__(self, cluster: Cluster, cfg: Any):
        self.cluster = cluster
        self.cfg = cfg

    def map(self, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        jobs = list(jobs)
        batches = [jobs[i:i + self.BATCH] for i in range(0, len(jobs), self.BATCH)]
        calls = ((_detect_jobs_task, (b, self.cfg, __version__)) for b in batches)
        for batch, results in zip(batches, self.cluster.ordered(calls)):
            yield from zip(batch, results)

    def videos(self, todo: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """``(job, result)`` per sampled frame not done yet, video after video, each in time order
        (``todo``: :class:`animeid.dataset._VideoTodo` items; a video's first error goes to its
        ``errors``). Every video is probed at once, then all their segments form one stream of tasks,
        so that the next video's segments run while the last ones of a video are still running."""
        from .video import _ms

        probes = [self.cluster.client.submit(_probe_task, str(v.path), __version__, pure=False) for v in todo]
        span = self.cfg.every * self.cfg.segment_frames
        plan: list[tuple[Any, tuple]] = []            # (video, task arguments), in the order stored
        for v, probe in zip(todo, probes):
            duration, why = self.cluster.result(probe)
            if why:
                v.errors.append(why)
                continue
            n = 1 if not duration else max(1, int(-(-duration // span)))
            done_ms = sorted(int(round(float(k[2:]) * 1000)) for k in v.done)
            for j in range(n):
                start, stop = j * span, ((j + 1) * span if j < n - 1 else None)   # the last one runs to the end
                mine = [ms for ms in done_ms if ms >= _ms(start) and (stop is None or ms < _ms(stop))]
                plan.append((v, (str(v.path), v.source_id, j, start, stop, mine, self.cfg, __version__)))
        results = self.cluster.ordered((_segment_task, args) for _, args in plan)
        for (v, _), (frames, error) in zip(plan, results):
            yield from frames
            if error and not v.errors:
                v.errors.append(error)

    def close(self) -> None:
        pass


def predict_batches(cluster: Cluster, model: str | os.PathLike, files: Sequence[str], cfg: Any,
                    chunk: int = 32) -> Iterator[tuple[str, Any]]:
    """``(file, result or error message)`` per file (as given), in order, named on the workers,
    which are sent absolute paths (a relative one would be read from each worker's own folder)."""
    files = [str(f) for f in files]
    with cluster.ship(model) as sha:
        chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
        calls = ((_predict_task, (sha, [os.path.abspath(f) for f in c], cfg, __version__)) for c in chunks)
        for given, results in zip(chunks, cluster.ordered(calls)):
            yield from zip(given, (res for _, res in results))


def timelines(cluster: Cluster, model: str | os.PathLike, videos: Sequence[str], every: float, cfg: Any
              ) -> Iterator[tuple[str, Any]]:
    """``(video, timeline dict or error message)`` per video (as given), in order: one task per video,
    sent its absolute path."""
    videos = [str(v) for v in videos]
    with cluster.ship(model) as sha:
        calls = ((_timeline_task, (sha, os.path.abspath(v), every, cfg, __version__)) for v in videos)
        for v, res in zip(videos, cluster.ordered(calls)):
            # a message names the video as the user gave it, as a local run's does
            yield v, res.replace(os.path.abspath(v), v, 1) if isinstance(res, str) else res
