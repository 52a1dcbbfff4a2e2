"""The processes ``scripts.chaos`` breaks: its own redis-server(s) and ``journeyrec serve``, on loopback.

Every process is started in its own session (its own process group), so that stopping it also reaches
what it forked (a server's workers); ``Processes`` stops them all, whatever happened, and removes the temp
directory they live in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port(*, bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 (with ``bus``: port + 10000 too, a cluster node's bus port)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port + 10000))
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal ``proc``'s whole process group (it leads one: started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class RedisServer:
    """One redis-server on 127.0.0.1:``port`` keeping its files (AOF, cluster config) in ``dir``.

    ``appendfsync always``: Redis writes and fsyncs the AOF before it replies, so every write a client saw
    acknowledged is in the file when the process is killed (``everysec`` would also survive a ``kill -9``
    almost always, the page cache outliving the process, but may postpone a write by up to 2 s when an
    fsync is slow: a promise the check ``lost == 0`` could not rely on).
    """

    def __init__(self, port: int, directory: Path, *, cluster: bool = False) -> None:
        self.port = port
        self.dir = directory
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        args += ["--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
        if self.cluster:
            # a short node timeout and partial coverage: the surviving masters keep serving their slots
            # while one is down (the default, full coverage, stops the whole cluster after the timeout)
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"]
        return args

    def start(self, timeout: float = 30.0) -> float:
        """Start it (loading its AOF when there is one) and wait until it answers PING; returns the seconds
        that took."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server on port {self.port} exited: {log}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():  # answers LOADING (an error) until the AOF is loaded
                        return time.monotonic() - t0
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout:.0f} s")

    def kill9(self) -> None:
        """``kill -9`` and reap it: when this returns, its sockets are closed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


def create_cluster(nodes: list[RedisServer], timeout: float = 30.0) -> None:
    """Join ``nodes`` (started, empty, cluster-enabled) into one cluster of masters, slots split evenly
    (``redis-cli --cluster create``, as ``.ci/run`` does), and wait until every node says it is ok."""
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    wait_cluster_ok(nodes, timeout)


def wait_cluster_ok(nodes: list[RedisServer], timeout: float = 30.0) -> float:
    """Wait until every node of ``nodes`` reports ``cluster_state:ok``; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        states = []
        for n in nodes:
            c = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=1)
            try:
                states.append(str(c.cluster("INFO").get("cluster_state", "")))
            except redis.RedisError:
                states.append("down")
            finally:
                c.close()
        if all(s == "ok" for s in states):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"redis cluster not ok after {timeout:.0f} s")


def clean_env() -> dict[str, str]:
    """This process's environment without any journeyrec setting (the chaos run sets its own)."""
    drop = ("JOURNEYREC_", "PROMETHEUS_MULTIPROC_DIR")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


class Service:
    """``journeyrec serve`` as a real subprocess (its own process group), its stderr kept in ``log``."""

    def __init__(
        self,
        models: Path,
        redis_url: str,
        *,
        prefix: str,
        api_keys: str,
        workers: int,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log = log
        environ = {
            **clean_env(),
            "JOURNEYREC_API_KEYS": api_keys,
            "JOURNEYREC_REDIS_PREFIX": prefix,
            "JOURNEYREC_LOG_LEVEL": "warning",
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "journeyrec.cli", "serve", "--models", str(models)]
        cmd += ["--redis-url", redis_url, "--port", str(self.port), "--workers", str(workers)]
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def worker_pids(self) -> list[int]:
        """The server's worker processes: children of the serve process still running (read from
        /proc; a killed worker not yet reaped is a zombie, left out)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                    pids.append(int(stat.parent.name))
        return sorted(pids)

    def wait_ready(self, headers: dict[str, str], timeout: float = 120.0) -> float:
        """Wait until ``/health/ready`` answers 200 and every worker lists itself with a model in
        ``GET /v1/models``; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    body = httpx.get(self.base + "/v1/models", headers=headers, timeout=2).json()
                    pids = set(self.worker_pids())
                    live = {
                        int(w["worker"].rsplit(":", 1)[1])
                        for w in body.get("workers", [])
                        if w["model_version"]
                    }
                    if len(pids) == self.workers and pids <= live:
                        return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout:.0f} s: {self.log_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group (a worker left behind included)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        kill_group(self.proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
