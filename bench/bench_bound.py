"""Where an evaluation's time goes, and how far faster counting could take it (issue 3's 1M target).

    python bench/bench_bound.py [--rows 1000000] [--rounds 9] [--dir bench/out/drift] [--probe-kernel]

On ``bench_drift.py``'s data and configuration (written if missing: the same window, reference and
default detectors), one subprocess runs ``--rounds`` interleaved rounds of, each the minimum:

* ``floor``: the same columns read with both pyarrow readers (the faster), as in ``bench_drift.py``;
* ``evaluate``: the whole evaluation, partition reuse off (as ``bench_drift.py``'s in-process row),
  with the time inside the detectors' ``score`` (one thread, after the last batch) taken apart;
* ``numeric counting free``: the same, with ``NumericCounts.of`` answering each column with counts
  computed once before the rounds (the read, categorical counting, the multivariate hook, the
  merges and the scoring stay as they are): what no numeric counting kernel can beat;
* ``all counting free``: every batch's profile (numeric, categorical, the multivariate hook) taken
  from one counted before the rounds: the read, the pipeline, the merges and the scoring only.

Then, on the first window file, one thread: ``NumericCounts.of`` per value through the cell map and
sorted (``cells=False``), ``np.sort`` alone, and which of the two ``monitor.profiles.cells_count_faster``
picks on this CPU; with ``--probe-kernel`` the one-pass compiled kernel in ``native_probe.c`` (built
with the system's C compiler into ``DIR``; its counts are checked to equal ``NumericCounts.of``'s on
every column), alone and in the evaluation (``numeric counting by the probe``; the findings are
checked to equal the full evaluation's).  Results: stdout and ``DIR/bound-ROWS.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from bench_drift import BENCH, REPO, child_env, default_detectors, make_sink
from common import READ, atalaia_config

CHILD = READ + r"""
import ctypes, json, sys, time
from datetime import datetime
import numpy as np
import pyarrow.dataset, pyarrow.parquet as pq  # both readers imported before any timing
import monitor.profiles as P
from detectors.profile import NumericCounts
from monitor.config import load_config
from monitor.evaluate import Evaluator, limit_blas_threads

cfg_path, at, rounds, probe = sys.argv[1], datetime.fromisoformat(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
limit_blas_threads()
cfg = load_config(cfg_path)
ev = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False)
cols = list(ev.window_columns())
files = [f.path for f in ev.predictions().files(at - ev.model.window, at)]
full = ev.evaluate(at=at)  # loads (or builds) the reference, warms the page cache
ref = ev._reference.profile

real_of, real_add = NumericCounts.of, P.WindowProfiler.add
mode = ["full"]
kept_counts, kept_batch = {}, []
scoring = [0.0]

def of(values, reference, *, n_null=0, cells=True):
    if mode[0] == "numeric free":
        hit = kept_counts.get(id(reference))
        if hit is None:
            hit = kept_counts[id(reference)] = real_of(values, reference, n_null=n_null, cells=cells)
        return hit
    if mode[0] == "probe" and values.dtype == np.float32:
        return probe_of(values, reference, n_null=n_null)
    return real_of(values, reference, n_null=n_null, cells=cells)

def add(self, batch):
    if mode[0] != "all free":
        return real_add(self, batch)
    if not kept_batch:
        one = P.WindowProfiler(reference=self.reference, columns=self.columns, detectors=self.hooked)
        real_add(one, batch)
        kept_batch.append(one.profile)
    self.profile = self.profile.merge(kept_batch[0])

P.NumericCounts.of = staticmethod(of)
P.WindowProfiler.add = add
for d in ev.detectors:
    def timed(*a, _score=d.score, **k):
        t = time.perf_counter()
        try:
            return _score(*a, **k)
        finally:
            if mode[0] == "full":
                scoring[-1] += time.perf_counter() - t
    d.score = timed

# ---- the compiled probe (native_probe.c), optional
probe_lib = None
if probe != "-":
    probe_lib = ctypes.CDLL(probe)
    V, I64 = ctypes.c_void_p, ctypes.c_int64
    probe_lib.probe_lut.argtypes = [V, I64, ctypes.c_float, ctypes.c_float, I64, V]
    probe_lib.probe_lut.restype = I64
    probe_lib.probe_count.argtypes = [V, I64, V, I64, ctypes.c_float, ctypes.c_float, I64, V, ctypes.c_int, V, V, V]
grids = {}

def probe_grid(reference):
    g = grids.get(id(reference))
    if g is None:
        edges = np.ascontiguousarray(reference.edges_for(np.dtype(np.float32)))
        finite = edges[np.isfinite(edges)]
        cells = 1 << max(6, int(8 * edges.size - 1).bit_length())
        lo = finite[0] if finite.size else np.float32(0)
        scale = np.float32(cells) / (finite[-1] - lo) if finite.size > 1 and finite[-1] > lo else np.float32(0)
        lut = np.empty(cells + 1, np.int32)
        most = probe_lib.probe_lut(edges.ctypes.data, edges.size, float(lo), float(scale), cells, lut.ctypes.data)
        assert most >= 0
        m = int(most).bit_length()
        pad = np.concatenate([edges, np.full((1 << m) + 1, np.nan, np.float32)])
        g = grids[id(reference)] = (reference, pad, edges.size, float(lo), float(scale), cells, lut, m)
    return g

def probe_of(values, reference, *, n_null=0):
    _, pad, ne, lo, scale, cells, lut, m = probe_grid(reference)
    x = np.ascontiguousarray(values)
    counts, stats, sums = np.zeros(ne + 1, np.int64), np.zeros(3, np.int64), np.zeros(5)
    probe_lib.probe_count(x.ctypes.data, x.size, pad.ctypes.data, ne, lo, scale, cells, lut.ctypes.data, m,
                          counts.ctypes.data, stats.ctypes.data, sums.ctypes.data)
    n = int(counts.sum())
    k, s1, s2, below, above = (float(v) for v in sums)
    return NumericCounts(counts=counts, n_null=n_null, n_nan=int(stats[0]) - n_null, n_posinf=int(stats[1]),
                         n_neginf=int(stats[2]),
                         # the probe sums the tail values; counts keep their distances from the end edges
                         below_distance=counts[0] * float(reference.edges[0]) - below if ne and counts[0] else 0.0,
                         above_distance=above - counts[-1] * float(reference.edges[-1]) if ne and counts[-1] else 0.0,
                         mean=k + s1 / n if n else 0.0,
                         m2=max(s2 - s1 * s1 / n, 0.0) if n else 0.0)

modes = ["full", "numeric free", "all free"] + (["probe"] if probe_lib else [])
for m_ in modes[1:]:  # fill the kept counts before any timing
    mode[0] = m_
    out = ev.evaluate(at=at)
    if m_ == "probe":  # exact counts: the same findings
        assert [(f.detector, f.target, f.status) for f in out.findings] == \
               [(f.detector, f.target, f.status) for f in full.findings]
        for a, b in zip(out.findings, full.findings):
            assert (a.value is None) == (b.value is None) and (a.value is None or abs(a.value - b.value) <= 1e-6 * max(1.0, abs(b.value))), (a, b)
times = {m_: [] for m_ in modes}
reads = {"dataset": [], "file": []}
score_times = []
for _ in range(rounds):
    for m_ in modes:
        mode[0] = m_
        scoring.append(0.0)
        t = time.perf_counter(); ev.evaluate(at=at); times[m_].append(time.perf_counter() - t)
        if m_ == "full":
            score_times.append(scoring[-1])
    for how in reads:
        t = time.perf_counter(); read(files, cols, 262144, how); reads[how].append(time.perf_counter() - t)
mode[0] = "full"

# ---- one thread, the first window file: cost per value
table = pq.read_table(files[0], columns=[c for c in cols if c in ref.numeric])
per_value = {"cell map": 0.0, "sorted": 0.0, "np.sort alone": 0.0, "probe": 0.0}
values_counted = 0
def best(fn, reps=7):
    out = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return min(out)
