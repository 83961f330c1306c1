"""Ray for the ``ray`` engine: importing it, joining or starting a cluster, and a local test cluster.

Imported only when ``engine="ray"`` is chosen. :func:`connect` joins the cluster named by
:attr:`~phonalign.engine.EngineConfig.address` (or starts a Ray instance on this machine for the
run) and leaves again afterwards; a notebook that already called ``ray.init()`` keeps its
connection. :class:`LocalCluster` starts a real multi-node cluster on this machine with
``ray start`` (a head and more nodes joined with ``ray start --address``), all on loopback
addresses and with its own temporary folder and authentication token, and stops exactly the
processes it started: for tests, benchmarks and trying the engine without a cluster.

Every node must run the same Python environment with this toolkit installed, and see the audio
and model files at the same paths (a shared file system): workers read audio themselves, and
only per-utterance results travel back to the driver, which writes every output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from .engine import EngineConfig, EngineError

__all__ = ["import_ray", "connect", "cluster_resources", "default_workers", "LocalCluster"]

log = logging.getLogger(__name__)


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`~phonalign.engine.EngineError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray, which is not installed",
                          hint="pip install 'lam-toolkit[ray]' (or pip install 'ray>=2.9'), or use --engine local"
                          ) from None
    return ray


@contextlib.contextmanager
def connect(engine: EngineConfig) -> Iterator[ModuleType]:
    """Join the cluster of ``engine.address`` (None: start a Ray instance here) for the ``with`` block.

    A connection that exists already (``ray.init()`` in a notebook) is used and left open.

    Raises
    ------
    EngineError
        When the cluster cannot be reached or started.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if engine.address is not None:
        if engine.address != "auto":
            _check_reachable(engine.address)
        kwargs["address"] = engine.address
    t0 = time.perf_counter()
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "start a Ray instance on this machine" if engine.address is None else \
            f"join the Ray cluster at {engine.address!r}"
        raise EngineError(f"could not {where}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                          hint="check --ray-address (HOST:PORT of the head, or auto after `ray start` on this "
                          "machine) and that the head is running; for token authentication set RAY_AUTH_MODE "
                          "and RAY_AUTH_TOKEN_PATH as on the cluster") from err
    log.info("ray: connected to %s in %.1f s", engine.address or "a new local instance", time.perf_counter() - t0)
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, *, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if host.startswith("ray://"):
        return  # Ray Client addresses are Ray's to check
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise EngineError(f"--ray-address {address!r} is not HOST:PORT or auto",
                          hint="give the head node's address as printed by `ray start --head`, e.g. 10.0.0.5:6379"
                          ) from None
    except OSError as err:
        raise EngineError(f"could not join the Ray cluster at {address!r}: nothing answers there ({err})",
                          hint="start the head with `ray start --head`, or check the host and port") from None


def cluster_resources(ray: ModuleType) -> dict[str, float]:
    """The cluster's total resources (``CPU``, ``GPU``, ...)."""
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def default_workers(ray: ModuleType, engine: EngineConfig) -> int:
    """Workers at once when ``engine.workers`` is not set: as many as the cluster's CPUs (or GPUs)
    hold, at least one.

    Raises
    ------
    EngineError
        When ``gpus_per_worker`` asks for GPUs the cluster does not have.
    """
    res = cluster_resources(ray)
    n = int(res.get("CPU", 1.0) // engine.cpus_per_worker)
    if engine.gpus_per_worker > 0:
        gpus = res.get("GPU", 0.0)
        if gpus < engine.gpus_per_worker:
            raise EngineError(f"--gpus-per-worker {engine.gpus_per_worker:g} but the Ray cluster has "
                              f"{gpus:g} GPUs", hint="start the nodes with GPUs, or use --gpus-per-worker 0")
        n = min(n, int(gpus // engine.gpus_per_worker))
    if engine.workers is not None:
        return engine.workers
    return max(1, n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    if exe.is_file():
        return str(exe)
    found = shutil.which("ray")
    if found is None:
        raise EngineError("the `ray` command is not installed", hint="pip install 'lam-toolkit[ray]'")
    return found


class LocalCluster:
    """A real Ray cluster on this machine: a head node and ``n_nodes - 1`` more joined with
    ``ray start --address``, each with ``cpus_per_node`` CPUs.

    Every node listens on its own loopback address (127.0.0.2, 127.0.0.3, ...: Ray rewrites
    127.0.0.1 to the machine's network address), the cluster has its own temporary folder and a
    random authentication token, and :meth:`stop` ends exactly the processes its nodes started
    (Ctrl-C safe; ``ray stop`` would end every Ray process of the machine). Use as a context
    manager; drivers connect to :attr:`address` with :attr:`env` in their environment::

        with LocalCluster(n_nodes=2) as cluster:
            os.environ.update(cluster.env)
            align_corpus(utts, out, aligner, engine=EngineConfig("ray", address=cluster.address))

    Parameters
    ----------
    n_nodes : int
        Nodes (the head included).
    cpus_per_node : int
        CPUs each node offers to tasks and actors.
    object_store_mb : int
        Object store of each node, MB (Ray's default is 30% of the machine's memory).
    timeout : float
        Seconds to wait for each node to come up.
    worker_niceness : int, optional
        Niceness of the worker processes. Ray starts them at 15, below everything else on the
        node, which is right for a node that also runs Ray's own services; a benchmark that times
        Ray against processes started at the caller's niceness passes that niceness
        (``os.nice(0)``) so that both compete for the cores on equal terms.
    """

    def __init__(self, *, n_nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 256,
                 timeout: float = 120.0, worker_niceness: int | None = None) -> None:
        if n_nodes < 1:
            raise EngineError("a cluster needs at least one node")
        self.n_nodes, self.cpus_per_node, self.object_store_mb = n_nodes, cpus_per_node, object_store_mb
        self.timeout = timeout
        self.worker_niceness = worker_niceness
        self.dir: Path | None = None
        self.address = ""
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen] = []
        self._pids: set[int] = set()

    # -------------------------------------------------------------------------------- start
    def start(self) -> LocalCluster:
        """Start the head, then the other nodes; wait until every node is up."""
        # a short path: Ray's Unix sockets live under it (107-character limit)
        self.dir = Path(tempfile.mkdtemp(prefix="lamray-", dir="/tmp" if os.path.isdir("/tmp") else None))
        token = self.dir / "auth_token"
        token.write_text(secrets.token_hex(32), encoding="utf-8")
        token.chmod(0o600)
        port = _free_port()
        self.address = f"127.0.0.2:{port}"
        self.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            # no 30 s drain on SIGTERM: this cluster runs no service that needs one
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env = {**os.environ, **self.env}
        if self.worker_niceness is not None:  # read by each node's raylet when it starts workers
            env["RAY_worker_niceness"] = str(self.worker_niceness)
        common = ["--num-cpus", str(self.cpus_per_node), "--num-gpus", "0",
                  "--object-store-memory", str(self.object_store_mb * 1024 * 1024), "--block"]
        try:
            self._launch([_ray_cli(), "start", "--head", "--node-ip-address", "127.0.0.2", "--port", str(port),
                          "--temp-dir", str(self.dir), "--include-dashboard=false", "--disable-usage-stats",
                          *common], env, "head")
            self._wait_for_nodes(1)
            for k in range(1, self.n_nodes):
                self._launch([_ray_cli(), "start", "--address", self.address, "--node-ip-address",
                              f"127.0.0.{2 + k}", *common], env, f"node{k}")
            self._wait_for_nodes(self.n_nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, cmd: list[str], env: Mapping[str, str], name: str) -> None:
        assert self.dir is not None
        with open(self.dir / f"{name}.log", "ab") as logf:
            # its own session: a Ctrl-C in the terminal reaches the driver, not the cluster (which
            # the driver then stops); and SIGTERM when this process dies however it dies (Linux), so
            # that a killed test run or benchmark leaves no cluster behind
            proc = subprocess.Popen(cmd, env=dict(env), stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self._procs.append(proc)

    def _wait_for_nodes(self, n: int) -> None:
        """Poll the node logs until ``n`` nodes say they started (or a ``ray start`` exits)."""
        assert self.dir is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise EngineError(f"`ray start` exited with code {proc.returncode}: {self._log_tail()}",
                                      path=self.dir)
            started = sum(1 for p in self.dir.glob("*.log")
                          if "Ray runtime started" in p.read_text(encoding="utf-8", errors="replace"))
            if started >= n:
                self._remember_pids()
                return
            time.sleep(0.2)
        raise EngineError(f"the local Ray cluster did not start in {self.timeout:.0f} s: {self._log_tail()}",
                          path=self.dir)

    def _log_tail(self) -> str:
        assert self.dir is not None
        lines = []
        for p in sorted(self.dir.glob("*.log")):
            lines += p.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return " | ".join(lines)[-800:]

    # -------------------------------------------------------------------------------- processes
    def _remember_pids(self) -> None:
        """Every process of the cluster: the ``ray start`` processes and all their descendants."""
        import psutil

        for proc in self._procs:
            try:
                root = psutil.Process(proc.pid)
                self._pids.add(root.pid)
                self._pids.update(c.pid for c in root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass

    def processes(self) -> list[Any]:
        """The cluster's processes still alive (``psutil.Process``): its nodes' process trees and
        anything whose command line names its temporary folder."""
        import psutil

        self._remember_pids()
        alive = {}
        for pid in self._pids:
            try:
                p = psutil.Process(pid)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive[pid] = p
            except psutil.NoSuchProcess:
                continue
        if self.dir is not None:
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if any(str(self.dir) in part for part in (p.info["cmdline"] or [])):
                        alive[p.pid] = p
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        alive.pop(os.getpid(), None)
        return list(alive.values())

    def worker_processes(self, title_prefix: str) -> list[Any]:
        """Ray worker processes of this cluster whose title starts with ``title_prefix`` (Ray
        titles a worker ``ray::<task or actor name>`` while it runs one)."""
        out = []
        for p in self.processes():
            try:
                cmd = p.cmdline()
            except Exception:  # noqa: BLE001 - a process that ended meanwhile
                continue
            if cmd and cmd[0].startswith(title_prefix):
                out.append(p)
        return out

    # -------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop the nodes (SIGTERM to each ``ray start``, which ends its processes), then kill any
        process of the cluster still alive; remove the temporary folder."""
        import psutil

        self._remember_pids()
        for proc in reversed(self._procs):  # the other nodes first, the head last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        left = self.processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.processes()
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=10)
        self._procs.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
