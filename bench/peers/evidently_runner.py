"""Peer runner: Evidently's ``DataDriftPreset`` on reference vs current (run inside the Evidently venv).

    python bench/peers/evidently_runner.py --reference REF.parquet --current DIR \
        --numeric a,b --categorical c,d

Reads both with ``pandas.read_parquet`` (only the feature columns), then runs
``Report([DataDriftPreset()], include_tests=True)`` with every default (Evidently picks the
method per column: normed Wasserstein / Jensen-Shannon above 1,000 reference rows, KS /
chi-square below).  A column is *flagged* when its drift test fails (``drift_detected``).
Prints one JSON object: read and compute seconds (separately), the flagged columns and each
column's method, threshold and score.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

T0 = time.perf_counter()
import pandas as pd  # noqa: E402

import evidently  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--current", required=True)
    ap.add_argument("--numeric", required=True)
    ap.add_argument("--categorical", required=True)
    args = ap.parse_args()
    num, cat = args.numeric.split(","), args.categorical.split(",")
    cols = [*num, *cat]

    t = time.perf_counter()
    ref = pd.read_parquet(args.reference, columns=cols)
    cur = pd.read_parquet(args.current, columns=cols)
    read_seconds = time.perf_counter() - t
    rss_after_read = rss_mb()

    t = time.perf_counter()
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report([DataDriftPreset()], include_tests=True)
    snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                          Dataset.from_pandas(ref, data_definition=definition))
    result = snapshot.dict()
    compute_seconds = time.perf_counter() - t

    per_column: dict[str, dict] = {}
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            per_column[cfg["column"]] = {"method": cfg.get("method"), "threshold": cfg.get("threshold"),
                                         "score": m.get("value")}
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        col = params.get("column")
        if col in per_column:
            per_column[col]["drift_detected"] = test.get("status") == "FAIL"
    flagged = [c for c in cols if per_column.get(c, {}).get("drift_detected")]
    print(json.dumps({
        "tool": "evidently", "version": evidently.__version__, "api": "Report([DataDriftPreset()])",
        "rows_reference": len(ref), "rows_current": len(cur),
        "import_seconds": IMPORT_SECONDS, "read_seconds": read_seconds, "compute_seconds": compute_seconds,
        "total_seconds": read_seconds + compute_seconds,
        "rss_after_read_mb": rss_after_read, "peak_rss_mb": rss_mb(),
        "flagged": flagged, "per_column": per_column,
    }))


if __name__ == "__main__":
    main()
