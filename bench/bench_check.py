"""Benchmark: ``atalaia check`` on a large window next to reading the same columns with pyarrow.

    python bench/bench_check.py [--rows 10000000] [--repeat 3] [--dir bench/out/check]

Writes a sink (a window of ``--rows`` predictions over 10 hourly partitions, 20 numeric + 5
categorical features, score, predicted label; a 1M-row reference file), then, in one run and
interleaved, measures in fresh subprocesses:

* ``floor``: pyarrow alone reading exactly the columns a check reads from the window's files,
  as record batches, each float column taken as a NumPy view of its Arrow buffer (as atalaia
  takes it); two readers, ``pyarrow.dataset`` and ``ParquetFile.iter_batches`` file by file,
  and the faster of the two (median) is the floor (``common.FLOOR``, shared with
  ``bench_drift.py``);
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
from common import FLOOR, FLOOR_READERS, atalaia_config, measure, write_sink  # noqa: E402

BATCH_SIZE = 262_144


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
    # every partition lies wholly inside the window: atalaia reads them without a row filter, and so does the floor
    files = sorted(str(p) for p in sink.predictions.rglob("*.parquet"))
    floor_cmd = {how: [sys.executable, "-c", FLOOR, ",".join(files), ",".join(cols), str(BATCH_SIZE), how]
                 for how in FLOOR_READERS}
    check_cmd = [sys.executable, "-m", "monitor.cli", "check", "--config", str(cfg_path), "--at", at,
                 "--format", "json"]

    by_reader: dict[str, list] = {how: [] for how in FLOOR_READERS}
    results: dict[str, list] = {"check (cold)": [], "check (warm)": []}
    for _ in range(args.repeat):
        for how, cmd in floor_cmd.items():
            by_reader[how].append(measure(cmd, ok_codes=(0,)))
        shutil.rmtree(state, ignore_errors=True)
        results["check (cold)"].append(measure(check_cmd))
        results["check (warm)"].append(measure(check_cmd))
    fastest = min(FLOOR_READERS, key=lambda how: statistics.median(m.seconds for m in by_reader[how]))
    results = {"floor": by_reader[fastest], **results}
    rows_read = int(results["floor"][0].stdout.strip())
    n_findings = len(results["check (warm)"][0].stdout.splitlines())

    med = {k: (statistics.median(m.seconds for m in v), statistics.median(m.peak_mb for m in v))
           for k, v in results.items()}
    f_s, f_mb = med["floor"]
    print(f"floor reader: {fastest} (" + ", ".join(
        f"{how} {statistics.median(m.seconds for m in ms):.2f} s" for how, ms in by_reader.items()) + ")")
    print(f"window: {rows_read:,} rows x {len(sink.numeric)} numeric + {len(sink.categorical)} categorical "
          f"features (+ score, predicted label); psi + ks; {n_findings} findings; median of {args.repeat}")
    print(f"{'':16}{'seconds':>10}{'peak MB':>10}{'time / floor':>14}{'memory / floor':>16}")
    for k, (s, mb) in med.items():
        print(f"{k:16}{s:10.2f}{mb:10.0f}{s / f_s:14.2f}{mb / f_mb:16.2f}")
    out = {k: {"seconds": s, "peak_mb": mb, "time_ratio": s / f_s, "memory_ratio": mb / f_mb,
               "runs": [[m.seconds, m.peak_mb] for m in results[k]]} for k, (s, mb) in med.items()}
    out["rows"] = rows_read
    out["floor_reader"] = fastest
    out["floor_by_reader"] = {how: [[m.seconds, m.peak_mb] for m in ms] for how, ms in by_reader.items()}
    (args.dir / "results.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
