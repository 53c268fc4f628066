"""How many CPUs this process may use: the affinity mask, capped by a container's CPU limit.

``os.cpu_count()`` is the node's count.  A sidecar with ``limits: {cpu: 1}`` on a 64-core node
that sized its pools by it would run 64 counting threads and 64 Arrow decoding threads on one
CPU's quota, and be throttled for most of every CFS period, next to the model server it serves.
The limit reaches the process as a CFS quota in its cgroup: ``cpu.max`` (cgroup v2, ``"150000
100000"`` = 1.5 CPUs, ``"max 100000"`` = none) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
(v1, quota -1 = none), on the process's own cgroup or any ancestor, whichever is lowest.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus", "fit_arrow_threads"]


def usable_cpus(*, cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup"),
                affinity: int | None = None) -> int:
    """CPUs for this process's thread pools: the CPUs it may run on, at most its cgroup CPU quota
    rounded up, at least 1.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "cpu.max").write_text("150000 100000\\n")
    >>> usable_cpus(cgroup_root=root, proc_cgroup=root / "none", affinity=64)
    2
    """
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    return max(1, min(affinity, math.ceil(quota)) if quota is not None else affinity)


def fit_arrow_threads(cpus: int) -> None:
    """Cap Arrow's decoding pool at ``cpus`` threads (it sizes itself by the CPUs it may run on and knows
    no CPU quota).
    Process-wide, so the commands call it once at start."""
    import pyarrow as pa

    if pa.cpu_count() > cpus:
        pa.set_cpu_count(cpus)


def _cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The lowest CFS quota, in CPUs, over the process's cgroup and its ancestors (v2, then v1); ``None``: none."""
    paths = _own_paths(proc_cgroup)
    found: list[float] = []
    for rel in paths.get("", ["/"]):  # v2: the unified hierarchy
        found += [q for d in _ancestors(root, rel) if (q := _v2_quota(d / "cpu.max")) is not None]
    if not found:
        for hierarchy in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            base = root / hierarchy
            if not base.is_dir():
                continue
            for rel in paths.get("cpu", ["/"]):
                found += [q for d in _ancestors(base, rel) if (q := _v1_quota(d)) is not None]
            break
    return min(found) if found else None


def _own_paths(proc_cgroup: Path) -> dict[str, list[str]]:
    """``{controller: [path]}`` from ``/proc/self/cgroup`` (``""`` for v2); the root path where unreadable.

    Inside a container with its own cgroup namespace the paths are ``/`` and the hierarchy mounted at the
    root is the container's; otherwise the path leads from the mount to the process's cgroup."""
    out: dict[str, list[str]] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out.setdefault(controller, []).append(parts[2] or "/")
    return out


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each of its parents up to ``base``: a limit may sit on any of them.  A path that is
    not there (the mount is the process's own cgroup already) gives ``base`` alone."""
    d = base / rel.lstrip("/")
    if not d.is_dir():
        return [base]
    out = [d]
    while d != base and base in d.parents:
        d = d.parent
        out.append(d)
    return out


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(d: Path) -> float | None:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
