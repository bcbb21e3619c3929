"""The ``slurm_cluster`` session fixture: a real single-node SLURM cluster on this host.

It is brought up with ``workflows/slurm/local-cluster.sh up`` (munged, slurmctld and
slurmd started directly as root daemons; slurm-wlm and munge are apt-installed when
missing) and torn down with ``local-cluster.sh down`` at the end of the session, unless
the cluster was already running before the session (then it is reused and left running).

Only tests marked ``slurm`` (run with ``pytest --integration``) should request it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "workflows" / "slurm" / "local-cluster.sh"
DEFAULT_STATE_DIR = Path("/tmp/bh-slurm")
_SLURM_COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def _have_slurm() -> bool:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return all(shutil.which(cmd, path=path) for cmd in _SLURM_COMMANDS)


def _run_script(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL_CLUSTER), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM cluster (session scope).

    Yields a dict:

    ``env``
        ``dict(os.environ)`` plus ``SLURM_CONF`` (the generated slurm.conf), ``LOGNAME``
        (set to the current user when unset; Nipype's SLURM plugin needs it), and on
        ``PATH`` the running interpreter's bin directory first (so jobs find this
        virtualenv's ``bids_harmonize*`` console scripts) and ``/usr/sbin`` last.
        Pass it as ``env=`` to ``subprocess.run`` for sbatch/squeue/scontrol/scancel/
        srun, or to code that shells out to them.
    ``state_dir``
        ``Path`` of the cluster's state directory (``$BH_SLURM_STATE``, default
        ``/tmp/bh-slurm``): ``etc/slurm.conf``, ``log/{slurmctld,slurmd}.log``,
        ``log/jobcomp.txt`` (one line per finished job), ``run/*.pid``.
    ``slurm_conf``
        ``Path`` of the generated slurm.conf (same as ``env["SLURM_CONF"]``).
    ``node``
        the node name (``hostname -s``).
    ``partition``
        the default partition, ``"debug"`` (a second partition ``"cpu"`` has the same node).
    ``cpus``
        the node's CPU count (``nproc``). A job gets 1 CPU and DefMemPerCPU (node memory
        / CPUs) by default, so ``cpus`` default-sized jobs run at once; ask a small
        ``--mem`` to be sure several jobs share the node.

    There is no accounting (no ``sacct``): read finished jobs with ``scontrol show job``
    (kept for MinJobAge = 1 h) or ``log/jobcomp.txt``. Jobs run as root.

    Skips when not root, or when SLURM is not installed and apt-get is unavailable.
    Fails (errors the requesting tests) when ``up`` itself fails, with the script's output.
    """
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (its daemons run as root)")
    if not _have_slurm() and shutil.which("apt-get") is None:
        pytest.skip("slurm-wlm/munge are not installed and apt-get is unavailable to install them")

    env = dict(os.environ)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in path:
        path.insert(0, venv_bin)
    path += [p for p in ("/usr/sbin", "/sbin") if p not in path]
    env["PATH"] = os.pathsep.join(path)
    state_dir = Path(env.get("BH_SLURM_STATE") or DEFAULT_STATE_DIR)

    was_running = _run_script("status", env=env, timeout=60).returncode == 0
    up = _run_script("up", env=env, timeout=900)   # may apt-get install on a fresh host
    if up.returncode != 0:
        pytest.fail(f"local-cluster.sh up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}",
                    pytrace=False)

    slurm_conf = state_dir / "etc" / "slurm.conf"
    env["SLURM_CONF"] = str(slurm_conf)
    env["LOGNAME"] = env.get("LOGNAME") or pwd.getpwuid(os.geteuid()).pw_name
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True,
                          check=True).stdout.strip()
    node_line = subprocess.run(["scontrol", "-o", "show", "node", node], env=env, capture_output=True,
                               text=True, check=True).stdout
    cpus = int(node_line.split("CPUTot=", 1)[1].split()[0])
    try:
        yield {
            "env": env,
            "state_dir": state_dir,
            "slurm_conf": slurm_conf,
            "node": node,
            "partition": "debug",
            "cpus": cpus,
        }
    finally:
        if not was_running:
            _run_script("down", env=env, timeout=120)
