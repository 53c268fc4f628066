"""Benchmark: every default drift (and data-quality) detector against the read floor and the peers.

    python bench/bench_drift.py [--sizes 100000,1000000,10000000] [--peers evidently,nannyml]
                                [--peer-max-rows 1000000] [--repeat 1] [--rounds 5] [--peer-repeat 1]
                                [--[no-]memory-probe] [--dir bench/out/drift] [--venvs bench/out/venvs]

Data (``common.write_sink``): a window of N rows over 10 hourly hive partitions, 20 float32 numeric
+ 5 dictionary-encoded categorical features (+ a score and a predicted class), ``num_00``..``num_04``
shifted by 0.25 sd; a 1M-row unshifted reference file.  The detectors are whatever the registry holds
when the bench runs: every registered detector whose default instance has kind ``drift`` or
``quality``, each with default parameters.

Measured per size, in fresh subprocesses (``common.measure``: wall time and peak RSS via ``wait4``):

* ``floor (process)``: a fresh Python that imports pyarrow and reads the exact columns a check reads
  from the window's files, as record batches, taking each float column as a NumPy view of its buffer
  (the faster of ``pyarrow.dataset`` and ``ParquetFile.iter_batches``);
* ``check (warm)``: ``atalaia check --format json`` with the reference profile cached in the state
  dir (what the daemon pays per run, plus process start and imports);
* ``check (cold)``: the same with an empty state dir (also builds the reference profile);
* ``evaluate (in-process)``: a subprocess that builds ``Evaluator(config=..., model=...)``, runs
  ``evaluate(at=...)`` once (loads the cached reference, warms imports and the page cache), then
  ``--rounds`` rounds of one evaluation and one read of the same columns with each pyarrow reader,
  interleaved so that a busy spell of the shared machine hits both sides, and keeps the minimum of
  each: ``evaluate`` against ``floor (in-process)``.  Its peak RSS is taken after the second
  evaluation, before the first read.  This separates import overhead (scipy.stats
  alone is 1-2 s) from the per-run cost of the daemon;
* peers, only up to ``--peer-max-rows`` (Evidently needs about 2 minutes and 1.3 GB at 1M rows;
  10M is skipped): Evidently ``Report([DataDriftPreset()])`` and NannyML ``UnivariateDriftCalculator``
  (KS + JS / chi2 + JS, chunks of 10k) in their own venvs under ``--venvs`` (created on first use,
  never atalaia dependencies), reading the reference file and the window's files with
  ``pandas.read_parquet``; their read and compute times are reported separately.

Memory vs window: peak RSS per size, and (``--memory-probe``, on by default) the largest window
again cut into files of the 1M window's size, since Arrow's read-ahead makes the peak follow the
file size: the growth at equal file size is the growth that belongs to the window.

For every tool the features it flags as drifted are compared with the 5 shifted ones: false alarms
(flagged but unshifted) and misses.  atalaia flags a feature when any drift finding on it is ``warn``
or ``alert``.  Results go to stdout and ``DIR/results.json``; medians of ``--repeat`` runs.  The
machine is shared and noisy: trust ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))
from common import FLOOR, FLOOR_READERS, READ, Measured, Sink, atalaia_config, feature_names, measure, write_sink  # noqa: E402,I001

SHIFTED = 5
SHIFT_SD = 0.25
BATCH_SIZE = 262_144

PEERS: dict[str, dict[str, Any]] = {
    "evidently": {"requirements": ["evidently==0.7.*", "pandas<3", "pyarrow"],
                  "runner": BENCH / "peers" / "evidently_runner.py", "label": "Evidently DataDriftPreset"},
    "nannyml": {"requirements": ["nannyml==0.13.*", "statsmodels", "pandas<3", "pyarrow"],
                "runner": BENCH / "peers" / "nannyml_runner.py", "label": "NannyML UnivariateDrift"},
}
# the peers phone home (segment.io / Evidently's collector): switch it off so no network wait is timed
PEER_ENV = {"DO_NOT_TRACK": "1", "NML_DISABLE_USAGE_LOGGING": "1"}


# in-process: evaluations (reference warm) and reads of the same columns, interleaved for ROUNDS rounds
# after a first evaluation and a first read of each kind (page cache, imports); the minimum of each
INPROC = READ + r"""
import json, resource, sys, time
t0 = time.perf_counter()
from datetime import datetime
import pyarrow.dataset, pyarrow.parquet  # both readers imported before the timing, like the evaluator's imports
from monitor.config import load_config
from monitor.evaluate import Evaluator, limit_blas_threads
import_seconds = time.perf_counter() - t0
limit_blas_threads()  # as the atalaia commands do
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cfg_path, at, files, batch_size = sys.argv[1], datetime.fromisoformat(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
rounds = int(sys.argv[5])
cfg = load_config(cfg_path)
# the whole window read and counted on every run: reuse of partition profiles switched off
ev = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False)
cols = list(ev.window_columns())
rss_start = rss()
t = time.perf_counter(); first = ev.evaluate(at=at); first_s = time.perf_counter() - t
rss_first = rss()
t = time.perf_counter(); second = ev.evaluate(at=at); evaluations = [time.perf_counter() - t]
rss_second = rss()  # the evaluation's own peak: before any read of the floor
for how in ("dataset", "file"):
    rows = read(files, cols, batch_size, how)  # warms the page cache
