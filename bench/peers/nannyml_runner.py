"""Peer runner: NannyML's ``UnivariateDriftCalculator`` fit on reference, calculated on current
(run inside the NannyML venv).

    python bench/peers/nannyml_runner.py --reference REF.parquet --current DIR \
        --numeric a,b --categorical c,d --timestamp ts [--chunk-size 10000]

Reads both with ``pandas.read_parquet`` (the features and the timestamp), then runs
``UnivariateDriftCalculator(continuous_methods=['kolmogorov_smirnov', 'jensen_shannon'],
categorical_methods=['chi2', 'jensen_shannon'], chunk_size=10000)`` with NannyML's default
thresholds (reference-chunk mean +/- 3 sd).  NannyML alerts per chunk: a column is *flagged*
when any analysis chunk raises an alert under any of its methods; the share of alerting chunks
per method is reported too.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

T0 = time.perf_counter()
import pandas as pd  # noqa: E402

import nannyml as nml  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--current", required=True)
    ap.add_argument("--numeric", required=True)
    ap.add_argument("--categorical", required=True)
    ap.add_argument("--timestamp", required=True)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    args = ap.parse_args()
    num, cat = args.numeric.split(","), args.categorical.split(",")
    cols = [*num, *cat]

    t = time.perf_counter()
    ref = pd.read_parquet(args.reference, columns=[args.timestamp, *cols])
    cur = pd.read_parquet(args.current, columns=[args.timestamp, *cols])
    read_seconds = time.perf_counter() - t
    rss_after_read = rss_mb()

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = nml.UnivariateDriftCalculator(
            column_names=cols, treat_as_categorical=cat, timestamp_column_name=args.timestamp,
            continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
            categorical_methods=["chi2", "jensen_shannon"], chunk_size=args.chunk_size)
        calc.fit(ref)
        results = calc.calculate(cur)
        df = results.filter(period="analysis").to_df()
    compute_seconds = time.perf_counter() - t

    per_column: dict[str, dict] = {}
    for col in cols:
        methods = {}
        for method in sorted({m for (c, m, _) in df.columns if c == col}):
            alerts = df[(col, method, "alert")].astype(bool)
            methods[method] = {"alerting_chunks": int(alerts.sum()), "chunks": int(len(alerts))}
        per_column[col] = {"methods": methods,
                           "drift_detected": any(v["alerting_chunks"] > 0 for v in methods.values())}
    flagged = [c for c in cols if per_column[c]["drift_detected"]]
    print(json.dumps({
        "tool": "nannyml", "version": nml.__version__, "api": "UnivariateDriftCalculator",
        "chunk_size": args.chunk_size, "rows_reference": len(ref), "rows_current": len(cur),
        "import_seconds": IMPORT_SECONDS, "read_seconds": read_seconds, "compute_seconds": compute_seconds,
        "total_seconds": read_seconds + compute_seconds,
        "rss_after_read_mb": rss_after_read, "peak_rss_mb": rss_mb(),
        "flagged": flagged, "per_column": per_column,
    }))


if __name__ == "__main__":
    main()
