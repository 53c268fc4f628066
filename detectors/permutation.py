"""Conditional (permutation) p-values of the grid-count tests, for samples too small for their limit laws.

The rank and distribution tests of :mod:`detectors.drift_numeric` (Kolmogorov–Smirnov,
Cramér–von Mises, Anderson–Darling, Wilcoxon, Ansari–Bradley) take their p-values from
limit laws.  Those hold once each sample has a fair number of values spread over the
grid; they fail where few values lie outside one dominant value: a column of rare events
(97 % zeros) in a window of 120 rows holds about four non-zero values, and how many it
holds is a skewed count whose upper tail no normal or bridge limit follows.  There the
asymptotic p-values came out 2-3x too small at the levels that matter after a
Benjamini–Hochberg correction (p <= 0.0025 rejected in 0.6-0.7 % of no-change windows).

Under no change the two samples are exchangeable: given the pooled grid counts
:math:`l_b` (reference and window together, :math:`N = n + m` values), every way of
choosing which *m* of the *N* values form the window is equally likely.  The window's
counts are then multivariate hypergeometric, and the p-value of a statistic *T* is the
share of such random splits whose *T* is at least the observed one.  That p-value is
exact at every sample size; this module estimates it by Monte Carlo, with
Besag & Clifford's (1991) sequential stopping: drawing stops for a test once *h* =
:data:`STOP_AFTER` draws have reached its observed statistic, giving :math:`p = h/L`
after *L* draws, and otherwise after :data:`MAX_DRAWS` draws with
:math:`p = (g + 1)/(B + 1)`.  Both are valid p-values: :math:`P(p \\le \\alpha) \\le \\alpha`
under no change, whatever the number of draws.  A window that did not change typically
stops after a few dozen draws; the smallest p-value is :math:`1/(B+1)`, about 5e-4,
enough for one drifted feature among 100 to pass a correction at 0.05.

The statistics are those of the grid tests with every bin a group of tied values (the
out-of-range slots too: their values are tied here rather than distinct, the same for
the observed split and every drawn one), each computed for all drawn splits at once:

* ``ks``: :math:`\\max_b |L_b/n - C_b (1/n + 1/m)|` (``L``, ``C``: the pooled and the
  window's cumulative counts at the end of bin *b*; the reference's is ``L - C``);
* ``cvm``: :math:`\\frac{nm}{N^2} \\sum_b l_b (F_b - G_b)^2`;
* ``ad``: the midrank :math:`A^2_{akN}` of Scholz & Stephens (k = 2), as
  :func:`detectors.drift_numeric.anderson_darling_binned`;
* ``wilcoxon``, ``ansari``: :math:`|\\sum_b q_b \\bar a_b - m \\bar a|` with :math:`\\bar a_b`
  the mean rank score of bin *b* (midrank; :math:`\\min(r, N + 1 - r)`), two-sided.

One condition of exactness is not met by construction: the grid is the reference's (its
quantiles and atoms), not the pooled sample's, and the slots beyond the reference's range
can hold window values only.  The permutation takes the bins as given — the p-value is the
exact one of the binned statistic given the bins — and on 97 % zeros at 120 rows, where the
limit laws rejected 2.3-2.8 times the nominal rate at p <= 0.0025, it rejected at the
nominal rate within its sampling error (``tests/test_permutation.py``).

Which windows get them is decided by :func:`needs_permutation`: an *effective size*
under :data:`PERMUTATION_BELOW` — the smaller sample's size times the pooled share
outside the largest bin, so ~min(n, m) for continuous data and ~3 % of it for a column of
97 % zeros.  Draws are seeded from the counts themselves: the same counts give the same
p-values, run after run.

>>> rng = np.random.default_rng(0)
>>> ref = np.bincount(rng.integers(0, 50, 400), minlength=52)
>>> cur = np.bincount(rng.integers(0, 50, 120), minlength=52)
>>> needs_permutation(ref, cur)
True
>>> p = permutation_p_values(ref, cur)
>>> sorted(p), bool(min(p.values()) > 0.01)
(['ad', 'ansari', 'cvm', 'ks', 'wilcoxon'], True)
>>> shifted = np.bincount(rng.integers(20, 50, 120), minlength=52)
>>> permutation_p_values(ref, shifted)["wilcoxon"] == 1 / (MAX_DRAWS + 1)
True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["PERMUTATION_BELOW", "MAX_DRAWS", "STOP_AFTER", "TESTS", "effective_size", "needs_permutation",
           "permutation_p_values", "permutation_note"]

#: an effective size (see :func:`effective_size`) under this gets permutation p-values
PERMUTATION_BELOW = 300
#: draws at most per pair: the smallest p-value is 1 / (MAX_DRAWS + 1)
MAX_DRAWS = 2000
#: a test stops drawing once this many draws reached its observed statistic (Besag & Clifford's h)
STOP_AFTER = 10
#: draws per vectorised step
CHUNK = 50
#: bins holding more than this share of the pooled values are drawn bin by bin (hypergeometric), the rest item by item
_BIG_BIN = 0.01
#: a pool of at most this many values is drawn from through a lookup table of their bins (4 bytes each)
_LOOKUP_MAX = 1 << 20
#: the tests, in the order their statistics are computed
TESTS = ("ks", "cvm", "ad", "wilcoxon", "ansari")


def _as_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(reference, dtype=np.int64)
    q = np.asarray(current, dtype=np.int64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"reference and current counts must be 1-D of one length, got {p.shape} and {q.shape}")
    if p.size and (p.min() < 0 or q.min() < 0):
        raise ValueError("counts must not be negative")
    return p, q


def effective_size(reference: np.ndarray, current: np.ndarray) -> float:
    """The smaller sample's size times the pooled share outside the largest grid bin.

    .. math:: e = \\min(n, m)\\,(1 - \\max_b l_b / N)

    About ``min(n, m)`` for continuous data; for a column of 97 % zeros, 3 % of it: the
    number of values the smaller sample is expected to hold outside the dominant value.

    >>> effective_size(np.array([970, 30]), np.array([97, 3]))
    3.0
    """
    p, q = _as_counts(reference, current)
    l = p + q
    big_n = int(l.sum())
    if big_n == 0:
        return 0.0
    return min(int(p.sum()), int(q.sum())) * (big_n - int(l.max())) / big_n


def needs_permutation(reference: np.ndarray, current: np.ndarray) -> bool:
    """Whether the pair's p-values should be permutation ones: an effective size under :data:`PERMUTATION_BELOW`
    with values on both sides.

    >>> needs_permutation(np.full(1000, 5), np.full(1000, 1)), needs_permutation(np.full(1000, 50), np.full(1000, 1))
    (False, False)
    >>> needs_permutation(np.array([4850, 150]), np.array([116, 4]))
    True
    """
    p, q = _as_counts(reference, current)
    if p.sum() == 0 or q.sum() == 0:
        return False
    return effective_size(p, q) < PERMUTATION_BELOW


def permutation_note(reference: np.ndarray, current: np.ndarray) -> str:
    """The finding note of a permutation p-value."""
    return (f"permutation p-value (effective size {effective_size(reference, current):.0f} "
            f"under {PERMUTATION_BELOW}: the limit law does not hold)")


class _Null:
    """The pooled counts' fixed quantities, and the statistics of many drawn samples at once.

    The drawn sample (``m`` values; the other sample holds ``n``) is given sparse: its bins
    and counts, row by row.  Its cumulative count C is constant between two of its bins, so
    each statistic sums or maximises over those runs of bins with prefix sums of the pooled
    quantities: O(values drawn) per draw, not O(bins).  All five statistics are symmetric in
    the two samples, so the drawn one may be either.
    """

    def __init__(self, pooled: np.ndarray, n: int, m: int) -> None:
        l = pooled.astype(np.float64)
        self.size, self.n, self.m = l.size, float(n), float(m)
        big_n = float(n + m)
        self.big_n = big_n
        cum = np.cumsum(l)
        self.cum = cum
        lo = cum - l
        ba = cum - 0.5 * l  # pooled mid-cumulative counts
        self.ba = ba
        den = ba * (big_n - ba) - 0.25 * big_n * l
        w = np.divide(l, den, out=np.zeros_like(den), where=den > 0)
        self.w = w
        self.mid = (lo + cum + 1) / 2  # mean rank in each bin
        fold = float((n + m + 1) // 2)

        def ansari_cum(x: np.ndarray) -> np.ndarray:  # Σ_{r <= x} min(r, N + 1 - r)
            def s(y: np.ndarray | float) -> np.ndarray:
                return np.asarray(y) * (np.asarray(y) + 1) / 2
            return s(np.minimum(x, fold)) + s(big_n - fold) - s(big_n - np.maximum(x, fold))

        self.ansari = (ansari_cum(cum) - ansari_cum(lo)) / l  # mean Ansari–Bradley score in each bin
        self.mean_mid = float(l @ self.mid) / big_n
        self.mean_ansari = float(l @ self.ansari) / big_n

        def prefix(x: np.ndarray) -> np.ndarray:  # prefix[e + 1] - prefix[s]: the sum over bins s … e
            return np.concatenate([[0.0], np.cumsum(x)])

        self.s_l, self.s_lc, self.s_lc2 = prefix(l), prefix(l * cum), prefix(l * cum * cum)
        self.s_w, self.s_wb, self.s_wb2 = prefix(w), prefix(w * ba), prefix(w * ba * ba)

    def statistics(self, row: np.ndarray, bins: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(len(TESTS), rows)`` statistics of drawn samples given as ``(row, bin, count)`` entries
        sorted by row and bin, every row holding at least one."""
        n, m, big_n, cum = self.n, self.m, self.big_n, self.cum
        kappa = 1.0 / n + 1.0 / m
        e_n = row.size
        first = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        last = np.concatenate([first[1:], [e_n]]) - 1
        c = counts.astype(np.float64)
        run = np.cumsum(c)
        big_c = run - np.repeat(run[first] - c[first], np.diff(np.concatenate([first, [e_n]])))
        start = bins
        end = np.concatenate([bins[1:], [self.size]]) - 1  # the run of bins where C holds
        end[last] = self.size - 1

        def over(prefix: np.ndarray) -> np.ndarray:
            return prefix[end + 1] - prefix[start]

        lead = bins[first]  # bins before a row's first entry: C = 0 there
        # KS: F - G = cum/n - κC rises within a run, so its extremes sit at the run's ends
        ks_run = np.maximum(np.abs(cum[start] / n - kappa * big_c), np.abs(cum[end] / n - kappa * big_c))
        ks = np.maximum(np.maximum.reduceat(ks_run, first), np.where(lead > 0, cum[lead - 1] / n, 0.0))
        # CvM: Σ l (cum/n - κC)²
        cvm_run = over(self.s_lc2) / (n * n) - 2 * kappa * big_c / n * over(self.s_lc) + kappa * kappa * big_c * big_c * over(self.s_l)
        cvm = (np.add.reduceat(cvm_run, first) + self.s_lc2[lead] / (n * n)) * (n * m / (big_n * big_n))
        # AD: Σ w (m B - N C_mid)², C_mid = C - q/2 in a drawn bin, C elsewhere
        ad_run = (m * m * over(self.s_wb2) - 2 * m * big_n * big_c * over(self.s_wb)
                  + big_n * big_n * big_c * big_c * over(self.s_w))
        at = m * self.ba[bins]
        ad_run += self.w[bins] * ((at - big_n * (big_c - c / 2)) ** 2 - (at - big_n * big_c) ** 2)
        ad = (np.add.reduceat(ad_run, first) + m * m * self.s_wb2[lead]) * (kappa * (big_n - 1.0) / (big_n * big_n))
        wil = np.abs(np.add.reduceat(c * self.mid[bins], first) - m * self.mean_mid)
        ans = np.abs(np.add.reduceat(c * self.ansari[bins], first) - m * self.mean_ansari)
        return np.stack([ks, cvm, ad, wil, ans])


