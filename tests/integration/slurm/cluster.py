"""A throw-away SLURM cluster on 127.0.0.1 for integration tests.

Why a real cluster: submitit, requeueing, preemption signals, dependencies and sacct behave in
ways no mock reproduces (see /work/shared/FACTS.md). This starts Debian's slurm-wlm (22.05) in
under a second (~2.5 s with accounting): a private munged, optionally a private MariaDB and
slurmdbd, a slurmctld and two slurmd "nodes" n1, n2 on this host, each with its own port.

All daemons run in a private mount namespace kept by `nsinit.py`, which starts them:
- a hosts file bound over /etc/hosts there makes n1, n2 resolve for the daemons and their jobs
  (submitit sets MASTER_ADDR to the first node's name) without touching the machine's file;
- every daemon and job is in that namespace, so `stop()` kills exactly the cluster's processes
  and leaves nothing running; a test session that dies takes its cluster with it (nsinit does
  the same when its stdin, a pipe from this process, closes).
PIDs are the host's (no PID namespace): a job's os.getpid() can be signalled from the test.
Client commands (sbatch, squeue, scontrol, sacct, scancel, submitit) run in the normal
namespace with `env` merged in: the controller's address is 127.0.0.1 in slurm.conf.

Every file lives in one temp dir; ports are picked free at start, so two clusters (say one with
accounting, one without, or two test sessions) run side by side.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.integration.slurm.config import (NODES, Layout, epilog_script, free_port_block, hosts_file, slurm_conf,
                                            slurmdbd_conf)
from tests.integration.slurm.install import ACCOUNTING_PACKAGES, SLURM_PACKAGES, InstallError, ensure_packages

NSINIT = Path(__file__).with_name("nsinit.py")

# Job states after which a job does nothing more (squeue --states=all spells them so).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                          "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"})
# Node states (sinfo %T) of a node that answers and can take jobs.
_UP_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


class ClusterError(RuntimeError):
    """The cluster could not start or did not do what was waited for; carries daemon logs."""


@dataclass
class _Daemon:
    name: str
    pid: int


def _machine_memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 2048


class Cluster:
    """A two-node SLURM cluster on this host; use as a context manager or call start()/stop().

    Parameters are those a test may want to vary; everything else is fixed in config.py.
    `grace_time` is the GraceTime of partition `low`: a preempted job gets its --signal (or
    SIGTERM) at once and keeps its node at least that long; slurmctld checks for the end of the
    grace on a ~12 s cycle, so 5 s means ~12 s in practice, 20 s ~24 s. `min_job_age` is how
    long finished jobs stay visible to squeue/scontrol (without accounting, nothing else shows
    them but `jobcomp_log`).
    """

    def __init__(self, *, accounting: bool = False, max_array_size: int = 1001, grace_time: int = 5,
                 min_job_age: int = 60, cpus_per_node: int = 2, base_dir: str | Path | None = None,
                 keep: bool = False, start_timeout: float = 90.0) -> None:
        self.accounting = accounting
        self.max_array_size = max_array_size
        self.grace_time = grace_time
        self.min_job_age = min_job_age
        self.cpus_per_node = cpus_per_node
        self.keep = keep
        self.start_timeout = start_timeout
        self._base_dir = base_dir
        self.layout: Layout | None = None
        self.startup_seconds: float | None = None
        self._init: subprocess.Popen[bytes] | None = None
        self._init_log: IO[bytes] | None = None
        self._namespace: str | None = None
        self._daemons: list[_Daemon] = []
        self._stopped = False

    # ---------------------------------------------------------------- public API

    @property
    def nodes(self) -> tuple[str, ...]:
        return NODES

    @property
    def root(self) -> Path:
        return self._layout().root

    @property
    def conf(self) -> Path:
        return self._layout().conf

    @property
    def jobcomp_log(self) -> Path:
        """Completion records (jobcomp/filetxt), the only lasting job history without accounting."""
        return self._layout().jobcomp_log

    @property
    def env(self) -> dict[str, str]:
        """Variables to merge into os.environ (or a subprocess env) for client commands."""
        path = os.environ.get("PATH", "")
        parts = path.split(os.pathsep) if path else []
        parts += [d for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin") if d not in parts]
        return {"SLURM_CONF": str(self.conf), "PATH": os.pathsep.join(parts)}

    def client_env(self) -> dict[str, str]:
        """os.environ without inherited SLURM_* variables (say, from an enclosing job), plus `env`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return base | self.env

    def run(self, *cmd: str, check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a client command (sbatch, squeue, ...) against this cluster, output captured."""
        result = subprocess.run(list(cmd), env=self.client_env(), capture_output=True, text=True,
                                timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    @contextlib.contextmanager
    def slow_job_ends(self, seconds: int) -> Iterator[None]:
        """While inside, every job that ends stays COMPLETING in squeue for `seconds` (the
        epilog sleeps), as on clusters whose epilogs do real work."""
        delay = self._layout().epilog_delay
        delay.write_text(f"{seconds}\n")
        try:
            yield
        finally:
            delay.unlink(missing_ok=True)

    def sbatch(self, *args: str) -> str:
        """Submit with sbatch and return the job id."""
        return self.run("sbatch", "--parsable", *args, check=True).stdout.strip().split(";")[0]

    def job_states(self, job_id: str) -> dict[str, str]:
        """State of each job (array task ids as 12_3) of `job_id`, while the controller knows it
        (MinJobAge seconds after it ended)."""
        result = self.run("squeue", "--states=all", "-h", "-j", job_id, "-o", "%i %T")
        states = {}
        for line in result.stdout.splitlines():
            if line.strip():
                key, state = line.split()
                states[key] = state
        return states

    def wait_for_job(self, job_id: str, timeout: float = 60,
                     done: Callable[[dict[str, str]], bool] | None = None) -> dict[str, str]:
        """Wait until `done(states)` (default: every task in a final state); return the states."""
        finished = done or (lambda states: bool(states) and set(states.values()) <= FINAL_STATES)
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_id)
            if finished(states):
                return states
            if time.monotonic() > deadline:
                job = self.run("scontrol", "show", "job", job_id).stdout
                raise ClusterError(f"job {job_id} still {states} after {timeout} s:\n{job}\n{self.logs()}")
            time.sleep(0.2)

    def node_states(self) -> dict[str, str]:
        """sinfo's long state of each node ('idle', 'mixed', 'down*', ...)."""
        result = self.run("sinfo", "-h", "-N", "-o", "%N %T")
        states = {}
        for line in result.stdout.splitlines():
            if line.strip():
                name, state = line.split()
                states[name] = state
        return states

    def nodes_up(self) -> bool:
        """True if every node answers and can take jobs."""
        states = self.node_states()
        return set(states) == set(NODES) and all(state in _UP_STATES for state in states.values())

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Wait until no job is pending or running and every node is idle."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self.run("squeue", "-h", "-o", "%i %T %R").stdout.strip()
            states = self.node_states()
            if not queue and set(states) == set(NODES) and set(states.values()) == {"idle"}:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"not idle after {timeout} s: queue {queue!r}, nodes {states}\n{self.logs()}")
            time.sleep(0.2)

    def cancel_all(self) -> None:
        """Cancel every job of the cluster: what a test that shares it leaves behind."""
        self.run("scancel", "--user=root")

    def pids(self) -> list[int]:
        """PIDs of every process of the cluster (nsinit, daemons, jobs): those in its mount
        namespace."""
        if self._namespace is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "mnt") == self._namespace:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def logs(self, lines: int = 60) -> str:
        """The last `lines` lines of every daemon log, and how each daemon is doing: for the
        message of a failing test. A daemon's own output (NAME.out, which repeats its log file)
        is shown only once it has exited, since it then holds the reason."""
        if self.layout is None or not self.layout.log_dir.is_dir():
            return "(no logs: the cluster has no directory)"
        parts = []
        shown = [path for path in sorted(self.layout.log_dir.iterdir()) if path.suffix != ".out"]
        exits = self._exit_codes()
        for daemon in self._daemons:
            code = exits.get(daemon.pid)
            parts.append(f"{daemon.name} (pid {daemon.pid}): " + ("running" if code is None else f"exited {code}"))
            if code is not None:
                shown.append(self.layout.log_dir / f"{daemon.name}.out")
        for path in shown:
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                text = [f"(unreadable: {exc})"]
            parts.append(f"===== {path.name} =====\n" + "\n".join(text))
        return "\n".join(parts)

    def start(self) -> Cluster:
        """Install what is missing, start every daemon, wait until both nodes are idle."""
        began = time.monotonic()
        try:
            ensure_packages(SLURM_PACKAGES + (ACCOUNTING_PACKAGES if self.accounting else ()))
        except InstallError as exc:
            raise ClusterError(f"cannot install SLURM: {exc}") from exc
        if os.geteuid() != 0:
            raise ClusterError("the test cluster needs root: SlurmUser=root, mount namespaces")
        for tool in ("unshare", "mount"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} (util-linux/mount) is missing")
        try:
            self.layout = self._make_layout()
            self._write_files()
            self._start_namespace()
            self._start_munge()
            if self.accounting:
                self._start_database()
                self._start_slurmdbd()
            self._start_slurmctld()
            self._start_slurmds()
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            if isinstance(exc, ClusterError):
                raise ClusterError(f"{exc}\n{logs}") from None
            if isinstance(exc, Exception):
                raise ClusterError(f"the test cluster did not start: {exc!r}\n{logs}") from exc
            raise
        atexit.register(self.stop)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Kill every daemon and job of the cluster and remove its directory (unless keep)."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self._init is not None:
            # nsinit kills everything in the namespace when its stdin closes, then exits.
            if self._init.stdin is not None:
                self._init.stdin.close()
            try:
                self._init.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill_all()
                self._init.wait(timeout=10)
            if self._init.stdout is not None:
                self._init.stdout.close()
        if self._init_log is not None:
            self._init_log.close()
        if self.layout is not None and not self.keep:
            shutil.rmtree(self.layout.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- start-up steps

    def _layout(self) -> Layout:
        if self.layout is None:
            raise ClusterError("the cluster is not started")
        return self.layout

    def _make_layout(self) -> Layout:
        root = Path(tempfile.mkdtemp(prefix="xstilts-slurm-", dir=self._base_dir))
        taken: set[int] = set()

        def pick(count: int) -> int:
            base = free_port_block(count, taken)
            taken.update(range(base, base + count))
            return base

        ctl_port = pick(1)
        node_port = pick(len(NODES))
        dbd_port = pick(1) if self.accounting else 0
        db_port = pick(1) if self.accounting else 0
        return Layout(root=root, name="x" + uuid.uuid4().hex[:8],
                      hostname=socket.gethostname().split(".")[0], ctl_port=ctl_port,
                      node_port=node_port, dbd_port=dbd_port, db_port=db_port,
                      cpus_per_node=self.cpus_per_node,
                      memory_mb=max(256, min(8192, _machine_memory_mb() // (2 * len(NODES)))),
                      max_array_size=self.max_array_size, grace_time=self.grace_time,
                      min_job_age=self.min_job_age, accounting=self.accounting)

    def _write_files(self) -> None:
        layout = self._layout()
        layout.make_dirs()
        layout.munge_key.write_bytes(os.urandom(1024))
        os.chmod(layout.munge_key, 0o400)
        layout.hosts.write_text(hosts_file(layout, Path("/etc/hosts").read_text()))
        os.chmod(layout.hosts, 0o644)
        layout.conf.write_text(slurm_conf(layout))
        (layout.conf.parent / "plugstack.conf").write_text("")  # no SPANK plugins from /etc/slurm
        layout.epilog.write_text(epilog_script(layout))
        os.chmod(layout.epilog, 0o755)
        if layout.accounting:
            layout.dbd_conf.write_text(slurmdbd_conf(layout))
            os.chmod(layout.dbd_conf, 0o600)  # slurmdbd refuses a readable file (it may hold passwords)

    def _start_namespace(self) -> None:
        layout = self._layout()
        self._init_log = open(layout.log_dir / "nsinit.log", "wb")
        self._init = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, str(NSINIT), str(layout.hosts), str(self._exits_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._init_log, start_new_session=True)
        if self._read_init(timeout=15) != b"ready":
            raise ClusterError(f"the namespace did not start (unshare exited {self._init.poll()})")
        self._namespace = os.readlink(f"/proc/{self._init.pid}/ns/mnt")  # unshare exec'd nsinit
        if self._namespace == os.readlink("/proc/self/ns/mnt"):
            raise ClusterError("nsinit is not in a mount namespace of its own")

    def _read_init(self, timeout: float) -> bytes:
        """One line of nsinit's answers, without its newline (b"" if none came)."""
        assert self._init is not None and self._init.stdout is not None
        readable, _, _ = select.select([self._init.stdout], [], [], timeout)
        return self._init.stdout.readline().strip() if readable else b""

    @property
    def _exits_file(self) -> Path:
        return self._layout().run_dir / "daemon-exits.txt"

    def _exit_codes(self) -> dict[int, int]:
        """Exit code of each daemon that has exited, by PID (nsinit reaps them)."""
        try:
            text = self._exits_file.read_text()
        except (OSError, ClusterError):
            return {}
        return {int(pid): int(code) for pid, code in (line.split() for line in text.splitlines() if line)}

    def _kill_all(self) -> None:
        """SIGKILL every process of the cluster: the fallback if nsinit does not do it."""
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _spawn(self, name: str, *argv: str) -> _Daemon:
        """Have nsinit start a daemon (in the foreground) in the namespace, output in log/NAME.out."""
        layout = self._layout()
        assert self._init is not None and self._init.stdin is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(layout.conf)
        request = {"argv": list(argv), "env": env, "cwd": str(layout.root),
                   "output": str(layout.log_dir / f"{name}.out")}
        self._init.stdin.write(json.dumps(request).encode() + b"\n")
        self._init.stdin.flush()
        line = self._read_init(timeout=15)
        answer = json.loads(line) if line else {"error": f"nsinit did not answer (exited {self._init.poll()})"}
        if "pid" not in answer:
            raise ClusterError(f"could not start {name}: {answer['error']}")
        daemon = _Daemon(name, int(answer["pid"]))
        self._daemons.append(daemon)
        return daemon

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
        """Poll `ready` until true; fail at once if a daemon has exited."""
        deadline = time.monotonic() + min(timeout, self.start_timeout)
        while not ready():
            exits = self._exit_codes()
            for daemon in self._daemons:
                code = exits.get(daemon.pid)
                if code is not None:
                    raise ClusterError(f"{daemon.name} exited with {code} while waiting for {what}")
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _start_munge(self) -> None:
        layout = self._layout()
        self._spawn("munged", "munged", "--foreground", f"--socket={layout.munge_socket}",
                    f"--key-file={layout.munge_key}", f"--pid-file={layout.run_dir}/munged.pid",
                    f"--log-file={layout.log_dir}/munged.log", f"--seed-file={layout.run_dir}/munged.seed")

        def ready() -> bool:
            if not layout.munge_socket.exists():
                return False
            return subprocess.run(["munge", "-n", "-S", str(layout.munge_socket)],
                                  capture_output=True).returncode == 0

        self._wait("munged", ready)

    def _start_database(self) -> None:
        """A private MariaDB for slurmdbd: own datadir, socket and port on loopback only."""
        layout = self._layout()
        with open(layout.log_dir / "mariadb-install-db.out", "wb") as out:
            code = subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={layout.db_dir}/data", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=layout.root).returncode
        if code != 0:
            raise ClusterError(f"mariadb-install-db exited {code}")
        self._spawn("mariadbd", "mariadbd", "--no-defaults", f"--datadir={layout.db_dir}/data", "--user=root",
                    f"--socket={layout.db_dir}/mysqld.sock", f"--port={layout.db_port}",
                    "--bind-address=127.0.0.1", f"--pid-file={layout.run_dir}/mariadbd.pid",
                    f"--tmpdir={layout.db_dir}/tmp", f"--log-error={layout.log_dir}/mariadbd.log",
                    "--skip-grant-tables", "--skip-name-resolve",
                    # slurmdbd warns below these; the pool is allocated lazily.
                    "--innodb-buffer-pool-size=256M", "--innodb-lock-wait-timeout=900",
                    "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0")

        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", layout.db_port), timeout=1) as conn:
                    return bool(conn.recv(64))  # the server's greeting: it accepts queries
            except OSError:
                return False

        self._wait("mariadbd", ready)

    def _start_slurmdbd(self) -> None:
        layout = self._layout()
        self._spawn("slurmdbd", "slurmdbd", "-D")

        def ready() -> bool:
            try:
                socket.create_connection(("127.0.0.1", layout.dbd_port), timeout=1).close()
                return True
            except OSError:
                return False

        self._wait("slurmdbd", ready)
        # Registered before the controller starts, so that it reports to the database at once.
        self.run("sacctmgr", "-i", "add", "cluster", layout.name, check=True)

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", "slurmctld", "-D")
        self._wait("slurmctld", lambda: self.run("scontrol", "ping").returncode == 0)

    def _start_slurmds(self) -> None:
        for node in NODES:
            self._spawn(f"slurmd-{node}", "slurmd", "-D", "-N", node)

        def idle() -> bool:
            states = self.node_states()
            return set(states) == set(NODES) and set(states.values()) == {"idle"}

        self._wait("both nodes idle", idle)


def start_cluster(**options: Any) -> Cluster:
    """Start a cluster (see Cluster for the options); the caller stops it."""
    return Cluster(**options).start()


def main(argv: list[str]) -> int:
    """`python -m tests.integration.slurm.cluster [--accounting]`: a cluster to poke at by hand until Ctrl-C."""
    with Cluster(accounting="--accounting" in argv) as cluster:
        print(f"export SLURM_CONF={cluster.conf}  # started in {cluster.startup_seconds:.1f} s", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
