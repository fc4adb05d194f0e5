"""Files of a test cluster: directory layout, free ports, slurm.conf, slurmdbd.conf, hosts.

Why each non-default setting is there is said next to it; most of them make a one-host cluster
react in about a second instead of the minutes a production cluster is tuned for.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

NODES: tuple[str, ...] = ("n1", "n2")


def _port_free(port: int) -> bool:
    """True if `port` can be bound on every address (slurm daemons bind 0.0.0.0)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, taken: Set[int] = frozenset()) -> int:
    """First of `count` consecutive free ports, out of the ephemeral range so that no client
    socket grabs one between now and the daemon's start. Random, so two clusters (two test
    sessions) started at the same time do not race for the same block."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 30000 - count)
        block = range(base, base + count)
        if taken.isdisjoint(block) and all(_port_free(port) for port in block):
            return base
    raise RuntimeError(f"no block of {count} free ports found in 20000-30000")


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps everything (all under `root`) and which ports it listens on."""

    root: Path
    name: str  # ClusterName: lower case, unique per cluster so that two can share a slurmdbd-less host
    hostname: str  # short hostname: slurmctld only starts on the host named in SlurmctldHost
    ctl_port: int
    node_port: int  # n1 listens here, n2 on node_port + 1
    dbd_port: int
    db_port: int
    cpus_per_node: int
    memory_mb: int
    max_array_size: int
    grace_time: int
    min_job_age: int
    accounting: bool

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def dbd_conf(self) -> Path:
        # slurmdbd has no option for its file: it reads slurmdbd.conf beside $SLURM_CONF.
        return self.root / "etc" / "slurmdbd.conf"

    @property
    def epilog(self) -> Path:
        """Run by each slurmd after every job; the job stays COMPLETING (in squeue) meanwhile."""
        return self.root / "etc" / "epilog.sh"

    @property
    def epilog_delay(self) -> Path:
        """Seconds the epilog sleeps, while this file exists (`Cluster.slow_job_ends`)."""
        return self.root / "etc" / "epilog-delay-seconds"

    @property
    def hosts(self) -> Path:
        return self.root / "etc" / "hosts"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def munge_key(self) -> Path:
        return self.root / "munge-key" / "munge.key"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def db_dir(self) -> Path:
        return self.root / "mariadb"

    @property
    def jobcomp_log(self) -> Path:
        """Without accounting, the only lasting record of finished jobs (one line per job)."""
        return self.log_dir / "jobcomp.txt"

    def make_dirs(self) -> None:
        dirs = [self.root / "etc", self.log_dir, self.run_dir, self.state_dir, self.munge_key.parent]
        dirs += [self.spool_dir / node for node in NODES]
        if self.accounting:
            dirs += [self.db_dir, self.db_dir / "tmp"]
        for path in dirs:
            path.mkdir(parents=True, exist_ok=True)
        # munged refuses a socket directory writable by others, and clients need to enter it.
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.munge_dir, 0o755)
        os.chmod(self.munge_key.parent, 0o700)
        os.chmod(self.root, 0o755)


def epilog_script(layout: Layout) -> str:
    """The epilog: a real cluster's (health checks, cleaning /tmp, accounting hooks) keeps a
    job in squeue, COMPLETING, for a while after its batch script ended. Here it does that only
    while a test asks for it; otherwise it returns at once."""
    return f"""\
#!/bin/sh
# Written by tests/integration/slurm/config.py.
delay=$(cat {layout.epilog_delay} 2>/dev/null) && sleep "$delay"
exit 0
"""


def hosts_file(layout: Layout, original: str) -> str:
    """/etc/hosts as the daemons and jobs see it: the node names (and this host) on loopback
    first, then the machine's own entries."""
    names = " ".join(("localhost", *NODES, layout.hostname))
    return f"127.0.0.1\t{names}\n::1\tlocalhost ip6-localhost ip6-loopback\n{original}"


def slurm_conf(layout: Layout) -> str:
    """slurm.conf for two nodes on this host, two partitions for real preemption."""
    first, last = NODES[0], NODES[-1]
    prefix = first.rstrip("0123456789")
    node_range = f"{prefix}[{first[len(prefix):]}-{last[len(prefix):]}]"
    socket_path = layout.munge_socket
    ports = f"[{layout.node_port}-{layout.node_port + len(NODES) - 1}]"
    cpus = layout.cpus_per_node
    nodes = (f"NodeName={node_range} NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports} CPUs={cpus} "
             f"Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={layout.memory_mb} State=UNKNOWN")
    if layout.accounting:
        accounting = f"""\
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={layout.dbd_port}
# With a private munge socket this is how the controller finds it to talk to slurmdbd.
AccountingStoragePass={socket_path}
JobCompType=jobcomp/none
"""
    else:
        accounting = f"""\
# No slurmdbd: sacct does not work (tests of the product cover this mode too).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={layout.jobcomp_log}
"""
    return f"""\
# Throw-away test cluster written by tests/integration/slurm/config.py.
ClusterName={layout.name}
SlurmctldHost={layout.hostname}(127.0.0.1)
SlurmctldPort={layout.ctl_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5: a requeued job otherwise waits 120 s for its old credential to expire.
AuthInfo=socket={socket_path},cred_expire=5
StateSaveLocation={layout.state_dir}
SlurmdSpoolDir={layout.spool_dir}/%n
SlurmctldPidFile={layout.run_dir}/slurmctld.pid
SlurmdPidFile={layout.run_dir}/slurmd-%n.pid
SlurmctldLogFile={layout.log_dir}/slurmctld.log
SlurmdLogFile={layout.log_dir}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={layout.root}/etc/plugstack.conf
Epilog={layout.epilog}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Both slurmd share this host's cores: take each node as configured, do not drain it.
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
# Otherwise a job whose afterok dependency failed pends forever.
DependencyParameters=kill_invalid_depend
ReturnToService=2
JobRequeue=1
InactiveLimit=30
KillWait=2
MinJobAge={layout.min_job_age}
SlurmdTimeout=30
SlurmctldTimeout=30
MaxArraySize={layout.max_array_size}
MaxJobCount={max(10000, 2 * layout.max_array_size)}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# A preempted job gets its --signal (batch shell with B:, else every step process) with SIGCONT
# at once, instead of SIGTERM; SIGTERM (then SIGKILL after KillWait) comes when GraceTime ends.
SlurmctldParameters=preempt_send_user_signal
{accounting}
{nodes}
PartitionName=low Nodes={node_range} Default=YES PriorityTier=1 GraceTime={layout.grace_time} MaxTime=INFINITE State=UP
PartitionName=high Nodes={node_range} PriorityTier=2 MaxTime=INFINITE State=UP
"""


def slurmdbd_conf(layout: Layout) -> str:
    """slurmdbd.conf: the private MariaDB over TCP on loopback; it runs --skip-grant-tables, so
    no password (it is reachable from this host only and lives as long as the test session)."""
    return f"""\
AuthType=auth/munge
AuthInfo=socket={layout.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={layout.dbd_port}
SlurmUser=root
DebugLevel=info
LogFile={layout.log_dir}/slurmdbd.log
PidFile={layout.run_dir}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={layout.db_port}
StorageUser=root
StorageLoc=slurm_acct_db
"""