def _distinct(rng: np.random.Generator, pool: int, left: np.ndarray) -> np.ndarray:
    """``left[r]`` distinct values of ``range(pool)`` for each row r, uniformly; row after row.

    All rows draw with replacement at once and redraw the repeats until none is left: a
    procedure that only compares values treats every label alike, so each row's set is a
    uniformly random subset.  A row that takes over half of the pool (many repeats to
    chase) is drawn by ``Generator.choice`` instead.
    """
    base = np.repeat(np.arange(left.size, dtype=np.int64) * pool, left)  # row r's values are keyed r * pool + value
    values = rng.integers(0, pool, size=base.size)
    crowded = left * 2 > pool
    for r in np.flatnonzero(crowded):
        values[base == r * pool] = rng.choice(pool, size=int(left[r]), replace=False, shuffle=False)
    key = base + values
    while True:
        key.sort()
        repeat = np.flatnonzero(key[1:] == key[:-1]) + 1
        if repeat.size == 0:
            return key % pool  # sorted by row, then value: the rows stay in order
        row_start = key[repeat] - key[repeat] % pool
        key[repeat] = row_start + rng.integers(0, pool, size=repeat.size)


def _draw(rng: np.random.Generator, pooled: np.ndarray, k: int, rows: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` random splits: ``k`` values drawn without replacement from ``pooled``, as
    ``(row, bin, count)`` entries sorted by row and bin.

    Bins holding over :data:`_BIG_BIN` of the values are drawn one hypergeometric count
    at a time for all rows together; the values left to draw come item by item from the
    other bins, so a draw costs about the effective size, not ``k``.
    """
    size = pooled.size
    total = int(pooled.sum())
    big = np.flatnonzero(pooled > _BIG_BIN * total)
    left = np.full(rows, k, np.int64)
    pool = total
    keys, weights = [], []
    for b in big:
        good = int(pooled[b])
        bad = pool - good
        got = rng.hypergeometric(good, bad, left) if bad > 0 else left.copy()
        keys.append(np.arange(rows) * size + b)
        weights.append(got)
        left -= got
        pool = bad
    if pool > 0 and left.any():
        rest = pooled.copy()
        rest[big] = 0
        picks = _distinct(rng, pool, left)
        if pool <= _LOOKUP_MAX:  # the bin of each of the pool's values, looked up
            bins = np.repeat(np.arange(size, dtype=np.int32), rest)[picks]
        else:
            bins = np.searchsorted(np.cumsum(rest), picks, side="right")
        keys.append(np.repeat(np.arange(rows) * size, left) + bins)
        weights.append(np.ones(picks.size, np.int64))
    key, where = np.unique(np.concatenate(keys), return_inverse=True)
    count = np.bincount(where, weights=np.concatenate(weights), minlength=key.size).astype(np.int64)
    keep = count > 0
    key, count = key[keep], count[keep]
    return key // size, key % size, count


def permutation_p_values(reference: np.ndarray, current: np.ndarray, *, stop_after: int = STOP_AFTER,
                         max_draws: int = MAX_DRAWS) -> dict[str, float]:
    """Monte Carlo permutation p-values of the grid tests (:data:`TESTS`) for two count vectors.

    See the module docstring: multivariate hypergeometric splits of the pooled counts,
    sequential stopping after ``stop_after`` draws at or above the observed statistic,
    at most ``max_draws`` draws; deterministic for given counts (bins empty on both
    sides make no difference).  The detectors use the defaults; larger values give a
    finer estimate of the same p-value.
    """
    if stop_after < 1 or max_draws < 1:
        raise ValueError(f"stop_after and max_draws must be at least 1, got {stop_after} and {max_draws}")
    p, q = _as_counts(reference, current)
    n, m = int(p.sum()), int(q.sum())
    pooled = p + q
    if n == 0 or m == 0 or np.count_nonzero(pooled) < 2:
        return {t: 1.0 for t in TESTS}
    keep = pooled > 0  # a bin empty on both sides changes no statistic
    kept, q_kept = pooled[keep], q[keep]
    # draw the smaller sample (the statistics are symmetric): the window, or the reference
    window_side = m <= n
    k = m if window_side else n
    drawn_side = q_kept if window_side else kept - q_kept
    null = _Null(kept, n + m - k, k)
    on = np.flatnonzero(drawn_side)
    observed = null.statistics(np.zeros(on.size, np.int64), on, drawn_side[on])[:, 0]
    limit = observed - 1e-9 * np.maximum(1.0, np.abs(observed))  # equal up to rounding counts as reached
    rng = np.random.default_rng([n, m, zlib.crc32(kept.tobytes()), zlib.crc32(q_kept.tobytes())])
    hits = np.zeros(len(TESTS), np.int64)
    stopped_at = np.zeros(len(TESTS), np.int64)  # the draw of the h-th hit, 0 while running
    drawn = 0
    while drawn < max_draws and not stopped_at.all():
        rows = min(CHUNK, max_draws - drawn)
        reached = null.statistics(*_draw(rng, kept, k, rows)) >= limit[:, None]
        for t in np.flatnonzero(stopped_at == 0):
            where = np.flatnonzero(reached[t])
            need = stop_after - hits[t]
            if where.size >= need:
                stopped_at[t] = drawn + int(where[need - 1]) + 1
                hits[t] = stop_after
            else:
                hits[t] += where.size
        drawn += rows
    return {t: float(stop_after / stopped_at[i] if stopped_at[i] else (hits[i] + 1) / (drawn + 1))
            for i, t in enumerate(TESTS)}
