"""A real Redis Cluster for tests and benchmarks: Debian's redis-server.

``RedisTestCluster(tmpdir, masters=3)`` starts ``masters`` redis-server
processes on free loopback ports (``--cluster-enabled yes``, no persistence),
joins them with ``redis-cli --cluster create ... --cluster-replicas 0``, waits
for ``cluster_state:ok`` on every node and tears everything down on
``stop()``. ``kill(i)`` SIGKILLs node i, ``pause(i)`` / ``resume(i)`` SIGSTOP /
SIGCONT it (a hung node), ``cli(i, *args)`` runs redis-cli against it.

``redis_cluster`` (pytest fixture, per test module, see conftest.py) skips the
test with a clear reason only when redis-server / redis-cli are not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def available() -> str | None:
    """None when a cluster can be started, else the reason it cannot."""
    for exe in (REDIS_SERVER, REDIS_CLI):
        if not os.access(exe, os.X_OK):
            return f"{exe} is not installed (apt-get install redis-server; .ci/run does)"
    return None


def _free_ports(n: int) -> list[int]:
    # Cluster nodes also listen on port + 10000 (the bus): both must be free.
    ports: list[int] = []
    socks = []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        socks.append(s)
        if p + 10000 > 65535 or p in ports:
            continue
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
        finally:
            b.close()
        ports.append(p)
    for s in socks:
        s.close()
    return ports


class RedisTestCluster:
    def __init__(self, tmpdir: Path, masters: int = 3):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = _free_ports(masters)
        self.procs: list[subprocess.Popen | None] = []
        try:
            for p in self.ports:
                d = self.dir / str(p)
                d.mkdir(exist_ok=True)
                log = open(d / "redis.log", "wb")
                self.procs.append(subprocess.Popen(
                    [REDIS_SERVER, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "2000",
                     "--appendonly", "no", "--save", "", "--dir", str(d), "--daemonize", "no",
                     "--protected-mode", "no"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
                log.close()
            for i in range(masters):
                self._wait(lambda i=i: self.cli(i, "PING", check=False).strip() == "PONG", "PING")
            subprocess.run([REDIS_CLI, "--cluster", "create", *self.nodes, "--cluster-replicas", "0",
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)
            for i in range(masters):
                self._wait(lambda i=i: "cluster_state:ok" in self.cli(i, "CLUSTER", "INFO", check=False),
                           "cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        return ",".join(self.nodes)

    def _wait(self, pred, what: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if pred():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis test cluster: timed out waiting for {what} ({self.dir})")

    def cli(self, i: int, *args: str, check: bool = True, timeout: float = 10) -> str:
        r = subprocess.run([REDIS_CLI, "-p", str(self.ports[i]), *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"redis-cli {args}: {r.stderr}")
        return r.stdout

    def cli_cluster(self, *args: str) -> str:
        """redis-cli -c (follows redirections) against node 0."""
        r = subprocess.run([REDIS_CLI, "-c", "-p", str(self.ports[0]), *args], capture_output=True,
                           text=True, timeout=10, check=True)
        return r.stdout

    def node_of_slot(self, slot: int) -> int:
        for i in range(len(self.ports)):
            out = self.cli(i, "CLUSTER", "NODES")
            for line in out.splitlines():
                f = line.split()
                if "myself" not in f[2]:
                    continue
                for r in f[8:]:
                    if r.startswith("["):
                        continue
                    lo, _, hi = r.partition("-")
                    if int(lo) <= slot <= int(hi or lo):
                        return i
        raise KeyError(slot)

    def node_id(self, i: int) -> str:
        return self.cli(i, "CLUSTER", "MYID").strip()

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for p in self.procs:
            if p and p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
                except Exception:
                    pass
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
