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
after *L* draws, and otherwise after *B* draws with :math:`p = (g + 1)/(B + 1)`.  Both
are valid p-values: :math:`P(p \\le \\alpha) \\le \\alpha` under no change, whatever the
number of draws.  A window that did not change typically stops after a few dozen draws;
the smallest p-value is :math:`1/(B+1)`, and *B* (:func:`draws_for`) is what a lone
drifted column needs to pass the detector's correction: at least :data:`MAX_DRAWS`,
4 x columns / alpha, at most :data:`DRAWS_CAP`.

The statistics are those of the grid tests with every bin a group of tied values (the
out-of-range slots too: their values are tied here rather than distinct, the same for
the observed split and every drawn one), on at most about :data:`GROUPS` groups of
consecutive bins (:func:`_grouped`: a fine grid of 2 000 bins is far finer than a sample
of a few hundred values can tell apart, and each split then costs a tenth), each
computed for all drawn splits at once:

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

import math
import zlib

import numpy as np

__all__ = ["PERMUTATION_BELOW", "MAX_DRAWS", "STOP_AFTER", "TESTS", "effective_size", "needs_permutation",
           "permutation_p_values", "permutation_note", "draws_for"]

#: an effective size (see :func:`effective_size`) under this gets permutation p-values
PERMUTATION_BELOW = 300
#: draws at most per pair by default: the smallest p-value is then 1 / (MAX_DRAWS + 1); see :func:`draws_for`
MAX_DRAWS = 2000
#: the most draws :func:`draws_for` asks for, whatever the number of columns
DRAWS_CAP = 20_000
#: a test stops drawing once this many draws reached its observed statistic (Besag & Clifford's h)
STOP_AFTER = 10
#: draws in the first vectorised step; each next step doubles, up to CHUNK_MAX
CHUNK = 50
CHUNK_MAX = 1000
#: pooled counts of at least this many values are scored bin by bin (rows x bins) rather than by runs of
#: constant C with prefix sums, whose differences of large sums lose digits as the counts grow
DENSE_FROM = 1 << 20
#: at most this many groups of grid bins are permuted: consecutive bins merged to 1/GROUPS of the pooled values
GROUPS = 256
#: numpy's hypergeometric sampler takes fewer than this many values on either side
_HYPERGEOMETRIC_MAX = 10**9
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


def draws_for(smallest_p: float) -> int:
    """Draws at most for a p-value that must be able to reach ``smallest_p`` (a detector's ``alpha`` over its
    number of columns, the level Benjamini–Hochberg or Bonferroni asks of a lone drifted column): enough that
    ``(g + 1)/(B + 1)`` gets to half of it with one draw at the observed statistic (``mean_shift`` doubles its
    smaller p-value); never fewer than :data:`MAX_DRAWS`, never more than :data:`DRAWS_CAP`.

    >>> draws_for(0.05 / 20), draws_for(0.05 / 100), draws_for(0.05 / 5000)
    (2000, 7999, 20000)
    """
    if not 0 < smallest_p <= 1:
        raise ValueError(f"smallest_p must be in (0, 1], got {smallest_p}")
    return int(min(DRAWS_CAP, max(MAX_DRAWS, math.ceil(4 / smallest_p) - 1)))


def permutation_note(reference: np.ndarray, current: np.ndarray) -> str:
    """The finding note of a permutation p-value."""
    return (f"permutation p-value (effective size {effective_size(reference, current):.0f} "
            f"under {PERMUTATION_BELOW}: the limit law does not hold)")