reads = {"dataset": [], "file": []}
for i in range(rounds):  # interleaved, so a busy spell of the machine hits both sides
    if i:
        t = time.perf_counter(); second = ev.evaluate(at=at); evaluations.append(time.perf_counter() - t)
    for how in reads:
        t = time.perf_counter(); rows = read(files, cols, batch_size, how); reads[how].append(time.perf_counter() - t)
second_s = min(evaluations)
# the daemon's default: a run after a run of the same window reuses every partition wholly inside it
daemon = Evaluator(config=cfg, model=cfg.models[0])
daemon.evaluate(at=at)
reused = []
for _ in range(rounds):
    t = time.perf_counter(); again = daemon.evaluate(at=at); reused.append(time.perf_counter() - t)
reused_s = min(reused)
assert [f.value for f in again.findings] == [f.value for f in second.findings]
reads = {how: min(times) for how, times in reads.items()}
read_s = min(reads.values())
print(json.dumps({"import_seconds": import_seconds, "first_seconds": first_s, "evaluate_seconds": second_s,
                  "reused_seconds": reused_s, "partitions_reused": again.partitions_reused,
                  "first_reference_cached": first.reference_cached, "rows": second.rows,
                  "findings": len(second.findings), "errors": [str(e) for e in second.errors],
                  "read_seconds": read_s, "read_seconds_by_reader": reads, "read_rows": rows, "columns": cols,
                  "evaluate_rounds": evaluations, "rounds": rounds,
                  "rss_mb": {"after_imports_and_setup": rss_start, "after_first_evaluate": rss_first,
                             "after_second_evaluate": rss_second, "after_reads": rss()}}))
"""


# --------------------------------------------------------------------------- detectors and config

# helpers run in subprocesses: the bench process itself must stay small (see ``lean_baseline``)
DETECTORS = r"""
import json
from detectors.registry import Registry
reg = Registry()
chosen, skipped = [], {}
for name in reg.names():
    try:
        kind = reg.create(name).kind
    except Exception as exc:  # a detector that cannot be built from its defaults is reported, not fatal
        skipped[name] = f"not constructible with defaults: {type(exc).__name__}: {exc}"
        continue
    if kind in ("drift", "quality"):
        chosen.append(name)
    else:
        skipped[name] = f"kind {kind}"
