"""A private Ray cluster inside one allocation, for one tune node.

A search must never meet another job's Ray: two tune nodes may share a host (two jobs
on one SLURM node, or two local launches), so nothing here uses Ray's defaults (the
`/tmp/ray` temp dir, port 6379, the dashboard ports, the 10002-19999 worker ports).

- One process (a laptop, a one-task SLURM job): `ray.init` with explicit CPUs/GPUs, a
  private temp dir and no dashboard; Ray picks free ports itself.
- Several SLURM tasks (`nodes: 2` in the profile's tune stage): rank 0 starts a Ray head
  with `ray start --head --block`, the other ranks start workers that join it, each
  process with its own block of ports (probed free, starting from an offset derived from
  the job id and rank so that jobs do not race for the same ports). Rank 0's address is
  shared over the node's torch.distributed group (`xstilts.jobs.entry` created it to agree on
  the lease); when the search is over rank 0 sets a key in that group's store and the
  workers stop their Ray and return. The head's temp dir is private to the job and Ray
  gives the same path to every worker.

Every Ray process runs in its own session and is killed as a process group on the way
out, never with `ray stop` (which would kill every Ray on the host).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xstilts.core.allocation import allocation_cpus
from xstilts.core.rng import stable_seed

log = logging.getLogger("xstilts.ray")

PORTS_PER_PROCESS = 64
"""GCS, node manager, object manager, two dashboard-agent ports, runtime-env agent,
metrics, dashboard, then worker ports: one block per Ray process."""
PORT_RANGE = (20000, 60000)
WORKER_PORTS = 48
DONE_KEY = "xstilts/tune/search-done"
START_TIMEOUT_S = 120.0
POLL_S = 1.0
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class PortBlock:
    """The ports one Ray process listens on."""

    first: int

    @property
    def gcs(self) -> int:
        return self.first

    @property
    def dashboard(self) -> int:
        return self.first + 7

    def ray_start_args(self) -> list[str]:
        p = self.first
        return [
            f"--node-manager-port={p + 1}", f"--object-manager-port={p + 2}",
            f"--dashboard-agent-listen-port={p + 3}", f"--dashboard-agent-grpc-port={p + 4}",
            f"--runtime-env-agent-port={p + 5}", f"--metrics-export-port={p + 6}",
            f"--min-worker-port={p + 8}", f"--max-worker-port={p + 8 + WORKER_PORTS - 1}",
        ]


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port_block(job_id: str, rank: int) -> PortBlock:
    """The first block of ports that are all free, starting from an offset that depends
    on (job, rank): two jobs (or two ranks on one host) start far apart and probe."""
    low, high = PORT_RANGE
    blocks = (high - low) // PORTS_PER_PROCESS
    start = stable_seed(job_id, rank) % blocks
    for step in range(blocks):
        first = low + ((start + step) % blocks) * PORTS_PER_PROCESS
        if all(_free(port) for port in range(first, first + PORTS_PER_PROCESS)):
            return PortBlock(first)
    raise RuntimeError(f"no block of {PORTS_PER_PROCESS} free ports in {low}-{high} for Ray")


def node_ip() -> str:
    """This host's address as the other nodes of the allocation reach it: the SLURM node
    name resolved like submitit's MASTER_ADDR is, else the host name."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"


def allocation_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _ray_start(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`ray start --block ...` in its own session, so the whole tree can be killed."""
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats", *args]
    with open(log_path, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            # ray start exits first; its daemons may linger a moment in the group
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def _wait_listening(host: str, port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {START_TIMEOUT_S:.0f}s")


def _init_quiet(**kwargs: Any) -> None:
    """`ray.init` with `kwargs` (its own parameters, passed on as given), logging quietly."""
    import ray

    ray.init(logging_level=logging.WARNING, log_to_driver=False, configure_logging=False, **kwargs)


@contextmanager
def ray_in_allocation(job_id: str, rank: int, world_size: int) -> Iterator[bool]:
    """Run the body with Ray connected; yields True on the process that drives the
    search (rank 0) and False on the others, which have served as Ray workers until the
    driver finished by the time they get there (their body should do nothing).

    Ray's files (sessions, logs, sockets) go to a private temp dir, removed at the end;
    it is short on purpose, because Ray's unix sockets live under it (108-byte limit).
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"xstilts-ray{rank}-"))
    try:
        with _ray(job_id, rank, world_size, scratch) as driver:
            yield driver
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _ray(job_id: str, rank: int, world_size: int, scratch: Path) -> Iterator[bool]:
    import ray

    block = free_port_block(job_id, rank)
    if world_size == 1:
        # Ray still runs a minimal dashboard process without the UI: give it a port of ours.
        _init_quiet(num_cpus=allocation_cpus(), num_gpus=allocation_gpus(), include_dashboard=False,
                    dashboard_port=block.dashboard, _temp_dir=str(scratch))
        try:
            yield True
        finally:
            ray.shutdown()
        return

    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _get_default_store

    resources = [f"--num-cpus={allocation_cpus()}", f"--num-gpus={allocation_gpus()}", f"--node-ip-address={node_ip()}"]
    if rank == 0:
        process = _ray_start(["--head", f"--port={block.gcs}", "--include-dashboard=false",
                              f"--dashboard-port={block.dashboard}", f"--temp-dir={scratch}",
                              *block.ray_start_args(), *resources], scratch / "ray-head.log")
        address = f"{node_ip()}:{block.gcs}"
        try:
            _wait_listening(node_ip(), block.gcs, process, "the Ray head")
        except BaseException:
            _kill_tree(process)
            raise
        box: list[object] = [address, str(scratch)]
    else:
        box = [None, None]
    dist.broadcast_object_list(box, src=0)
    address, head_temp = str(box[0]), str(box[1])
    store = _get_default_store()
    if rank != 0:
        process = _ray_start([f"--address={address}", *block.ray_start_args(), *resources],
                             scratch / f"ray-worker-{rank}.log")
        log.info("rank %d: Ray worker joining %s (ports %d-%d)", rank, address, block.first,
                 block.first + PORTS_PER_PROCESS - 1)
        try:
            while not store.check([DONE_KEY]):
                if process.poll() is not None:
                    raise RuntimeError(f"the Ray worker on rank {rank} exited with code {process.returncode}")
                time.sleep(POLL_S)
        finally:
            _kill_tree(process)
            if address.split(":")[0] != node_ip():  # Ray made the head's temp path on this host too
                shutil.rmtree(head_temp, ignore_errors=True)
        yield False
        return
    try:
        _init_quiet(address=address)
        _wait_for_nodes(world_size)
        log.info("Ray cluster of %d nodes at %s: %s", world_size, address, ray.cluster_resources())
        yield True
    finally:
        ray.shutdown()
        store.set(DONE_KEY, "1")
        _kill_tree(process)


def _wait_for_nodes(count: int) -> None:
    import ray

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if sum(1 for node in ray.nodes() if node["Alive"]) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {sum(1 for n in ray.nodes() if n['Alive'])} of {count} Ray nodes joined "
                       f"within {START_TIMEOUT_S:.0f}s")

