"""A private one-node Slurm cluster for tests/test_slurm.py: munged, slurmctld and slurmd in the
foreground, as root, every file (key, socket, state, spool, pid files, logs, slurm.conf) in one
temporary folder and free ports, so nothing of the machine's own Slurm or munge is touched.

`with SlurmCluster(folder) as cluster:` starts the three daemons and waits until the node is idle;
`cluster.env` is the environment for sbatch/squeue (SLURM_CONF names the private slurm.conf);
leaving the block ends the daemons it started, by pid, and whatever they left running.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
INSTALL = "apt-get install -y slurmd slurmctld munge slurm-client (Debian/Ubuntu, as root)"


def missing_reason() -> str | None:
    """Why a private cluster cannot start here, or None when it can."""
    missing = [name for name in COMMANDS if not (shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin"))]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)} missing): {INSTALL}"
    if os.geteuid() != 0:
        return "the private Slurm cluster runs its daemons as root"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class SlurmCluster:
    def __init__(self, folder: Path, cpus: int = min(2, os.cpu_count() or 1), memory_mb: int = 4000):
        self.folder = folder
        self.node = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.processes: list[subprocess.Popen] = []
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def write_files(self):
        for sub in ("state", "spool", "log", "run"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)   # munged refuses a key in a folder others can write
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = self.folder / "run/munge.socket"
        f = self.folder
        self.conf.write_text(f"""\
ClusterName=llmgradetest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/run/slurmctld.pid
SlurmdPidFile={f}/run/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
PlugStackConfig={f}/plugstack.conf
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        (f / "plugstack.conf").write_text("")   # not the machine's /etc/slurm/plugstack.conf

    def start(self, name: str, *args: str):
        log = open(self.folder / f"log/{name}.stdout", "w")
        self.processes.append(subprocess.Popen([binary(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))

    def __enter__(self):
        self.write_files()
        f = self.folder
        try:
            self.start("munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={f}/munge.key",
                       f"--pid-file={f}/run/munged.pid", f"--log-file={f}/log/munged.log",
                       f"--seed-file={f}/state/munged.seed")
            self.wait_for(lambda: self.socket.exists(), "munged's socket", 20)
            self.start("slurmctld", "-D", "-i", "-f", str(self.conf))
            self.start("slurmd", "-D", "-N", self.node, "-f", str(self.conf))
            self.wait_for(self.node_is_idle, f"node {self.node} idle", 60)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def run(self, *args, check=True, timeout=30) -> str:
        done = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}\n{self.logs()}")
        return done.stdout

    def node_is_idle(self) -> bool:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).strip().startswith("idle")

    def queue_is_empty(self) -> bool:
        return self.run("squeue", "-h", "-o", "%i").strip() == ""

    def wait_for(self, ready, what: str, timeout: float):
        end = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}"
                                   f"\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        parts = []
        for path in sorted((self.folder / "log").glob("*")):
            text = path.read_text(errors="replace").strip().splitlines()[-15:]
            parts.append(f"--- {path.name} (last lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def __exit__(self, *exc):
        """Cancel what is still queued, SIGTERM each daemon, then SIGKILL its process group and any
        process left with this cluster's SLURM_CONF in its environment (slurmstepd and the job
        scripts it runs start their own sessions, but they inherit the daemons' environment)."""
        if self.processes and self.processes[-1].poll() is None:
            self.run("scancel", "--user=root", check=False)
            try:
                self.wait_for(self.queue_is_empty, "cancelled jobs to end", 20)
            except RuntimeError:
                pass
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)
        self.processes.clear()
        for pid in self.left_behind():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def left_behind(self) -> list[int]:
        """Pids whose environment names this cluster's slurm.conf (its job steps and their children)."""
        mark = f"SLURM_CONF={self.conf}".encode() + b"\0"
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if mark in (entry / "environ").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids
