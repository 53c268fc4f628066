"""Benchmark: ``atalaia check`` on a large window next to reading the same columns with pyarrow.

    python bench/bench_check.py [--rows 10000000] [--repeat 3] [--dir bench/out/check]

Writes a sink (a window of ``--rows`` predictions over 10 hourly partitions, 20 numeric + 5
categorical features, score, predicted label; a 1M-row reference file), then, in one run and
interleaved, measures in fresh subprocesses:

* ``floor``: pyarrow alone reading exactly the columns a check reads, from the window's
  partitions, as record batches, converting each numeric column to NumPy;
* ``check (cold)``: ``atalaia check`` with an empty state dir (builds the reference profile);
* ``check (warm)``: ``atalaia check`` with the reference profile cached in the state dir.

Reports wall time, peak RSS and their ratios to the floor (medians of ``--repeat`` runs); the
machine is shared and noisy, so only the ratios mean anything.  Results go to stdout and
``DIR/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import atalaia_config, measure, write_sink  # noqa: E402

FLOOR = r"""
import sys, pyarrow.dataset as ds, pyarrow as pa, pyarrow.compute as pc
from datetime import datetime
root, start, end, cols = sys.argv[1], datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3]), sys.argv[4].split(",")
files = sorted(str(p) for p in __import__("pathlib").Path(root).rglob("*.parquet"))
d = ds.dataset(files, format="parquet")
flt = (ds.field("ts") >= pa.scalar(start, type=pa.timestamp("us", tz="UTC"))) & (ds.field("ts") < pa.scalar(end, type=pa.timestamp("us", tz="UTC")))
n = 0
for b in d.to_batches(columns=cols, filter=flt, batch_size=262144):
    for c in b.columns:
        if pa.types.is_floating(c.type):
            c.to_numpy(zero_copy_only=False)
    n += b.num_rows
print(n)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "out" / "check")
    args = ap.parse_args()

    sink = write_sink(args.dir / f"data-{args.rows}", rows=args.rows)
    cols = ["ts", *sink.numeric, *sink.categorical, "score", "predicted_label"]
    state = args.dir / "state"
    cfg_path = args.dir / "atalaia.yaml"
    cfg_path.write_text(yaml.safe_dump(atalaia_config(sink, state, ["psi", "ks"])))
    at = sink.window_end.isoformat()
    floor_cmd = [sys.executable, "-c", FLOOR, str(sink.predictions), sink.window_start.isoformat(),
                 sink.window_end.isoformat(), ",".join(cols)]
    check_cmd = [sys.executable, "-m", "monitor.cli", "check", "--config", str(cfg_path), "--at", at,
                 "--format", "json"]

    results: dict[str, list] = {"floor": [], "check (cold)": [], "check (warm)": []}
    for _ in range(args.repeat):
        results["floor"].append(measure(floor_cmd))
        shutil.rmtree(state, ignore_errors=True)
        results["check (cold)"].append(measure(check_cmd))
        results["check (warm)"].append(measure(check_cmd))
    rows_read = int(results["floor"][0].stdout.strip())
    n_findings = len(results["check (warm)"][0].stdout.splitlines())

    med = {k: (statistics.median(m.seconds for m in v), statistics.median(m.peak_mb for m in v))
           for k, v in results.items()}
    f_s, f_mb = med["floor"]
    print(f"window: {rows_read:,} rows x {len(sink.numeric)} numeric + {len(sink.categorical)} categorical "
          f"features (+ score, predicted label); psi + ks; {n_findings} findings; median of {args.repeat}")
    print(f"{'':16}{'seconds':>10}{'peak MB':>10}{'time / floor':>14}{'memory / floor':>16}")
    for k, (s, mb) in med.items():
        print(f"{k:16}{s:10.2f}{mb:10.0f}{s / f_s:14.2f}{mb / f_mb:16.2f}")
    out = {k: {"seconds": s, "peak_mb": mb, "time_ratio": s / f_s, "memory_ratio": mb / f_mb,
               "runs": [[m.seconds, m.peak_mb] for m in results[k]]} for k, (s, mb) in med.items()}
    out["rows"] = rows_read
    (args.dir / "results.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