print(json.dumps([chosen, skipped]))
"""

COLUMNS = r"""
import json, sys
from monitor.config import load_config
from monitor.evaluate import Evaluator
cfg = load_config(sys.argv[1])
print(json.dumps(list(Evaluator(config=cfg, model=cfg.models[0]).window_columns())))
"""

SINK = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from common import write_sink
write_sink(Path(sys.argv[2]), rows=int(sys.argv[3]), shifted=int(sys.argv[4]), shift_sd=float(sys.argv[5]),
           partitions=int(sys.argv[6]))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def helper(code: str, *argv: str) -> Any:
    out = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True,
                         env=child_env(), cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else None


def default_detectors() -> tuple[list[str], dict[str, str]]:
    """Every registered detector whose default instance is of kind drift or quality; the rest, with why."""
    chosen, skipped = helper(DETECTORS)
    return chosen, skipped


def lean_baseline() -> float:
    """Peak MB that ``measure`` reports for ``python -c pass``.

    Linux carries the parent's RSS high-water mark into a forked child's ``ru_maxrss`` (the address
    space before ``exec`` counts), so every peak ``measure`` reports is at least this process's own
    peak.  The bench process therefore never loads data, atalaia or SciPy itself (helpers run in
    subprocesses); this baseline is recorded to show it stays far below the measured peaks.
    """
    return measure([sys.executable, "-c", "pass"], ok_codes=(0,)).peak_mb


def make_sink(root: Path, rows: int, partitions: int = 10) -> Sink:
    """Write (or reuse) the sink in a subprocess, then describe it here (a no-op reuse)."""
    subprocess.run([sys.executable, "-c", SINK, str(BENCH), str(root), str(rows), str(SHIFTED), str(SHIFT_SD),
                    str(partitions)], check=True, cwd=REPO)
    sink = write_sink(root, rows=rows, shifted=SHIFTED, shift_sd=SHIFT_SD, partitions=partitions)
    return Sink(sink.root.resolve(), sink.predictions.resolve(), sink.reference.resolve(), sink.numeric,
                sink.categorical, sink.window_start, sink.window_end, sink.rows)


def window_columns(cfg_path: Path) -> list[str]:
    """The exact columns ``atalaia check`` reads for this configuration (asked of atalaia itself)."""
    return helper(COLUMNS, str(cfg_path))


# --------------------------------------------------------------------------- flagged features

def atalaia_flags(stdout: str, features: list[str]) -> dict[str, Any]:
    """Which targets the findings flag (warn/alert), overall and per detector."""
    by_detector: dict[str, set[str]] = defaultdict(set)
    statuses: dict[str, int] = defaultdict(int)
    quality: set[str] = set()
    findings = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for f in findings:
        statuses[f["status"]] += 1
        if f["status"] not in ("warn", "alert"):
            continue
        if f["kind"] == "drift":
            by_detector[f["detector"]].add(f["target"])
        else:
            quality.add(f"{f['detector']}:{f['target']}:{f['statistic']}")
    drifted = set().union(*by_detector.values()) if by_detector else set()
    return {
        "findings": len(findings),
        "statuses": dict(statuses),
        "flagged": [c for c in features if c in drifted],
        "flagged_other_targets": sorted(drifted - set(features)),
        "by_detector": {d: sorted(v, key=str) for d, v in sorted(by_detector.items())},
        "quality_issues": sorted(quality),
    }


def score_flags(flagged: list[str], features: list[str], shifted: list[str]) -> dict[str, Any]:
    return {"flagged": flagged, "n_flagged": len(flagged),
            "false_alarms": [c for c in flagged if c not in shifted],
            "missed": [c for c in shifted if c not in flagged],
            "n_features": len(features)}


# --------------------------------------------------------------------------- peers

def ensure_venv(venvs: Path, name: str) -> Path:
    """``venvs/name`` with the peer's requirements; created and pip-installed on first use."""
    reqs = PEERS[name]["requirements"]
    root = venvs / name
    python = root / "bin" / "python"
    marker = root / ".bench-requirements"
    if python.exists() and marker.exists() and marker.read_text() == " ".join(reqs):
        return python
    venvs.mkdir(parents=True, exist_ok=True)
    print(f"[setup] {name}: venv {root} + pip install {' '.join(reqs)} (first use only)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    with (venvs / f"{name}-pip.log").open("w") as log:
        subprocess.run([str(python), "-m", "pip", "install", *reqs], check=True, stdout=log, stderr=log)
    marker.write_text(" ".join(reqs))
    return python


def run_peer(python: Path, name: str, sink: Sink) -> tuple[Measured, dict]:
    cmd = [str(python), str(PEERS[name]["runner"]), "--reference", str(sink.reference),
           "--current", str(sink.predictions), "--numeric", ",".join(sink.numeric),
           "--categorical", ",".join(sink.categorical)]
    if name == "nannyml":
        cmd += ["--timestamp", "ts"]
    env = {**os.environ, **PEER_ENV}
    m = measure(cmd, env=env, cwd=REPO, ok_codes=(0,))
    return m, json.loads(m.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one size

def med(values: list[float]) -> float:
    return statistics.median(values)


def bench_size(rows: int, *, args: argparse.Namespace, detectors: list[str], peers: list[str],
               pythons: dict[str, Path]) -> dict[str, Any]:
    t_size = time.perf_counter()
    sink = make_sink(args.dir / f"data-{rows}", rows)
    features = [*sink.numeric, *sink.categorical]
    shifted = sink.numeric[:SHIFTED]
    state = args.dir / f"state-{rows}"
    cfg_path = args.dir / f"atalaia-{rows}.yaml"
    cfg_path.write_text(yaml.safe_dump(atalaia_config(sink, state.resolve(), detectors)))
    cols = window_columns(cfg_path)
    files = sorted(str(p) for p in sink.predictions.rglob("*.parquet"))
    # a record batch never spans files: the largest batch is min(rows per file, BATCH_SIZE)
    max_batch = min(max(pq.ParquetFile(f).metadata.num_rows for f in files), BATCH_SIZE)
    at = sink.window_end.isoformat()
    env = child_env()
    floor_cmd = {how: [sys.executable, "-c", FLOOR, ",".join(files), ",".join(cols), str(BATCH_SIZE), how]
                 for how in FLOOR_READERS}
    check_cmd = [sys.executable, "-m", "monitor.cli", "check", "--config", str(cfg_path), "--at", at,
                 "--format", "json"]
    inproc_cmd = [sys.executable, "-c", INPROC, str(cfg_path), at, ",".join(files), str(BATCH_SIZE),
                  str(args.rounds)]

    runs: dict[str, list[Measured]] = defaultdict(list)
    inproc: list[dict] = []
    for _ in range(args.repeat):
        for how, cmd in floor_cmd.items():
            runs[f"floor (process, {how})"].append(measure(cmd, env=env, cwd=REPO, ok_codes=(0,)))
        shutil.rmtree(state, ignore_errors=True)
        runs["check (cold)"].append(measure(check_cmd, env=env, cwd=REPO))
        runs["check (warm)"].append(measure(check_cmd, env=env, cwd=REPO))
        m = measure(inproc_cmd, env=env, cwd=REPO, ok_codes=(0,))
        runs["evaluate (in-process)"].append(m)
        inproc.append(json.loads(m.stdout.strip().splitlines()[-1]))
    rows_read = int(runs["floor (process, file)"][0].stdout.strip())
    # the floor is the faster reader (the stricter target); both are reported
    fastest = min(FLOOR_READERS, key=lambda how: med([m.seconds for m in runs[f"floor (process, {how})"]]))
    runs["floor (process)"] = runs[f"floor (process, {fastest})"]
    flags = atalaia_flags(runs["check (warm)"][0].stdout, features)
    cold_flags = atalaia_flags(runs["check (cold)"][0].stdout, features)

    def summary(key: str) -> dict[str, Any]:
        ms = runs[key]
        return {"seconds": med([m.seconds for m in ms]), "peak_mb": med([m.peak_mb for m in ms]),
                "runs": [[m.seconds, m.peak_mb] for m in ms]}

    out: dict[str, Any] = {
        "rows": rows_read, "reference_rows": pq.ParquetFile(sink.reference).metadata.num_rows, "features": features,
        "shifted": shifted, "columns_read": cols, "max_batch_rows": max_batch, "detectors": detectors, "repeat": args.repeat,
        "floor": {"process": {**summary("floor (process)"), "reader": fastest,
                              "by_reader": {how: summary(f"floor (process, {how})") for how in FLOOR_READERS}},
                  "in_process": {"seconds": med([r["read_seconds"] for r in inproc]),
                                 "runs": [r["read_seconds"] for r in inproc],
                                 "by_reader": {how: med([r["read_seconds_by_reader"][how] for r in inproc])
                                               for how in FLOOR_READERS}}},
        "atalaia": {
            "check_warm": {**summary("check (warm)"), **score_flags(flags["flagged"], features, shifted),
                           "detail": flags},
            "check_cold": {**summary("check (cold)"),
                           "same_flags_as_warm": cold_flags["flagged"] == flags["flagged"]},
            "evaluate_reused_in_process": {"seconds": med([r["reused_seconds"] for r in inproc]),
                                           "partitions_reused": inproc[-1]["partitions_reused"]},
            "evaluate_in_process": {"seconds": med([r["evaluate_seconds"] for r in inproc]),
                                    "first_seconds": med([r["first_seconds"] for r in inproc]),
                                    "import_seconds": med([r["import_seconds"] for r in inproc]),
                                    "process": summary("evaluate (in-process)"),
                                    "rss_mb": inproc[-1]["rss_mb"], "findings": inproc[-1]["findings"],
                                    "errors": inproc[-1]["errors"]},
        },
        "peers": {},
    }
    a = out["atalaia"]
    f_proc, f_in = out["floor"]["process"], out["floor"]["in_process"]
    ratios: dict[str, float | None] = {
        "check_warm / floor_process (time)": a["check_warm"]["seconds"] / f_proc["seconds"],
        "check_cold / floor_process (time)": a["check_cold"]["seconds"] / f_proc["seconds"],
        "evaluate / floor_in_process (time)": a["evaluate_in_process"]["seconds"] / f_in["seconds"],
        "evaluate, partitions reused / floor_in_process (time)":
            a["evaluate_reused_in_process"]["seconds"] / f_in["seconds"],
        "check_warm / floor_process (peak MB)": a["check_warm"]["peak_mb"] / f_proc["peak_mb"],
    }

    if rows > args.peer_max_rows:
        out["peers_skipped"] = (f"peers are run only up to {args.peer_max_rows:,} rows "
                                f"(Evidently needs minutes and over 1 GB at 1M rows)")
    for name in peers if rows <= args.peer_max_rows else []:
        ms, results = [], []
        for _ in range(args.peer_repeat):
            m, r = run_peer(pythons[name], name, sink)
            ms.append(m)
            results.append(r)
        r = results[-1]
        p = {
            "version": r["version"], "api": r["api"],
            "seconds": med([m.seconds for m in ms]), "peak_mb": med([m.peak_mb for m in ms]),
            "import_seconds": med([x["import_seconds"] for x in results]),
            "read_seconds": med([x["read_seconds"] for x in results]),
            "compute_seconds": med([x["compute_seconds"] for x in results]),
            "total_seconds": med([x["total_seconds"] for x in results]),
            "rows_current": r["rows_current"], "rows_reference": r["rows_reference"],
            "runs": [[m.seconds, m.peak_mb] for m in ms],
            **score_flags(r["flagged"], features, shifted), "per_column": r["per_column"],
        }
        out["peers"][name] = p
        ratios[f"{name} process / check_warm (time)"] = p["seconds"] / a["check_warm"]["seconds"]
        ratios[f"{name} process / check_cold (time)"] = p["seconds"] / a["check_cold"]["seconds"]
        ratios[f"{name} read+compute / evaluate (time)"] = p["total_seconds"] / a["evaluate_in_process"]["seconds"]
        ratios[f"{name} compute / evaluate (time)"] = p["compute_seconds"] / a["evaluate_in_process"]["seconds"]
        ratios[f"{name} / check_warm (peak MB)"] = p["peak_mb"] / a["check_warm"]["peak_mb"]
    out["ratios"] = ratios
    out["bench_seconds"] = time.perf_counter() - t_size
    print_size(out)
    return out


def memory_probe(rows: int, partitions: int, *, args: argparse.Namespace, detectors: list[str]) -> dict[str, Any]:
    """The largest window again, cut into more (smaller) files: the same rows per file as the smaller size.

    Arrow reads ahead within a file, so peak memory follows the file (partition) size; holding it
    constant isolates the growth with the window itself.
    """
    sink = make_sink(args.dir / f"data-{rows}-p{partitions}", rows, partitions)
    state = args.dir / f"state-{rows}-p{partitions}"
    cfg_path = args.dir / f"atalaia-{rows}-p{partitions}.yaml"
    cfg_path.write_text(yaml.safe_dump(atalaia_config(sink, state.resolve(), detectors)))
    cols = window_columns(cfg_path)
    files = sorted(str(p) for p in sink.predictions.rglob("*.parquet"))
    env = child_env()
    check_cmd = [sys.executable, "-m", "monitor.cli", "check", "--config", str(cfg_path), "--at",
                 sink.window_end.isoformat(), "--format", "json"]
    shutil.rmtree(state, ignore_errors=True)
    cold = measure(check_cmd, env=env, cwd=REPO)
    warm = measure(check_cmd, env=env, cwd=REPO)
    floor = min((measure([sys.executable, "-c", FLOOR, ",".join(files), ",".join(cols), str(BATCH_SIZE), how],
                         env=env, cwd=REPO, ok_codes=(0,)) for how in FLOOR_READERS), key=lambda m: m.seconds)
    flags = atalaia_flags(warm.stdout, [*sink.numeric, *sink.categorical])
    return {"rows": rows, "partitions": partitions, "rows_per_file": rows // partitions,
            "check_cold": {"seconds": cold.seconds, "peak_mb": cold.peak_mb},
            "check_warm": {"seconds": warm.seconds, "peak_mb": warm.peak_mb, "flagged": flags["flagged"]},
            "floor_process": {"seconds": floor.seconds, "peak_mb": floor.peak_mb}}


# --------------------------------------------------------------------------- output

def _names(cols: list[str]) -> str:
    return ", ".join(cols) if cols else "-"


def print_size(r: dict[str, Any]) -> None:
    a, f = r["atalaia"], r["floor"]
    n_num = sum(c.startswith("num_") for c in r["features"])
    print()
    print(f"== window {r['rows']:,} rows x {len(r['features'])} features ({n_num} numeric, "
          f"{len(r['features']) - n_num} categorical; {r['shifted'][0]}..{r['shifted'][-1]} shifted "
          f"{SHIFT_SD} sd) + score + predicted label; reference {r['reference_rows']:,} rows; median of {r['repeat']}")
    print(f"   {len(r['detectors'])} detectors: {', '.join(r['detectors'])}; {a['check_warm']['detail']['findings']} "
          f"findings {a['check_warm']['detail']['statuses']}")
    hdr = f"   {'':42}{'seconds':>9}{'read s':>8}{'compute s':>10}{'peak MB':>9}{'flagged':>9}{'false al.':>10}{'missed':>8}"
    print(hdr)

    def row(label: str, s: float | None, mb: float | None, read: float | None = None, comp: float | None = None,
            fl: dict | None = None) -> None:
        def num(v: float | None, w: int, p: int) -> str:
            return f"{v:{w}.{p}f}" if v is not None else f"{'':>{w}}"
        flags = (f"{fl['n_flagged']:>6}/{fl['n_features']}{len(fl['false_alarms']):>10}{len(fl['missed']):>8}"
                 if fl else "")
        print(f"   {label:42}{num(s, 9, 2)}{num(read, 8, 2)}{num(comp, 10, 2)}{num(mb, 9, 0)}{flags}")

    row(f"floor: pyarrow read ({f['process']['reader']}), fresh process", f["process"]["seconds"], f["process"]["peak_mb"])
    row("atalaia check, warm reference (process)", a["check_warm"]["seconds"], a["check_warm"]["peak_mb"],
        fl=a["check_warm"])
    row("atalaia check, cold reference (process)", a["check_cold"]["seconds"], a["check_cold"]["peak_mb"])
    row("floor: pyarrow read, in-process", f["in_process"]["seconds"], None)
    e = a["evaluate_in_process"]
    row("atalaia evaluate, in-process (warm ref)", e["seconds"], e["rss_mb"]["after_second_evaluate"])
    u = a["evaluate_reused_in_process"]
    row(f"  same window again, {u['partitions_reused']} partitions reused", u["seconds"], None)
    for name, p in r["peers"].items():
        row(f"{PEERS[name]['label']} {p['version']} (process)", p["seconds"], p["peak_mb"],
            p["read_seconds"], p["compute_seconds"], fl=p)
    if r.get("peers_skipped"):
        print(f"   peers: skipped ({r['peers_skipped']})")
    print(f"   (in-process imports {e['import_seconds']:.2f} s; first evaluate {e['first_seconds']:.2f} s "
          f"loads the cached reference; peak MB of the in-process row = ru_maxrss after two evaluations, before any read)")
    print("   ratios:")
    for k, v in r["ratios"].items():
        print(f"     {k:46}{v:10.2f}")
    print("   flagged features:")
    print(f"     atalaia check: {_names(a['check_warm']['flagged'])}"
          + (f"; other targets: {_names(a['check_warm']['detail']['flagged_other_targets'])}"
             if a['check_warm']['detail']['flagged_other_targets'] else "")
          + (f"; quality: {_names(a['check_warm']['detail']['quality_issues'])}"
             if a['check_warm']['detail']['quality_issues'] else ""))
    for name, p in r["peers"].items():
        print(f"     {name}: {_names([_peer_flag(c, p['per_column'][c]) for c in p['flagged']])}")
    sys.stdout.flush()


def _peer_flag(col: str, info: dict[str, Any]) -> str:
    """A flagged column; for per-chunk tools (NannyML) with the most alerting chunks of any method."""
    methods = info.get("methods")
    if not methods:
        return col
    worst = max(methods.values(), key=lambda v: v["alerting_chunks"])
    return f"{col} ({worst['alerting_chunks']}/{worst['chunks']} chunks)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000",
                    help="window sizes in rows, comma-separated (default: %(default)s)")
    ap.add_argument("--peers", default="evidently,nannyml",
                    help="peers to run, comma-separated, or 'none' (default: %(default)s)")
    ap.add_argument("--peer-max-rows", type=int, default=1_000_000,
                    help="run peers only at sizes up to this many rows (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="atalaia and floor runs per size (median)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="in-process: evaluations and reads interleaved per run (minimum of each)")
    ap.add_argument("--peer-repeat", type=int, default=1, help="runs per peer and size (median)")
    ap.add_argument("--dir", type=Path, default=BENCH / "out" / "drift")
    ap.add_argument("--venvs", type=Path, default=BENCH / "out" / "venvs")
    ap.add_argument("--memory-probe", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the largest window cut into files of the 1M window's size (default: on)")
    ap.add_argument("--results", type=Path, default=None, help="results file (default: DIR/results.json)")
    args = ap.parse_args()
    args.dir = args.dir.resolve()
    args.dir.mkdir(parents=True, exist_ok=True)
    results_path = (args.results or args.dir / "results.json").resolve()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    peers = [] if args.peers.strip() in ("", "none") else [p.strip() for p in args.peers.split(",")]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"--peers: unknown {', '.join(unknown)}; known: {', '.join(PEERS)}")

    t0 = time.perf_counter()
    baseline = lean_baseline()
    detectors, skipped = default_detectors()
    print(f"detectors (drift + quality, defaults) registered now: {', '.join(detectors)}")
    if skipped:
        print(f"not benchmarked: {'; '.join(f'{k} ({v})' for k, v in skipped.items())}")
    pythons = {p: ensure_venv(args.venvs, p) for p in peers if any(s <= args.peer_max_rows for s in sizes)}

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "detectors": detectors, "detectors_not_benchmarked": skipped,
        "data": {"numeric": 20, "categorical": 5, "shifted": feature_names(SHIFTED, 0)[0], "shift_sd": SHIFT_SD,
                 "partitions": 10, "reference_rows": 1_000_000, "dtype": "float32"},
        "measure_baseline_mb": {"start": baseline},
        "sizes": {},
    }
    for rows in sizes:
        results["sizes"][str(rows)] = bench_size(rows, args=args, detectors=detectors, peers=peers, pythons=pythons)
        results_path.write_text(json.dumps(results, indent=2))

    by = results["sizes"]
    if len(by) >= 2:
        order = sorted(by, key=int)
        hi, lo = order[-1], ("1000000" if "1000000" in by and order[-1] != "1000000" else order[0])
        keys = {"check (warm) peak MB": lambda r: r["atalaia"]["check_warm"]["peak_mb"],
                "evaluate (in-process) peak MB":
                    lambda r: r["atalaia"]["evaluate_in_process"]["rss_mb"]["after_second_evaluate"],
                "floor (process) peak MB": lambda r: r["floor"]["process"]["peak_mb"]}
        probe = None
        if args.memory_probe and int(hi) // int(lo) > 1:
            parts = 10 * int(hi) // int(lo)
            print(f"\n[memory probe] {int(hi):,} rows in {parts} partitions of {int(lo) // 10:,} rows "
                  f"(the file size of the {int(lo):,}-row window)", flush=True)
            probe = memory_probe(int(hi), parts, args=args, detectors=detectors)
        growth: dict[str, Any] = {
            "compared": [int(lo), int(hi)],
            "per_size": {n: {"rows_per_file": int(n) // 10, "max_batch_rows": by[n]["max_batch_rows"],
                             **{k: fn(by[n]) for k, fn in keys.items()}} for n in order},
            "growth_same_partitions": {k: fn(by[hi]) / fn(by[lo]) for k, fn in keys.items()},
        }
        if probe:
            growth["probe"] = probe
            growth["growth_same_file_size"] = {
                "check (warm) peak MB": probe["check_warm"]["peak_mb"] / keys["check (warm) peak MB"](by[lo]),
                "floor (process) peak MB": probe["floor_process"]["peak_mb"] / keys["floor (process) peak MB"](by[lo])}
        results["memory_vs_window"] = growth
        print()
        print(f"== memory vs window ({int(hi) // int(lo)}x the window: {int(lo):,} -> {int(hi):,} rows)")
        heads = [f"{int(n):,} rows" for n in order] + ([f"{int(hi):,} rows"] if probe else [])
        files = [f"10 x {int(n) // 10:,}" for n in order] + ([f"{probe['partitions']} x {probe['rows_per_file']:,}"]
                                                             if probe else [])
        print(f"   {'window':32}" + "".join(f"{h:>20}" for h in heads)
              + f"{'growth, 10 files':>20}" + (f"{'same file size':>16}" if probe else ""))
        print(f"   {'files x rows per file':32}" + "".join(f"{h:>20}" for h in files))
        for k, fn in keys.items():
            vals = [f"{fn(by[n]):20.0f}" for n in order]
            pk = {"check (warm) peak MB": "check_warm", "floor (process) peak MB": "floor_process"}.get(k)
            if probe:
                vals.append(f"{probe[pk]['peak_mb']:20.0f}" if pk else f"{'':>20}")
            line = f"   {k:32}" + "".join(vals) + f"{growth['growth_same_partitions'][k]:19.2f}x"
            if probe and pk:
                line += f"{growth['growth_same_file_size'][k]:15.2f}x"
            print(line)
        if probe:
            print(f"   (probe: check warm {probe['check_warm']['seconds']:.2f} s, cold {probe['check_cold']['seconds']:.2f} s, "
                  f"floor {probe['floor_process']['seconds']:.2f} s; flagged {_names(probe['check_warm']['flagged'])})")
    results["measure_baseline_mb"]["end"] = end = lean_baseline()
    print(f"\n(peak MB of a measured child is at least this bench process's own peak: "
          f"'python -c pass' measures {baseline:.0f} MB at the start, {end:.0f} MB at the end)")
    results["bench_seconds"] = time.perf_counter() - t0
    results_path.write_text(json.dumps(results, indent=2))
    print(f"\nwhole bench: {results['bench_seconds']:.0f} s; results in {results_path}")


if __name__ == "__main__":
    main()