class _Null:
    """The pooled counts' fixed quantities, and the statistics of many drawn samples at once.

    The drawn sample (``m`` values; the other sample holds ``n``) is given sparse: its bins
    and counts, row by row.  Under :data:`DENSE_FROM` pooled values its cumulative count C,
    constant between two of its bins, lets each statistic sum or maximise over those runs of
    bins with prefix sums of the pooled quantities: O(values drawn) per draw, not O(bins).
    From :data:`DENSE_FROM` on, those differences of large prefix sums would lose the digits
    that tell two splits apart, and every bin is scored (rows x bins).  All five statistics
    are symmetric in the two samples, so the drawn one may be either.
    """

    def __init__(self, pooled: np.ndarray, n: int, m: int) -> None:
        l = pooled.astype(np.float64)
        self.l = l
        self.size, self.n, self.m = l.size, float(n), float(m)
        big_n = float(n + m)
        self.big_n = big_n
        # a bin scored costs about a tenth of a drawn value scored by runs (and keeps its digits at any size)
        self.dense = n + m >= DENSE_FROM or 10 * min(m, l.size) > l.size
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

        if not self.dense:
            self.s_l, self.s_lc, self.s_lc2 = prefix(l), prefix(l * cum), prefix(l * cum * cum)
            self.s_w, self.s_wb, self.s_wb2 = prefix(w), prefix(w * ba), prefix(w * ba * ba)

    def statistics(self, row: np.ndarray, bins: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(len(TESTS), rows)`` statistics of drawn samples given as ``(row, bin, count)`` entries
        sorted by row and bin, rows numbered from 0, every row holding at least one."""
        first = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        c = counts.astype(np.float64)
        if self.dense:
            q = np.zeros((first.size, self.size))
            q[row, bins] = c
            return self.dense_statistics(q)
        m = self.m
        wil = np.abs(np.add.reduceat(c * self.mid[bins], first) - m * self.mean_mid)
        ans = np.abs(np.add.reduceat(c * self.ansari[bins], first) - m * self.mean_ansari)
        return np.stack([*self._runs(first, row, bins, c), wil, ans])

    def dense_statistics(self, q: np.ndarray) -> np.ndarray:
        """``(len(TESTS), rows)`` statistics of drawn samples given as a (rows x bins) count matrix."""
        ks, cvm, ad = self._dense(q)
        wil = np.abs(q @ self.mid - self.m * self.mean_mid)
        ans = np.abs(q @ self.ansari - self.m * self.mean_ansari)
        return np.stack([ks, cvm, ad, wil, ans])

    def _dense(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, m, big_n = self.n, self.m, self.big_n
        cq = np.cumsum(q, axis=1)
        d = self.cum / n - cq * (1.0 / n + 1.0 / m)  # F - G at each bin's end
        ks = np.max(np.abs(d), axis=1)
        cvm = (d * d) @ self.l * (n * m / (big_n * big_n))
        num = m * self.ba - big_n * (cq - 0.5 * q)  # N P_mid - n B_mid, with the signs of the drawn side
        ad = (num * num) @ self.w * ((1.0 / n + 1.0 / m) * (big_n - 1.0) / (big_n * big_n))
        return ks, cvm, ad

    def _runs(self, first: np.ndarray, row: np.ndarray, bins: np.ndarray, c: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, m, big_n, cum = self.n, self.m, self.big_n, self.cum
        kappa = 1.0 / n + 1.0 / m
        e_n = row.size
        last = np.concatenate([first[1:], [e_n]]) - 1
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
        cvm_run = (over(self.s_lc2) / (n * n) - 2 * kappa * big_c / n * over(self.s_lc)
                   + kappa * kappa * big_c * big_c * over(self.s_l))
        cvm = (np.add.reduceat(cvm_run, first) + self.s_lc2[lead] / (n * n)) * (n * m / (big_n * big_n))
        # AD: Σ w (m B - N C_mid)², C_mid = C - q/2 in a drawn bin, C elsewhere
        ad_run = (m * m * over(self.s_wb2) - 2 * m * big_n * big_c * over(self.s_wb)
                  + big_n * big_n * big_c * big_c * over(self.s_w))
        at = m * self.ba[bins]
        ad_run += self.w[bins] * ((at - big_n * (big_c - c / 2)) ** 2 - (at - big_n * big_c) ** 2)
        ad = (np.add.reduceat(ad_run, first) + m * m * self.s_wb2[lead]) * (kappa * (big_n - 1.0) / (big_n * big_n))
        return ks, cvm, ad


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


class _Sampler:
    """Random splits of ``pooled``: ``k`` values drawn without replacement, as ``(row, bin, count)`` entries
    sorted by row and bin (everything that depends on the pooled counts alone is built once).

    Bins holding over :data:`_BIG_BIN` of the values are drawn one hypergeometric count at
    a time for all rows together; the values left to draw come item by item from the other
    bins, so a draw costs about the effective size, not ``k``.  Where a big bin or the rest
    holds :data:`_HYPERGEOMETRIC_MAX` values or more (numpy's limit) its count is binomial
    instead: without the finite-population correction its spread is a little wider, which
    errs conservative.
    """

    def __init__(self, pooled: np.ndarray, k: int) -> None:
        self.size, self.k = pooled.size, k
        self.total = int(pooled.sum())
        self.big = np.flatnonzero(pooled > _BIG_BIN * self.total)
        self.big_counts = [int(pooled[b]) for b in self.big]
        rest = pooled.copy()
        rest[self.big] = 0
        self.pool = int(rest.sum())
        # the bin of each of the rest's values: looked up in a table, or searched in the cumulative counts
        self.lookup = np.repeat(np.arange(self.size, dtype=np.int32), rest) if self.pool <= _LOOKUP_MAX else None
        self.cum_rest = None if self.lookup is not None else np.cumsum(rest)

    def draw(self, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, bin, count)`` entries sorted by row and bin."""
        key, weight = self._keys(rng, rows)
        key, where = np.unique(key, return_inverse=True)
        count = np.bincount(where, weights=weight, minlength=key.size).astype(np.int64)
        keep = count > 0
        key, count = key[keep], count[keep]
        return key // self.size, key % self.size, count

    def draw_dense(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """The same splits (the same random numbers) as a (rows x bins) count matrix."""
        key, weight = self._keys(rng, rows)
        return np.bincount(key, weights=weight, minlength=rows * self.size).reshape(rows, self.size)

    def _keys(self, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys ``row * bins + bin`` of the drawn values and their counts (a key may repeat)."""
        size = self.size
        left = np.full(rows, self.k, np.int64)
        pool = self.total
        keys, weights = [], []
        for b, good in zip(self.big, self.big_counts, strict=True):
            bad = pool - good
            if bad <= 0:
                got = left.copy()
            elif max(good, bad) >= _HYPERGEOMETRIC_MAX:  # kept to what the bin and the rest can give
                got = np.clip(rng.binomial(left, good / pool), np.maximum(left - bad, 0), np.minimum(left, good))
            else:
                got = rng.hypergeometric(good, bad, left)
            keys.append(np.arange(rows) * size + b)
            weights.append(got)
            left -= got
            pool = bad
        if self.pool > 0 and left.any():
            picks = _distinct(rng, self.pool, left)
            if self.lookup is not None:
                bins = self.lookup[picks]
            else:
                bins = np.searchsorted(self.cum_rest, picks, side="right")
            keys.append(np.repeat(np.arange(rows) * size, left) + bins)
            weights.append(np.ones(picks.size, np.int64))
        return np.concatenate(keys), np.concatenate(weights).astype(np.float64)


def _grouped(pooled: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most about :data:`GROUPS` groups of consecutive bins: a bin joins the group of the pooled quantile
    1/GROUPS its first value falls in, so a group holds about N/GROUPS values and a bin holding more
    stays a group of its own.  Fixed by the pooled counts, the same for every split.

    >>> _grouped(np.array([5, 1, 1, 1, 1, 1]), np.array([2, 0, 1, 0, 1, 0]))
    (array([5, 1, 1, 1, 1, 1]), array([2, 0, 1, 0, 1, 0]))
    """
    if pooled.size <= GROUPS:
        return pooled, current
    start = np.cumsum(pooled) - pooled
    group = np.unique(start * GROUPS // int(pooled.sum()), return_inverse=True)[1]
    return (np.bincount(group, weights=pooled).astype(np.int64),
            np.bincount(group, weights=current).astype(np.int64))


def permutation_p_values(reference: np.ndarray, current: np.ndarray, *, stop_after: int = STOP_AFTER,
                         max_draws: int = MAX_DRAWS) -> dict[str, float]:
    """Monte Carlo permutation p-values of the grid tests (:data:`TESTS`) for two count vectors.

    See the module docstring: multivariate hypergeometric splits of the pooled counts,
    sequential stopping after ``stop_after`` draws at or above the observed statistic,
    at most ``max_draws`` draws (:func:`draws_for` gives what a correction over many
    columns needs); deterministic for given counts (bins empty on both sides make no
    difference).  Larger values give a finer estimate of the same p-value.
    """
    if stop_after < 1 or max_draws < 1:
        raise ValueError(f"stop_after and max_draws must be at least 1, got {stop_after} and {max_draws}")
    p, q = _as_counts(reference, current)
    n, m = int(p.sum()), int(q.sum())
    pooled = p + q
    if n == 0 or m == 0 or np.count_nonzero(pooled) < 2:
        return {t: 1.0 for t in TESTS}
    keep = pooled > 0  # a bin empty on both sides changes no statistic
    kept, q_kept = _grouped(pooled[keep], q[keep])
    # draw the smaller sample (the statistics are symmetric): the window, or the reference
    window_side = m <= n
    k = m if window_side else n
    drawn_side = q_kept if window_side else kept - q_kept
    null = _Null(kept, n + m - k, k)
    on = np.flatnonzero(drawn_side)
    observed = null.statistics(np.zeros(on.size, np.int64), on, drawn_side[on])[:, 0]
    limit = observed * (1 - 1e-9)  # equal up to rounding counts as reached (every statistic is >= 0)
    rng = np.random.default_rng([n, m, zlib.crc32(kept.tobytes()), zlib.crc32(q_kept.tobytes())])
    sampler = _Sampler(kept, k)
    hits = np.zeros(len(TESTS), np.int64)
    stopped_at = np.zeros(len(TESTS), np.int64)  # the draw of the h-th hit, 0 while running
    drawn, chunk = 0, CHUNK
    while drawn < max_draws and not stopped_at.all():
        rows = min(chunk, max_draws - drawn)
        drawn_stats = (null.dense_statistics(sampler.draw_dense(rng, rows)) if null.dense
                       else null.statistics(*sampler.draw(rng, rows)))
        reached = drawn_stats >= limit[:, None]
        for t in np.flatnonzero(stopped_at == 0):
            where = np.flatnonzero(reached[t])
            need = stop_after - hits[t]
            if where.size >= need:
                stopped_at[t] = drawn + int(where[need - 1]) + 1
                hits[t] = stop_after
            else:
                hits[t] += where.size
        drawn += rows
        chunk = min(2 * chunk, CHUNK_MAX)
    return {t: float(stop_after / stopped_at[i] if stopped_at[i] else (hits[i] + 1) / (drawn + 1))
            for i, t in enumerate(TESTS)}