for name in table.column_names:
    x, n_null = P.numeric_values(table.column(name))
    r = ref.numeric[name]
    per_value["cell map"] += best(lambda: real_of(x, r, n_null=n_null, cells=True))
    per_value["sorted"] += best(lambda: real_of(x, r, n_null=n_null, cells=False))
    per_value["np.sort alone"] += best(lambda: np.sort(x))
    if probe_lib is not None and x.dtype == np.float32:
        a, b = real_of(x, r, n_null=n_null), probe_of(x, r, n_null=n_null)
        assert np.array_equal(a.counts, b.counts) and (a.n_nan, a.n_posinf, a.n_neginf) == (b.n_nan, b.n_posinf, b.n_neginf), name
        per_value["probe"] += best(lambda: probe_of(x, r, n_null=n_null))
    values_counted += x.size
print(json.dumps({
    "rows": full.rows, "findings": len(full.findings), "rounds": rounds, "columns": cols,
    "seconds": {m_: min(v) for m_, v in times.items()},
    "scoring_seconds": min(score_times),
    "floor_seconds": min(min(v) for v in reads.values()),
    "floor_seconds_by_reader": {k: min(v) for k, v in reads.items()},
    "ns_per_value": {k: v / values_counted * 1e9 for k, v in per_value.items() if k != "probe" or probe_lib},
    "values_per_file": values_counted,
    "cells_count_faster": P.cells_count_faster(),
}))
"""


def build_probe(out: Path) -> Path:
    """``native_probe.c`` as a shared library in ``out`` (the system's C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("--probe-kernel: no C compiler (cc or gcc) on PATH")
    lib = out / "native_probe.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib),
                    str(BENCH / "native_probe.c")], check=True)
    return lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="window rows (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds, minimum of each (default: 9)")
    ap.add_argument("--dir", type=Path, default=BENCH / "out" / "drift")
    ap.add_argument("--probe-kernel", action="store_true", help="also build and time native_probe.c")
    args = ap.parse_args()
    out = args.dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sink = make_sink(out / f"data-{args.rows}", args.rows)
    detectors, _ = default_detectors()
    cfg_path = out / f"atalaia-{args.rows}.yaml"
    cfg_path.write_text(yaml.safe_dump(atalaia_config(sink, (out / f"state-{args.rows}").resolve(), detectors)))
    probe = str(build_probe(out)) if args.probe_kernel else "-"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(cfg_path), sink.window_end.isoformat(),
                           str(args.rounds), probe], check=True, capture_output=True, text=True,
                          env=child_env(), cwd=REPO)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    floor = r["floor_seconds"]
    s = r["seconds"]
    labels = {"full": "evaluate", "numeric free": "evaluate, numeric counting free",
              "all free": "evaluate, all counting free", "probe": "evaluate, numeric counting by the probe"}
    print(f"{args.rows:,} rows, {len(r['columns'])} columns, {r['findings']} findings, "
          f"minimum of {r['rounds']} interleaved rounds")
    print(f"{'':44} {'seconds':>8} {'/ floor':>8}")
    print(f"{'floor (faster pyarrow reader)':44} {floor:8.3f} {1:8.2f}")
    for key, label in labels.items():
        if key in s:
            print(f"{label:44} {s[key]:8.3f} {s[key] / floor:8.2f}")
    print(f"{'  of which scoring (one thread)':44} {r['scoring_seconds']:8.3f} {r['scoring_seconds'] / floor:8.2f}")
    ns = r["ns_per_value"]
    print("one thread, ns per value: " + ", ".join(f"{k} {v:.2f}" for k, v in ns.items())
          + f" ({r['values_per_file']:,} values of the first file); this CPU counts large batches "
          + ("through the cell map" if r["cells_count_faster"] else "by sorting them"))
    (out / f"bound-{args.rows}.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
