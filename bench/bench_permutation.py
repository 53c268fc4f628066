"""What permutation p-values cost: scoring a small window with them and with the limit laws.

    python bench/bench_permutation.py [--rounds 7] [--windows 120,150,300,1000]

For each window size: a 5 000-row reference and a no-change window of 20 numeric features
(10 normal, 10 rare-event columns of 97 % zeros), every default fine-grid detector (ks,
cramer_von_mises, wasserstein, anderson_darling, mean_shift) scored on them.  Interleaved
rounds time the scoring with permutation p-values where the effective size calls for them
(the default) and with every p-value from its limit law (``PERMUTATION_BELOW`` set to 0),
each on fresh counts (per-pair results are cached on the counts); the minimum of the rounds
is reported, and the extra time per column that took permutations.  Counting the window is
the same in both and is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import UTC, datetime

import numpy as np

from detectors import permutation
from detectors.base import Context
from detectors.profile import NumericCounts, NumericReference, Profile
from detectors.registry import Registry

DETECTORS = ("ks", "cramer_von_mises", "wasserstein", "anderson_darling", "mean_shift")
CTX = Context(model="bench", window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 1, 1, tzinfo=UTC))


def column(rng: np.random.Generator, j: int, k: int) -> np.ndarray:
    if j % 2:
        return np.where(rng.random(k) < 0.97, 0.0, rng.integers(1, 200, k).astype(float))
    return rng.normal(size=k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--windows", default="120,150,300,1000")
    args = ap.parse_args()
    registry = Registry()
    detectors = [registry.create(n) for n in DETECTORS]
    rng = np.random.default_rng(0)
    refs = {f"f{j:02d}": NumericReference.from_values(column(rng, j, 5000)) for j in range(20)}
    summary = Profile(n_rows=5000, numeric=refs)
    print(f"{'window':>7} {'columns permuted':>17} {'limit laws ms':>14} {'permutation ms':>15} {'extra ms/column':>16}")
    default_below = permutation.PERMUTATION_BELOW
    for window in (int(w) for w in args.windows.split(",")):
        counts = {c: NumericCounts.of(column(rng, int(c[1:]), window), r) for c, r in refs.items()}
        permuted = sum(permutation.needs_permutation(refs[c].counts, v.counts) for c, v in counts.items())
        best = {"limit": float("inf"), "permutation": float("inf")}
        for _ in range(args.rounds):
            for mode in best:
                permutation.PERMUTATION_BELOW = default_below if mode == "permutation" else 0
                current = Profile(n_rows=window, numeric={c: dataclasses.replace(v) for c, v in counts.items()})
                t = time.perf_counter()
                for d in detectors:
                    d.score(summary, current, context=CTX)
                best[mode] = min(best[mode], time.perf_counter() - t)
        permutation.PERMUTATION_BELOW = default_below
        extra = (best["permutation"] - best["limit"]) / permuted if permuted else 0.0
        print(f"{window:>7} {permuted:>14}/20 {best['limit'] * 1e3:>14.1f} {best['permutation'] * 1e3:>15.1f} "
              f"{extra * 1e3:>16.1f}")


if __name__ == "__main__":
    main()
