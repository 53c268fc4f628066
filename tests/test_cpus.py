"""Thread pools sized by the CPUs a container may use, not by the node's cores."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.cpus import usable_cpus

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("150000 100000\n", 2),  # 1.5 CPUs: two threads, rounded up
    ("50000 100000\n", 1),
    ("400000 100000\n", 4),
    ("max 100000\n", 64),  # no limit: the affinity mask
    ("garbage\n", 64),
])
def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = _tree(tmp_path / "cg", {"cpu.max": cpu_max})
    proc = _tree(tmp_path, {"proc-cgroup": "0::/\n"}) / "proc-cgroup"
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=64) == expected


def test_cgroup_v2_limit_on_an_ancestor_applies(tmp_path: Path) -> None:
    """Kubernetes puts the pod's limit on the pod's cgroup and the container's under it: the lowest wins."""
    root = _tree(tmp_path / "cg", {
        "cpu.max": "max 100000\n",
        "kubepods/pod1/cpu.max": "200000 100000\n",
        "kubepods/pod1/ctr/cpu.max": "max 100000\n",
    })
    proc = _tree(tmp_path, {"proc-cgroup": "0::/kubepods/pod1/ctr\n"}) / "proc-cgroup"
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=32) == 2
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=1) == 1  # the affinity mask is lower


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/kubepods/x/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/kubepods/x/cpu.cfs_period_us": "100000\n",
    })
    proc = _tree(tmp_path, {"proc-cgroup": "4:memory:/kubepods/x\n2:cpu,cpuacct:/kubepods/x\n0::/\n"}) / "proc-cgroup"
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=16) == 1
    (root / "cpu,cpuacct/kubepods/x/cpu.cfs_quota_us").write_text("-1\n")  # no quota anywhere
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=16) == 16


def test_container_with_its_own_cgroup_namespace(tmp_path: Path) -> None:
    """Inside a cgroup namespace /proc/self/cgroup says ``/`` and the mount root is the container's cgroup."""
    root = _tree(tmp_path / "cg", {"cpu.max": "100000 100000\n"})
    proc = _tree(tmp_path, {"proc-cgroup": "0::/\n"}) / "proc-cgroup"
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=8) == 1


def test_nothing_readable_gives_the_affinity(tmp_path: Path) -> None:
    assert usable_cpus(cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "none", affinity=3) == 3
    assert usable_cpus(cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "none", affinity=0) == 1


def test_this_machine_without_a_quota_is_its_affinity() -> None:
    assert usable_cpus() <= len(os.sched_getaffinity(0))


PROBE = """
import sys
import pyarrow as pa
import monitor.cpus
if len(sys.argv) > 2:  # stand in for a container's CPU limit
    monitor.cpus.usable_cpus = lambda **_: int(sys.argv[2])
from monitor.cli import main
before = pa.cpu_count()
code = main(["check", "--config", sys.argv[1]])
print(before, monitor.cpus.usable_cpus(), pa.cpu_count(), code)
"""


def _probe(cfg: Path, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    cfg.write_text("models: []\n")  # a bad configuration: exit 2, after the start-up
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(cfg), *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    return out.stdout.split() or [out.stderr]


def test_the_commands_cap_arrows_pool_at_the_usable_cpus(tmp_path: Path) -> None:
    """Arrow's decoding pool sizes itself by the CPUs it may run on and knows no CPU quota: the commands
    cut it to the usable CPUs at start-up, and leave it alone when nothing limits them."""
    n = len(os.sched_getaffinity(0))
    assert _probe(tmp_path / "a.yaml", "1") == [str(n), "1", "1", "2"]
    assert _probe(tmp_path / "b.yaml") == [str(n), str(n), str(n), "2"]


CPU_V1 = Path("/sys/fs/cgroup/cpu")


def _cgroup(name: str) -> Path | None:
    """A real cgroup (v1 cpu controller) with a 1-CPU quota; ``None`` where this kernel or container does
    not let us make one."""
    d = CPU_V1 / name
    try:
        d.mkdir()
        (d / "cpu.cfs_period_us").write_text("100000")
        (d / "cpu.cfs_quota_us").write_text("100000")
    except OSError:
        with contextlib.suppress(OSError):
            d.rmdir()
        return None
    return d


def test_a_real_cpu_quota_is_read(tmp_path: Path) -> None:
    """A real process in a real cgroup with a 1-CPU CFS quota (what ``limits: {cpu: 1}`` sets up)."""
    group = _cgroup(f"atalaia-test-{os.getpid()}") if (CPU_V1 / "cpu.cfs_quota_us").exists() else None
    if group is None:
        pytest.skip("no writable cgroup v1 cpu controller here to make a quota in (the fixture-tree tests above "
                    "cover the reading)")
    try:
        enter = ("sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh")
        assert _probe(tmp_path / "c.yaml", prefix=enter)[1:] == ["1", "1", "2"]
    finally:
        for _ in range(50):  # the process has left; the kernel frees the group shortly after
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
