"""Drift of numeric columns, scored on the reference grid's mergeable counts.

Every kernel here takes the reference histogram and the current histogram
on the same grid (see :mod:`detectors.profile`) — one ``np.histogram`` per
column per run feeds all of them.  NaN and ±inf never enter the bins: they
are counted apart, scored by ``data_quality`` and stated in each finding's
note.

Two grids are used:

* the **fine grid** (about 2000 bins, none holding more than 0.1 % of the
  reference or 0.1 % of its range) for KS, Wasserstein, Cramér–von Mises,
  Anderson–Darling and the moments; values outside the reference range sit
  in one slot below and one above, with their sums, so distances beyond the
  range are exact;
* the **ten reference-quantile bins** (``psi_cuts``) for PSI,
  Jensen–Shannon, KL, Hellinger and total variation, whose values then read
  on the scales practitioners know.  These distances also apply to
  categorical columns (categories plus ``<unseen>``; see
  :mod:`detectors.drift_categorical`).

Default thresholds follow one rule, so that the family agrees: ``warn`` is
the value a **0.2-sd** (Cohen's "small") location shift of a normal feature
produces, ``alert`` the value of a **0.5-sd** ("medium") shift.  KS is the
exception: its D for a shift of *d* sds depends on the shape
(:math:`\\approx d\\,\\sigma f_{max}`) and is smallest for a uniform feature,
:math:`d/\\sqrt{12}`, so its thresholds are the uniform's (a normal reaches
them at 0.15 and 0.38 sd).  Every detector is also a test: a finding
breaches only when its p-value survives Benjamini–Hochberg at ``alpha``
0.05 across the detector's columns, which keeps no-change false alarms at or
under 5 % per run however small the window (measured in
``tests/test_drift_calibration.py``).  The fine-grid tests (KS, CvM and so
Wasserstein, AD, the rank tests of mean_shift) take their p-values from
limit laws, except where a pair's *effective size* — the smaller sample
times the pooled share outside its largest bin — is under 300 (windows of
under 300 rows; rare events, a few values outside a dominant zero): there
the limit laws fail and the p-value is the permutation one of
:mod:`detectors.permutation`, exact at any size (see
:func:`conditional_p_values`).

=================  ==========================  ======  ======  =================================
detector           value                       warn    alert   p-value
=================  ==========================  ======  ======  =================================
psi                PSI, 10 quantile bins       0.04    0.25    χ² homogeneity, same bins
jensen_shannon     JS distance, base 2         0.08    0.2     χ² homogeneity, same bins
kl_divergence      KL(current ‖ reference)     0.02    0.12    χ² homogeneity, same bins
hellinger          Hellinger distance          0.07    0.17    χ² homogeneity, same bins
total_variation    TV distance                 0.08    0.2     χ² homogeneity, same bins
wasserstein        W1 / reference sd           0.2     0.5     Cramér–von Mises, fine grid
ks                 KS D                        0.06    0.15    KS (asymptotic, tie-aware), grid
cramer_von_mises   CvM distance ω²             0.004   0.02    Cramér–von Mises, fine grid
anderson_darling   AD distance                 0.02    0.12    Anderson–Darling, fine grid
mean_shift         Δmean/sd or Δmad/mad        0.2     0.5     Wilcoxon + Ansari–Bradley
=================  ==========================  ======  ======  =================================

(``total_variation`` lives in :mod:`detectors.drift_categorical`.)
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy import special

from .base import Batch, Context, Finding, Param, boolean
from .drift_categorical import BinnedDistance
from .drift_common import ColumnDrift, Stat, drift_params, join_notes
from .permutation import draws_for, needs_permutation, permutation_note, permutation_p_values
from .profile import NumericCounts, NumericReference, Profile, per_pair

__all__ = [
    "PSI", "KS", "JensenShannon", "KLDivergence", "Hellinger", "Wasserstein", "CramerVonMises",
    "AndersonDarling", "MeanShift",
    "psi", "ks_binned", "ks_p_value", "ks_tied_sf", "js_distance", "kl_divergence", "hellinger",
    "wasserstein_binned", "cramer_von_mises_binned", "cvm_p_value", "mean_abs_deviation", "rank_test", "rank_tests",
    "anderson_darling_binned", "ad_p_value", "mean_shift", "conditional_p_values",
    "PSI_EPSILON", "KS_LIMIT_N", "KS_TIE_STEP", "RawSample", "batch_numeric",
]

#: proportions below this are raised to it before the logarithm (empty bins)
PSI_EPSILON = 1e-4


# =========================================================================== binned distances

def psi(reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two count vectors over the same bins.

    .. math:: \\mathrm{PSI} = \\sum_i (q_i - p_i) \\ln \\frac{q_i}{p_i}

    with :math:`p` the reference and :math:`q` the current proportions, each
    raised to at least ``epsilon`` so that empty bins give a finite value.

    >>> round(psi(np.array([50, 50]), np.array([25, 75])), 4)
    0.2747
    """
    p = np.maximum(reference / reference.sum(), epsilon)
    q = np.maximum(current / current.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) of two count vectors' proportions.

    .. math:: \\mathrm{JS} = \\sqrt{\\tfrac12 \\mathrm{KL}(p\\|m) + \\tfrac12 \\mathrm{KL}(q\\|m)},
              \\quad m = \\tfrac12 (p + q)

    Empty bins need no smoothing (``0 log 0 = 0``).  Equals
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.

    >>> js_distance(np.array([1, 0]), np.array([0, 1]))
    1.0
    """
    p = reference / reference.sum()
    q = current / current.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0)
        b = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(0.5 * (a.sum() + b.sum()), 0.0)))


def kl_divergence(reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """Kullback–Leibler divergence of the current from the reference, natural log.

    .. math:: \\mathrm{KL}(q \\| p) = \\sum_i q_i \\ln \\frac{q_i}{p_i}

    Both proportion vectors are raised to at least ``epsilon`` and
    renormalised (empty reference bins would make it infinite).  Equals
    ``scipy.stats.entropy(max(q, eps), max(p, eps))``.

    >>> round(kl_divergence(np.array([50, 50]), np.array([25, 75])), 4)
    0.1308
    """
    p = np.maximum(reference / reference.sum(), epsilon)
    q = np.maximum(current / current.sum(), epsilon)
    p, q = p / p.sum(), q / q.sum()
    return float(max(np.sum(q * np.log(q / p)), 0.0))


def hellinger(reference: np.ndarray, current: np.ndarray) -> float:
    """Hellinger distance (in [0, 1]) of two count vectors' proportions.

    .. math:: H = \\sqrt{\\tfrac12 \\sum_i (\\sqrt{p_i} - \\sqrt{q_i})^2}

    >>> hellinger(np.array([1, 0]), np.array([0, 1]))
    1.0
    """
    p = reference / reference.sum()
    q = current / current.sum()
    return float(np.sqrt(max(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2), 0.0)))


# =========================================================================== KS

def ks_binned(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic on a common grid.

    .. math:: D = \\max_e |F_{ref}(e) - F_{cur}(e)|

    over the grid edges :math:`e`.  Inside a bin both CDFs are monotone, so
    the exact D exceeds the binned one by at most the largest reference bin
    mass: with the reference grid of :mod:`detectors.profile` (no bin holds
    more than 0.1 % of the reference, but an atom's bin, which holds a
    single value and so no difference) it is within about 1e-3 of the
    exact statistic, and the binned p-value is conservative.

    >>> ks_binned(np.array([5, 5, 0]), np.array([0, 5, 5]))
    0.5
    """
    f = np.cumsum(reference) / reference.sum()
    g = np.cumsum(current) / current.sum()
    return float(np.max(np.abs(f - g)))


#: above this effective size the limiting Kolmogorov law replaces ``kstwo`` (see :func:`ks_p_value`)
KS_LIMIT_N = 10_000

#: a pooled bin holding more than this share of both samples together makes the pooled CDF *tied*:
#: :func:`ks_p_value` then takes the tie-aware law of :func:`ks_tied_sf` instead of Kolmogorov's
KS_TIE_STEP = 0.01

#: Gauss–Legendre sizes of the tie-aware law's quadrature (the smallest that resolves each step is used)
_KS_NODE_SIZES = (16, 24, 32, 48, 64)
#: a union bound of the tie-aware law under this is its p-value (only a large D gets there)
_KS_BOUND = 1e-6
#: the quadrature at CDF value t covers |B(t)| up to this many of the bridge's sds sqrt(t(1-t))
_KS_SPAN = 7.0


def ks_p_value(d: float, *, n_reference: int, n_current: int, pooled: np.ndarray | None = None) -> float:
    """Asymptotic two-sided p-value; tie-aware when ``pooled`` shows ties.

    Without ties, as ``scipy.stats.ks_2samp(method="asymp")``: that is
    ``kstwo.sf(d, round(n_eff))`` with :math:`n_{eff} = nm/(n+m)`.  Above
    ``n_eff`` = 10 000 its evaluation costs up to seconds per call in the
    tail (2 s at 1e6), so there the limiting law ``kolmogorov(sqrt(n_eff) d)``
    is used: microseconds, within 2.5 % of ``kstwo`` and never smaller
    (conservative).

    ``pooled``: the counts of both samples together in the bins between
    the points where D was taken (grid bins, or the distinct raw values).
    When one bin holds more than :data:`KS_TIE_STEP` (1 %) of them the
    pooled CDF has steps the continuous law knows nothing of, and the
    p-value is :func:`ks_tied_sf` at :math:`d\\sqrt{n_{eff}(N-1)/N}`
    (:math:`N = n+m`; the factor makes the bridge's covariance the exact
    permutation covariance of :math:`F_n - G_m`).  Otherwise, and without
    ``pooled``, the continuous law above, unchanged.

    >>> flag = np.array([4500 + 249, 500 + 51])           # 0s and 1s: 10 % of 5 000, 17 % of 300
    >>> round(ks_p_value(0.07, n_reference=5000, n_current=300), 3)
    0.119
    >>> round(ks_p_value(0.07, n_reference=5000, n_current=300, pooled=flag), 4)
    0.0001
    """
    en = n_reference * n_current / (n_reference + n_current)
    if pooled is not None:
        counts = np.asarray(pooled)
        total = float(counts.sum())
        if total > 0 and float(counts.max()) > KS_TIE_STEP * total:
            big_n = n_reference + n_current
            return ks_tied_sf(d * math.sqrt(en * (big_n - 1) / big_n), pooled=counts)
    if en > KS_LIMIT_N:
        return float(special.kolmogorov(math.sqrt(en) * d))
    from scipy import stats  # 1-2 s to import: only small windows and ``exact`` need it

    return float(stats.kstwo.sf(d, np.round(en)))


def _bridge_miss(u: np.ndarray, v: np.ndarray, tau: float | np.ndarray, x: float) -> np.ndarray:
    """Probability that a Brownian bridge from ``u`` to ``v`` over time ``tau`` leaves (-x, x), by images.

    The terms left out are under exp(-37).  Where the corridor is narrow for the time, (2x)^2 < 0.135 tau,
    staying in is under 4e-16 (the strip's first eigenvalue): the series would need over 12 terms, and the
    probability is 1.
    """
    w = 2.0 * x
    tau = np.asarray(tau, dtype=np.float64)
    c = -2.0 / tau
    dv = v - u
    up, down = x - u, x - v
    out = np.exp(c * up * down)
    for k in range(1, min(max(1, math.ceil(math.sqrt(18.5 * float(np.max(tau))) / w)), 12) + 1):
        kw = k * w
        out += (np.exp(c * (up + kw) * (down + kw)) + np.exp(c * (up - kw) * (down - kw))
                - np.exp(c * kw * (kw - dv)) - np.exp(c * kw * (kw + dv)))
    return np.where(w * w < 0.135 * tau, 1.0, np.clip(out, 0.0, 1.0))


@functools.lru_cache(maxsize=len(_KS_NODE_SIZES) + 1)
def _legendre(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [-1, 1]; size 0 is the single node 0 (B(0) = 0) of weight 1."""
    return (np.zeros(1), np.ones(1)) if size == 0 else np.polynomial.legendre.leggauss(size)


def ks_tied_sf(x: float, *, pooled: np.ndarray) -> float:
    """Tail of the limit of :math:`\\sqrt{n_{eff}}\\,D` when the pooled CDF has steps.

    Under no change, :math:`\\sqrt{n_{eff}}(F_n - G_m)` at a point where
    the pooled CDF is t tends to a Brownian bridge B(t), so

    .. math:: p = P\\big(\\max_i |B(t_i)| \\ge x\\big)

    over the pooled CDF values :math:`0 < t_1 < \\dots < t_{k} < 1` at the
    ends of the bins of ``pooled`` (the counts of both samples together in
    the bins between the points where D was taken; empty bins add no
    point).  Kolmogorov's law is the sup over all of [0, 1]: the larger the
    steps, the more conservative it is.

    Computed by the Markov recursion of B: given :math:`B(t) = u`,
    :math:`B(t') \\sim N(a u, \\sigma^2)` with :math:`a = (1-t')/(1-t)` and
    :math:`\\sigma^2 = a (t' - t)`.  The density of the paths still inside
    (-x, x) is carried on Gauss–Legendre nodes over
    :math:`|u| < \\min(x, 7\\sqrt{t(1-t)})`, the fewest of 16 … 64 that put
    a node every σ of the kernels in and out (the spacing is about π/size of
    the reach); each kernel column is scaled to its exact Gaussian mass, and
    the mass leaving at each step,
    :math:`\\Phi((-x - a u)/\\sigma) + \\Phi((a u - x)/\\sigma)`, is summed, so
    small p-values keep their digits.  A step whose σ is under a quarter of
    the densest spacing (a lone bin of a few 1e-4 between two atoms) only
    removes that mass and moves the nodes to :math:`a u`.

    Bins of at most :data:`KS_TIE_STEP` (1 %) are not all steps: a run of
    two or more (the continuous part of a mixed column, a tail of rare
    values) is an interval over which B is watched throughout —
    conservative, as Kolmogorov's law is on the same run — and the kernel is
    multiplied by the probability that the bridge from u to v over
    :math:`\\tau = t' - t` stays inside, by images (w = 2x):

    .. math:: \\sum_{k \\in \\mathbb Z} e^{-2kw(kw - (v-u))/\\tau}
              - e^{-2(x - u + kw)(x - v + kw)/\\tau}

    (on a run too short for the nodes, twice the mass leaving at its end, by
    reflection).  So at most 199 steps (at most 99 bins hold over 1 %, and
    one run or lone bin lies between two of them), each at most a 64-square
    matrix, all built in a few batched array operations.  When the union
    bound :math:`\\sum_i 2\\Phi(-x/\\sqrt{t_i(1-t_i)})` (plus
    :math:`2e^{-2x^2}` per watched run) is under 1e-6 it is the p-value: an
    upper bound, so such p-values are conservative, and a large D costs
    nothing.  Otherwise the p-value is at least 1e-6 (a recursion under it,
    where the bound is loose, is raised to it), so p never increases with x.

    Accuracy against the same recursion on 3 000 nodes: within 2e-5
    (relative, p down to 1e-16) on flags, counts, rounded values, 50 and 99
    atoms and zero-inflated columns; within 2 % for a lone bin of 1e-4
    between two atoms.  Against Genz's Gaussian rectangle probabilities: to
    their own error, 1e-6.  With no bin over 1 % this is Kolmogorov's law,
    :math:`2\\sum_{k\\ge1} (-1)^{k-1} e^{-2k^2x^2}` (to 1e-15), and with one
    point between two big bins (a flag) the normal tail above, closed.  Cost
    on one core: 0.1 ms for a flag, about 1 ms for 10 atoms, 2-4 ms for 50,
    3-9 ms for 99, 20 ms for 90 atoms of 1 % between 110 rare values (each
    then a lone bin); 0.1-0.8 ms once the union bound decides.

    >>> round(ks_tied_sf(1.0, pooled=np.array([1, 1])), 4)   # one point, t = 1/2: 2 Phi(-1 / (1/2))
    0.0455
    >>> from scipy.stats import multivariate_normal
    >>> t = np.array([0.2, 0.5, 0.9])                         # three points: a Gaussian rectangle
    >>> cov = np.minimum.outer(t, t) - np.outer(t, t)
    >>> box = multivariate_normal(np.zeros(3), cov).cdf(np.full(3, 0.8), lower_limit=np.full(3, -0.8),
    ...                                                 rng=np.random.default_rng(0))
    >>> p = ks_tied_sf(0.8, pooled=np.array([2, 3, 4, 1]))
    >>> round(p, 4), bool(abs(p - (1 - box)) < 1e-5)
    (0.146, True)
    >>> bool(abs(ks_tied_sf(1.2, pooled=np.ones(1000)) - special.kolmogorov(1.2)) < 1e-12)
    True
    """
    counts = np.asarray(pooled, dtype=np.float64)
    counts = counts[counts > 0]
    if not x > 0 or counts.size < 2:
        return 1.0
    big_n = float(counts.sum())
    big = counts > KS_TIE_STEP * big_n
    # a CDF value is a point of the recursion when a big step starts or ends there, or a lone small one lies
    # between two big ones; between two consecutive points lies one bin (watched at its ends) or a run of
    # two or more small ones (watched throughout)
    at = np.flatnonzero(big[:-1] | big[1:])
    ends = np.concatenate([[-1], at, [counts.size - 1]])
    watched = (ends[1:] - ends[:-1] > 1).tolist()
    below = np.cumsum(counts)[at]
    t = [0.0, *(below / big_n).tolist(), 1.0]
    s = [1.0, *((big_n - below) / big_n).tolist(), 0.0]  # 1 - t, from the counts
    last = len(t) - 2                                       # the step to t = 1, where B is 0
    tau = [t[j + 1] - t[j] for j in range(last + 1)]
    a = [s[j + 1] / s[j] for j in range(last)]
    sigma = [math.sqrt(tau[j] * a[j]) for j in range(last)]
    reach = [min(x, _KS_SPAN * math.sqrt(t[j] * s[j])) for j in range(last + 1)]
    carried = [sigma[j] < 0.25 * math.pi / _KS_NODE_SIZES[-1] * reach[j + 1] for j in range(last)]
    # P(|B(t)| >= x) summed over the points, plus 2 exp(-2x^2) (Kolmogorov's tail) per watched run
    bound = 2.0 * float(special.ndtr(-x / np.sqrt(np.array(t[1:-1]) * np.array(s[1:-1]))).sum())
    bound += 2.0 * sum(watched) * math.exp(-2.0 * x * x)
    if bound < _KS_BOUND or (last == 1 and not any(watched)):  # one point between two big bins: exact
        return bound

    # the nodes at point j are scale[j] times the Gauss–Legendre nodes of size[j], fixed before any mass moves:
    # as many as put one every sigma of the kernel landing there and of the next one reading them
    size, scale = [0], [0.0]
    for j in range(last):
        if carried[j]:
            size.append(size[j])
            scale.append(a[j] * scale[j])
            continue
        width, shrink = sigma[j], 1.0
        for k in range(j + 1, last):
            if not carried[k]:
                width = min(width, sigma[k] / (a[k] * shrink))
                break
            shrink *= a[k]
        need = math.pi * reach[j + 1] / width
        size.append(_KS_NODE_SIZES[min(bisect.bisect_left(_KS_NODE_SIZES, need), len(_KS_NODE_SIZES) - 1)])
        scale.append(reach[j + 1])

    # each step's leaving mass per node, and its kernel (mass at j+1 = move @ mass at j), batched by shape
    leaves: list[np.ndarray] = [np.empty(0)] * last
    moves: list[np.ndarray | None] = [None] * last
    groups: dict[tuple[int, int], list[int]] = {}
    for j in range(last):
        groups.setdefault((size[j], -1 if carried[j] else size[j + 1]), []).append(j)
    sd_all, a_all, sc_all, tau_all = (np.array(v) for v in (sigma, a, scale, tau))
    for (g_in, g_out), js in groups.items():
        idx = np.array(js)
        sd = sd_all[idx]
        u = np.multiply.outer(sc_all[idx], _legendre(g_in)[0])
        ms = u * (a_all[idx] / sd)[:, None]                # the kernels' means, in sigmas
        x_s = (x / sd)[:, None]
        if g_out < 0:                                       # carried: only the mass leaving goes
            out = special.ndtr(-x_s - ms) + special.ndtr(ms - x_s)
            for i, j in enumerate(js):
                leaves[j] = np.minimum(2.0 * out[i], 1.0) if watched[j] else out[i]
            continue
        z, wz = _legendre(g_out)
        h_s = (sc_all[idx + 1] / sd)[:, None]
        if np.all(h_s == x_s):                              # the nodes reach the corridor: inside is what stays
            out = special.ndtr(np.stack([-x_s - ms, ms - x_s])).sum(axis=0)
            inside = 1.0 - out
        else:
            cdf = special.ndtr(np.stack([-x_s - ms, ms - x_s, -h_s - ms, ms - h_s]))
            out, inside = cdf[0] + cdf[1], 1.0 - cdf[2] - cdf[3]
        wv = np.multiply.outer(sc_all[idx + 1], wz)
        kernel = np.multiply.outer(sc_all[idx + 1] / sd, z)[:, :, None] - ms[:, None, :]
        kernel *= kernel
        kernel *= -0.5
        np.exp(kernel, out=kernel)
        got = (wv[:, None, :] @ kernel)[:, 0, :]
        kernel *= (inside / np.maximum(got, 1e-300))[:, None, :]  # each column: its exact mass
        seen = [i for i, j in enumerate(js) if watched[j]]
        if seen:
            v = np.multiply.outer(sc_all[idx[seen] + 1], z)
            miss = _bridge_miss(u[seen][:, None, :], v[:, :, None], tau_all[idx[seen]][:, None, None], x)
            miss *= kernel[seen]
            kernel[seen] -= miss
            out[seen] += (wv[seen][:, None, :] @ miss)[:, 0, :]
        kernel *= wv[:, :, None]
        for i, j in enumerate(js):
            leaves[j], moves[j] = out[i], kernel[i]

    mass, leave = np.ones(1), 0.0
    for j in range(last):
        leave += float(leaves[j] @ mass)
        move = moves[j]
        mass = mass * (1.0 - leaves[j]) if move is None else move @ mass
    if watched[last]:
        u = scale[last] * _legendre(size[last])[0]
        leave += float(mass @ _bridge_miss(u, np.zeros(1), tau[last], x))
    # the union bound is at least 1e-6 here, and returned below it: a recursion under 1e-6 (true p-values
    # 1e-8 … 1e-6 near the switch) is floored there, so a larger x never gets a larger p-value
    return min(1.0, max(_KS_BOUND, leave))


# =========================================================================== Wasserstein

def _cum(reference: NumericReference, current: NumericCounts) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current CDFs at the interior edges ``e_0 … e_last``."""
    n, m = reference.counts.sum(), current.counts.sum()
    return np.cumsum(reference.counts)[:-1] / n, np.cumsum(current.counts)[:-1] / m


def wasserstein_binned(reference: NumericReference, current: NumericCounts) -> float:
    """Wasserstein-1 distance :math:`\\int |F(x) - G(x)|\\,dx` in the column's units.

    Within each grid bin both samples' mass is taken as uniform, so both
    CDFs are linear there and :math:`\\int |F - G|` over the bin is exact for
    that shape (:math:`w(|d_a|+|d_b|)/2`, or
    :math:`w(d_a^2+d_b^2)/(2(|d_a|+|d_b|))` when the sign changes); an atom's
    bin holds the atom alone, at its left edge, so there both CDFs step at
    the edge and the bin adds :math:`w|d_b|` (exact for discrete data, and
    for data so far from 0 that float64 itself steps, as at 1e15).  Below the
    reference minimum the reference CDF is 0 and the current contribution is
    :math:`\\sum_{y<\\min}(\\min - y)/m`, the counts' ``below_distance``
    over ``m``; above the maximum likewise from ``above_distance``.

    >>> ref = NumericReference.from_values(np.arange(100.0))
    >>> round(wasserstein_binned(ref, NumericCounts.of(np.arange(100.0) + 10, ref)), 3)
    10.0
    """
    e = reference.bin_edges
    if e.size == 0 or reference.n == 0:
        return 0.0
    m = current.counts.sum()
    if m == 0:
        return 0.0
    f, g = _cum(reference, current)
    d = f - g
    da, db = d[:-1], d[1:]
    w = np.diff(e)
    aa, ab = np.abs(da), np.abs(db)
    same = da * db >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where(aa + ab > 0, (da * da + db * db) / (2.0 * (aa + ab)), 0.0)
    per_bin = np.where(same, 0.5 * (aa + ab), cross)
    if reference.atoms.size:  # an atom's bin holds the atom alone, at its left edge: both CDFs step there
        per_bin[reference.atom_bins] = ab[reference.atom_bins]
    inner = float(np.sum(w * per_bin))
    # the slots' distances from the edges the counts were cut at: ``bin_edges`` differs from them only in
    # an infinite top edge, above which no finite value lies (the slot is then empty)
    return inner + max(float(current.below_distance / m), 0.0) + max(float(current.above_distance / m), 0.0)


def _scale(reference: NumericReference, current: NumericCounts) -> tuple[float, str | None]:
    """The reference sd, or when it is 0 the sd of both samples together (0 only if all values agree)."""
    if reference.std > 0:
        return reference.std, None
    n, m = reference.n, current.n_finite
    delta = current.mean - reference.mean
    m2 = current.m2 + delta * delta * n * m / (n + m)
    pooled = math.sqrt(m2 / (n + m - 1)) if n + m > 1 else 0.0
    return pooled, "reference is constant: scaled by the sd of both samples together"


# =========================================================================== CvM and AD

def _counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    return p, q, int(p.sum()), int(q.sum())


def _cvm_cdf_inf(x: float) -> float:
    """CDF of the limiting Cramér–von Mises distribution (Csörgő & Faraway 1996), as scipy's."""
    tot, k = 0.0, 0
    while True:
        u = math.exp(special.gammaln(k + 0.5) - special.gammaln(k + 1)) / (math.pi ** 1.5 * math.sqrt(x))
        y = 4 * k + 1
        q = y * y / (16 * x)
        z = u * math.sqrt(y) * math.exp(-q) * float(special.kv(0.25, q))
        tot += z
        k += 1
        if abs(z) < 1e-7 or k > 1000:
            return tot


#: a pooled bin holding at least this share is a material tie: the null moments are then recomputed
MATERIAL_TIE = 0.01


def tie_shares(reference: np.ndarray, current: np.ndarray) -> np.ndarray | None:
    """Pooled bin shares when some bin is a material tie (else ``None``).

    The out-of-range slots hold current values only, scored as distinct
    values: they never count as a tie and are split into pieces of 0.1 %.
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    pooled = p + q
    big_n = pooled.sum()
    if pooled.max(initial=0.0) < MATERIAL_TIE * big_n:  # the common case, decided before any share is formed
        return None
    h = pooled / big_n
    free = np.zeros(h.size, bool)
    free[[0, -1]] = True
    free &= p == 0
    if not np.any(h[~free] >= MATERIAL_TIE):
        return None
    def piece(i: int) -> np.ndarray:
        if free[i] and h[i] > 0:
            k = int(min(q[i], np.ceil(h[i] / 0.001)))
            return np.full(k, h[i] / k)
        return h[i:i + 1]

    parts = [piece(0), h[1:-1], piece(h.size - 1)] if h.size > 1 else [h]
    return np.concatenate(parts)


def tie_moments_cvm(h: np.ndarray) -> tuple[float, float]:
    """Null mean and variance of :math:`T/n_{eff}`'s limit :math:`\\sum_j h_j B(H_j)^2` for pooled bin shares ``h``.

    :math:`H_j` is the pooled CDF at the end of bin j and B a Brownian
    bridge, so the mean is :math:`\\sum_j h_j H_j(1-H_j)` and the variance
    :math:`2\\sum_{ij} h_i h_j (H_i(1-H_j))^2` (i ≤ j), summed in O(k) with a
    running sum.  1/6 and 1/45 for continuous data.

    >>> [round(v, 4) for v in tie_moments_cvm(np.full(10000, 1e-4))]
    [0.1667, 0.0222]
    """
    h = np.asarray(h, dtype=np.float64)
    h = h[h > 0]
    big_h = np.cumsum(h)
    big_h[-1] = 1.0
    mean = float(np.sum(h * big_h * (1 - big_h)))
    before = np.cumsum(h * big_h ** 2) - h * big_h ** 2  # sum over i < j of h_i H_i^2
    var = np.sum((h * big_h * (1 - big_h)) ** 2) + 2 * np.sum(h * (1 - big_h) ** 2 * before)
    return mean, float(2 * var)


def tie_variance_ad(h: np.ndarray) -> float:
    """Null variance of the limit of :math:`A^2_{akN}` (k = 2) for pooled bin shares ``h`` (0.5797 for continuous data).

    Each bin's term is the square of the bridge averaged over the bin's two
    ends, :math:`X_j`, divided by its variance — the Scholz–Stephens
    denominator is exactly :math:`\\mathrm{Var}\\,X_j = \\bar H_j(1-\\bar H_j) - h_j/4`
    (:math:`\\bar H_j` the bin's mid CDF) — so the mean is 1 whatever the
    ties, and the variance is :math:`2\\sum_{ij} h_i h_j \\rho_{ij}^2` with
    :math:`\\mathrm{Cov}(X_i, X_j) = \\bar H_i(1-\\bar H_j)` for i < j; O(k).

    >>> round(tie_variance_ad(np.full(10000, 1e-4)), 3)
    0.58
    """
    h = np.asarray(h, dtype=np.float64)
    h = h[h > 0]
    if h.size < 2:
        return 0.0
    hi = np.cumsum(h)
    hi[-1] = 1.0
    mid = hi - h / 2
    var = mid * (1 - mid) - h / 4
    w = h / var
    before = np.cumsum(w * mid ** 2) - w * mid ** 2
    return float(2 * (np.sum(h * h) + 2 * np.sum(w * (1 - mid) ** 2 * before)))


@functools.lru_cache(maxsize=1)
def _sf_nodes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """256-point Gauss–Legendre nodes on φ ∈ [0, π/2]: ``sin²φ``, ``sin 2φ`` and the weights."""
    t, w = np.polynomial.legendre.leggauss(256)
    phi = (t + 1) * math.pi / 4
    return np.sin(phi) ** 2, np.sin(2 * phi), w * math.pi / 4


def _cvm_sf_inf(x: float) -> float:
    """Upper tail of the limiting Cramér–von Mises law by Smirnov's integral (accurate far into the tail).

    .. math:: 1 - V(x) = \\frac{1}{\\pi}\\sum_{j\\ge1} (-1)^{j+1}\\int_{(2j-1)\\pi}^{2j\\pi}
              \\frac{2}{u}\\sqrt{\\frac{-u}{\\sin u}}\\,e^{-x u^2/2}\\,du

    Each integrand has inverse-square-root singularities at both ends; the
    substitution :math:`u = a + \\pi\\sin^2\\varphi` cancels them and leaves a
    smooth integrand for Gauss–Legendre.  Within 1e-9 of a 30-digit mpmath
    quadrature for x ≤ 10 (``scipy.integrate.quad`` on the raw integrand is off
    by 10–85 % beyond x = 5), and no scipy.integrate import (0.8 s).

    >>> round(_cvm_sf_inf(1.0), 10)
    0.0024604522
    """
    s2, jac, weights = _sf_nodes()
    tot = 0.0
    for j in range(1, 40):
        a = (2 * j - 1) * math.pi
        if x * a * a / 2 > 745:  # every later term underflows
            break
        u = a + math.pi * s2
        # sqrt(-u / sin u) * du/dφ, with du/dφ = π sin 2φ folded under the root (both are positive)
        f = 2 / u * np.sqrt(-u / np.sin(u) * jac * jac) * math.pi * np.exp(-x * u * u / 2)
        v = float(np.dot(weights, f))
        tot += v if j % 2 else -v
        if abs(v) <= 1e-14 * abs(tot):
            break
    return max(0.0, tot / math.pi)


def cvm_p_value(t: float, *, n_reference: int, n_current: int, ties: tuple[float, float] | None = None) -> float:
    """Asymptotic p-value of the two-sample T, as ``scipy.stats.cramervonmises_2samp(method="asymptotic")``.

    ``ties``: the null mean and variance of the tied limit
    (:func:`tie_moments_cvm`); T's finite-sample moments are then scaled by
    their ratio to the continuous 1/6 and 1/45 before scipy's mapping onto
    the limiting law.
    """
    n, m = n_reference, n_current
    big_n, k = n + m, n * m
    et = (1 + 1 / big_n) / 6
    vt = (big_n + 1) * (4 * k * big_n - 3 * (n * n + m * m) - 2 * k) / (45 * big_n * big_n * 4 * k)
    if ties is not None:
        et, vt = et * 6 * ties[0], vt * 45 * ties[1]
    if vt <= 0:  # one value on both sides: nothing can differ
        return 1.0
    tn = 1 / 6 + (t - et) / math.sqrt(45 * vt)
    if tn < 0.003:
        return 1.0
    if tn >= 1.0:  # p <= 0.0025: 1 - cdf loses its digits (scipy returns noise near 1e-8 there)
        return _cvm_sf_inf(tn)
    return max(0.0, 1.0 - _cvm_cdf_inf(tn))


def cramer_von_mises_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, float]:
    """Two-sample Cramér–von Mises test on grid counts: ``(T, p_value, omega2)``.

    Anderson's (1962) form on the pooled sample,

    .. math:: T = \\frac{nm}{N^2} \\sum_{z} (F_n(z) - G_m(z))^2

    with the grid bins as groups of tied values (both CDFs taken at the end
    of each bin).  For untied data this is exactly the statistic of
    ``scipy.stats.cramervonmises_2samp``; the out-of-range slots (first and
    last counts) hold current values only and are summed as distinct values.
    The p-value is scipy's asymptotic one.  (With heavy ties scipy's rank
    formula :math:`U = n\\sum(r_i - i)^2 + \\dots` with midranks is *not*
    this statistic and rejects almost always on no-change discrete data; the
    ECDF form stays conservative.)

    ``omega2`` is the effect size reported as the finding's value, the
    Cramér–von Mises distance :math:`\\omega^2 = T/n_{eff} = \\sum_j h_j
    (F_j - G_j)^2` (:math:`h_j` the pooled share of bin j,
    :math:`n_{eff} = nm/N`).

    >>> from scipy.stats import cramervonmises_2samp
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.poisson(3, 400).astype(float), rng.poisson(3.5, 300).astype(float)
    >>> ref = NumericReference.from_values(x)
    >>> t, p, w = cramer_von_mises_binned(ref.counts, NumericCounts.of(y, ref).counts)
    >>> round(t, 3), round(w, 4)
    (0.497, 0.0029)
    >>> z, q = rng.normal(size=400), rng.normal(0.3, size=300)
    >>> refz = NumericReference.from_values(z)
    >>> tz, pz, _ = cramer_von_mises_binned(refz.counts, NumericCounts.of(q, refz).counts)
    >>> r = cramervonmises_2samp(z, q)
    >>> bool(abs(tz - r.statistic) < 0.01), bool(abs(pz - r.pvalue) < 0.01)
    (True, True)
    """
    p, q, n, m = _counts(reference, current)
    if n == 0 or m == 0:
        return 0.0, 1.0, 0.0
    big_n = n + m
    cp, cq = np.cumsum(p), np.cumsum(q)
    d = cp / n - cq / m
    terms = (p + q) * d * d
    for slot in (0, p.size - 1):
        f = q[slot]
        if p[slot] == 0 and f > 1:  # current-only run beyond the reference range: distinct values
            d0 = (cp[slot] - p[slot]) / n - (cq[slot] - f) / m
            terms[slot] = f * d0 * d0 - d0 * f * (f + 1) / m + f * (f + 1) * (2 * f + 1) / (6 * m * m)
    omega2 = float(terms.sum() / big_n)
    t = omega2 * n * m / big_n
    h = tie_shares(p, q)
    ties = tie_moments_cvm(h) if h is not None else None
    return t, cvm_p_value(t, n_reference=n, n_current=m, ties=ties), omega2


def _shared_cvm(reference: NumericReference, current: NumericCounts) -> tuple[float, float, float]:
    """:func:`cramer_von_mises_binned` once per pair: ``wasserstein`` takes its p-value from the same test."""
    return per_pair(current, reference, "cvm",
                    lambda: cramer_von_mises_binned(reference.counts, current.counts))


def conditional_p_values(reference: NumericReference, current: NumericCounts, *, smallest_p: float = 1.0
                         ) -> tuple[dict[str, float], str] | None:
    """The pair's permutation p-values and their note when its effective size is under
    :data:`~detectors.permutation.PERMUTATION_BELOW` (few values outside one dominant bin, or a
    small sample), else ``None``; computed once per pair for every grid test
    (:func:`detectors.permutation.permutation_p_values`), with the draws
    :func:`~detectors.permutation.draws_for` gives for ``smallest_p`` (the p-value a lone drifted
    column must be able to reach: ``alpha`` over the detector's columns).

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=5000))
    >>> conditional_p_values(ref, NumericCounts.of(np.random.default_rng(1).normal(size=5000), ref)) is None
    True
    >>> p, note = conditional_p_values(ref, NumericCounts.of(np.random.default_rng(1).normal(size=150), ref))
    >>> sorted(p), note.startswith("permutation p-value")
    (['ad', 'ansari', 'cvm', 'ks', 'wilcoxon'], True)
    """
    def compute() -> tuple[dict[str, float], str] | None:
        if not needs_permutation(reference.counts, current.counts):
            return None
        return (permutation_p_values(reference.counts, current.counts, max_draws=draws),
                permutation_note(reference.counts, current.counts))

    draws = draws_for(smallest_p)
    return per_pair(current, reference, f"permutation:{draws}", compute)  # the decision too: once per pair


_AD_B0 = np.array([0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085])
_AD_B1 = np.array([-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615])
_AD_B2 = np.array([-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154])
_AD_SIG = np.array([0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
#: variance of the limit of A²_akN for k = 2, continuous data: 2(π² - 9)/3
_AD_VAR_CONTINUOUS = 2 * (math.pi ** 2 - 9) / 3


@functools.lru_cache(maxsize=16)
def _ad_fit(k: int) -> tuple[tuple[float, float, float], float, float]:
    """Scholz & Stephens' critical values for k samples fitted by a quadratic in log p, and the table's ends."""
    m = k - 1
    crit = _AD_B0 + _AD_B1 / math.sqrt(m) + _AD_B2 / m
    c2, c1, c0 = (float(c) for c in np.polyfit(crit, np.log(_AD_SIG), 2))
    return (c2, c1, c0), float(crit.min()), float(crit.max())


def ad_p_value(a2: float, *, k: int = 2) -> float:
    """p-value of a standardised k-sample Anderson–Darling statistic.

    Inside Scholz & Stephens' table (0.001 ≤ p ≤ 0.25) this is exactly
    ``scipy.stats.anderson_ksamp``'s quadratic interpolation of log p.
    scipy caps p at 0.25 and floors it at 0.001; here the fit is continued
    log-linearly with its slope at the table's ends (capped at 1), so a
    large shift across many features still survives the correction.
    """
    (c2, c1, c0), lo, hi = _ad_fit(k)
    end = lo if a2 < lo else hi if a2 > hi else a2  # beyond the table: the tangent at its end
    logp = (c2 * end + c1) * end + c0 + (2 * c2 * end + c1) * (a2 - end)
    return float(min(1.0, math.exp(logp)))


def _ad_sigma2(n: int, m: int) -> float:
    """Variance of A²_akN under H0 for two samples (Scholz & Stephens 1987, as scipy)."""
    big_n, k = n + m, 2
    h_n = 1.0 / n + 1.0 / m
    if big_n <= 20_000:
        hs_cs = (1.0 / np.arange(big_n - 1, 1, -1)).cumsum()
        h = float(hs_cs[-1]) + 1
        g = float((hs_cs / np.arange(2, big_n)).sum())
    else:  # asymptotic expansions: h exact to rounding, g to 0.5/N^2 (< 2e-9 here)
        h = float(special.digamma(big_n) + np.euler_gamma)
        g = math.pi ** 2 / 6 - (2 * math.log(big_n) + 2 * np.euler_gamma + 1) / big_n
    a = (4 * g - 6) * (k - 1) + (10 - 6 * g) * h_n
    b = (2 * g - 4) * k ** 2 + 8 * h * k + (2 * g - 14 * h - 4) * h_n - 8 * h + 4 * g - 6
    c = (6 * h + 2 * g - 2) * k ** 2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * h_n + 4 * h
    d = (2 * h + 6) * k ** 2 - 4 * h * k
    return (a * big_n ** 3 + b * big_n ** 2 + c * big_n + d) / ((big_n - 1.0) * (big_n - 2.0) * (big_n - 3.0))


def _ad_free_run(f: int, b0: float, m0: float, r0: float, n: int, m: int) -> float:
    """Sum of A²_akN terms over ``f`` distinct current-only values after b0 pooled, m0 current, r0 reference."""
    big_n = n + m

    def terms(t: np.ndarray | float) -> np.ndarray | float:
        ba = b0 + t + 0.5
        return ((big_n * (m0 + t + 0.5) - ba * m) ** 2 / m + (big_n * r0 - ba * n) ** 2 / n) / (
            ba * (big_n - ba) - big_n / 4)

    if f <= 64:  # a few values: plain floats beat array set-up
        return sum(terms(float(t)) for t in range(f)) / big_n
    total = 0.0
    for start in range(0, f, 1 << 20):  # chunks of the run, not rows of a loop
        total += float(np.sum(terms(np.arange(start, min(f, start + (1 << 20)), dtype=np.float64))))
    return total / big_n


def anderson_darling_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, float]:
    """Two-sample (k = 2) Anderson–Darling test on grid counts: ``(A2, p_value, distance)``.

    The midrank statistic :math:`A^2_{akN}` of Scholz & Stephens (1987, eq. 7)
    with each grid bin a group of tied values — what
    ``scipy.stats.anderson_ksamp(variant="midrank")`` computes when values
    tie; the out-of-range slots hold current values only and are treated as
    distinct values.  ``A2`` is standardised as in scipy,
    :math:`(A^2_{akN} - 1)/\\sigma_N`; with material ties
    (:data:`MATERIAL_TIE`) :math:`\\sigma_N^2` is scaled by the ratio of the
    tied to the continuous limiting variance (:func:`tie_variance_ad`).  The
    p-value is :func:`ad_p_value`.

    ``distance`` is the effect size reported as the finding's value,
    :math:`A^2_{akN} \\cdot N/(nm)`: the Anderson–Darling distance
    :math:`\\int (F-G)^2 / (H(1-H))\\,dH` (H the pooled CDF), which does not
    grow with the sample size.

    >>> from scipy.stats import anderson_ksamp
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=400), rng.normal(0.15, size=300)
    >>> ref = NumericReference.from_values(x)
    >>> a2, p, dist = anderson_darling_binned(ref.counts, NumericCounts.of(y, ref).counts)
    >>> r = anderson_ksamp([x, y], variant="midrank")
    >>> round(a2, 2), round(float(r.statistic), 2), round(p, 4), round(r.pvalue, 4), round(dist, 4)
    (3.58, 3.58, 0.0116, 0.0116, 0.0217)
    """
    p, q, n, m = _counts(reference, current)
    if n == 0 or m == 0:
        return 0.0, 1.0, 0.0
    big_n = n + m
    below, above = int(q[0]) if p[0] == 0 else 0, int(q[-1]) if p[-1] == 0 else 0
    core_q = q.copy()
    if below:
        core_q[0] = 0
    if above:
        core_q[-1] = 0
    l_all = p + core_q
    keep = l_all > 0
    l, pp = l_all[keep], p[keep]
    if l.size + below + above < 2:
        return 0.0, 1.0, 0.0
    # cumulative counts include the values below the reference range (they come first).  With
    # mid-cumulative counts B (pooled), P (reference), Q (current), B = P + Q, so the current term's
    # numerator N Q - m B = n B - N P is the reference term's with its sign flipped: the k = 2 sum is
    # (1/n + 1/m) Σ l (N P - n B)² / (N den)
    ba = below + np.cumsum(l) - 0.5 * l
    num = big_n * (np.cumsum(pp) - 0.5 * pp) - n * ba
    den = ba * (big_n - ba) - 0.25 * big_n * l
    terms = np.divide(l * num * num, den, out=np.zeros_like(den), where=den > 0)
    a2akn = float(terms.sum()) / big_n * (1.0 / n + 1.0 / m)
    if below:
        a2akn += _ad_free_run(below, 0.0, 0.0, 0.0, n, m)
    if above:
        a2akn += _ad_free_run(above, big_n - above, m - above, float(n), n, m)
    a2akn *= (big_n - 1.0) / big_n
    sigma2 = _ad_sigma2(n, m)
    h = tie_shares(p, q)
    if h is not None:
        sigma2 *= tie_variance_ad(h) / _AD_VAR_CONTINUOUS
    a2 = float((a2akn - 1) / math.sqrt(sigma2)) if sigma2 > 0 else 0.0
    return a2, ad_p_value(a2), float(a2akn * big_n / (n * m))


# =========================================================================== moments

def _centre(reference: NumericReference) -> tuple[float, int]:
    """The grid edge nearest the reference median and its index in ``edges``."""
    f = np.cumsum(reference.counts)[:-1] / reference.n
    k = int(np.argmin(np.abs(f - 0.5)))
    return float(reference.bin_edges[k]), k


def _mad_weights(reference: NumericReference) -> tuple[float, np.ndarray]:
    """The centre *c* of :func:`mean_abs_deviation` and each interior bin's distance :math:`|mid_j - c|`."""
    c, _ = _centre(reference)
    return c, np.abs(reference.bin_values - c)


def mean_abs_deviation(counts: NumericCounts | NumericReference, reference: NumericReference,
                       *, weights: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
    """Mean and variance of :math:`|x - c|` about the reference median *c* (a grid edge), from grid counts.

    Interior bins lie on one side of *c* and count at their midpoints (an atom's at the atom); the
    out-of-range slots use their exact sums; the second moment
    :math:`\\overline{(x-c)^2} = m_2/n + (\\bar x - c)^2` is exact.  ``weights``:
    the reference's ``(c, |mid - c|)`` when already computed.
    """
    c, dist = weights if weights is not None else _mad_weights(reference)
    cnt = counts.counts
    n = float(cnt.sum())
    if isinstance(counts, NumericReference):
        mean, m2, below, above = counts.mean, counts.std * counts.std * (counts.n - 1), 0.0, 0.0
    else:
        mean, m2, below, above = counts.mean, counts.m2, counts.below_distance, counts.above_distance
    with np.errstate(over="ignore"):  # values near the largest float: inf, and no verdict (see NOT_FINITE)
        total = float(np.dot(cnt[1:-1], dist)) if dist.size else 0.0
        # beyond the edges: |y - c| = (c - e_0) + (e_0 - y) below, (e_last - c) + (y - e_last) above
        if cnt[0]:
            total += float(cnt[0]) * (c - float(reference.edges[0])) + below
        if cnt[-1]:
            total += float(cnt[-1]) * (float(reference.edges[-1]) - c) + above
    mad = total / n
    second = m2 / n + (mean - c) * (mean - c)  # (not ** 2: a float power raises where a product gives inf)
    return mad, max(second - mad * mad, 0.0)


def _score_cumsum(x: float, big_n: float, kind: str, power: int) -> float:
    """:math:`\\sum_{r=1}^{x} a(r)^{power}` (power 1 or 2) of the rank scores up to rank ``x``.

    ``kind`` "wilcoxon": a(r) = r; "ansari": a(r) = min(r, N + 1 - r), whose
    sums are those of r up to the fold :math:`f = \\lfloor (N+1)/2 \\rfloor` plus
    those of :math:`N + 1 - r` beyond it: :math:`s(\\min(x, f)) + s(N - f) - s(N - \\max(x, f))`.

    >>> _score_cumsum(5.0, 5.0, "ansari", 1)   # scores 1, 2, 3, 2, 1
    9.0
    """
    def s(y: float) -> float:
        return y * (y + 1) / 2 if power == 1 else y * (y + 1) * (2 * y + 1) / 6

    if kind == "wilcoxon":
        return s(x)
    fc = float((big_n + 1) // 2)
    return s(min(x, fc)) + s(big_n - fc) - s(big_n - max(x, fc))


RANK_KINDS = ("wilcoxon", "ansari")


def rank_tests(reference: np.ndarray, current: np.ndarray) -> dict[str, tuple[float, float]]:
    """The Wilcoxon and Ansari–Bradley linear rank tests of two grid histograms (counts): ``{kind: (z, p)}``.

    The current sample's sum of rank scores against its permutation
    distribution: :math:`E = m\\bar a`, :math:`\\mathrm{Var} = \\frac{nm}{N(N-1)}
    \\sum_i (a_i - \\bar a)^2`, normal approximation.  Values in one grid bin
    are tied and share the bin's mean score :math:`\\bar a_j` — the midrank for
    Wilcoxon (a(r) = r), :math:`\\min(\\text{midrank}, N + 1 - \\text{midrank})` for
    Ansari–Bradley (a(r) = min(r, N + 1 - r)) except in the one bin that
    straddles the fold, whose mean is summed exactly — so the statistic is
    :math:`\\sum_j q_j \\bar a_j` and the tied sum of squares
    :math:`\\sum_j l_j \\bar a_j^2`.  The out-of-range slots hold current values
    only and are scored as distinct values (their exact sum of squared
    scores replaces :math:`l_j \\bar a_j^2`).  "wilcoxon" is the Mann–Whitney /
    Wilcoxon rank-sum test (location), "ansari" the Ansari–Bradley test
    (spread).  Both are distribution-free, so they hold their level for
    skewed and heavy-tailed data where a Welch z or an F test of variances
    does not.

    >>> r = rank_tests(np.array([0, 30, 40, 30, 0]), np.array([0, 10, 40, 50, 0]))
    >>> z, p = r["wilcoxon"]   # scipy.stats.mannwhitneyu(..., use_continuity=False): p = 0.000233
    >>> round(z, 3), round(p, 6)
    (3.68, 0.000233)
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    n, m = float(p.sum()), float(q.sum())
    if not (math.isfinite(n) and math.isfinite(m)):
        raise ValueError("rank tests need finite counts")
    big_n = n + m
    if n == 0 or m == 0 or big_n < 2:
        return {kind: (0.0, 1.0) for kind in RANK_KINDS}
    l = p + q
    keep = l > 0
    # current-only runs in the out-of-range slots: distinct values, not ties (position among kept bins)
    free = ([0] if p[0] == 0 and q[0] > 0 else []) + ([int(keep.sum()) - 1] if p[-1] == 0 and q[-1] > 0 else [])
    l, q = l[keep], q[keep]
    hi = np.cumsum(l)
    lo = hi - l  # the bin holds ranks lo + 1 … hi
    mid = (lo + hi + 1) / 2
    fold = float((big_n + 1) // 2)
    out = {}
    for kind in RANK_KINDS:
        if kind == "wilcoxon":
            score = mid
        else:
            score = np.minimum(mid, big_n + 1 - mid)
            j = int(np.searchsorted(hi, fold))  # the first bin reaching the fold; it straddles it if it starts below
            if j < hi.size and lo[j] < fold < hi[j]:
                score[j] = (_score_cumsum(float(hi[j]), big_n, kind, 1)
                            - _score_cumsum(float(lo[j]), big_n, kind, 1)) / l[j]
        stat = float(np.dot(q, score))
        ss = float(np.dot(l * score, score))
        for j in free:
            h, low = float(hi[j]), float(lo[j])
            ss += (_score_cumsum(h, big_n, kind, 2) - _score_cumsum(low, big_n, kind, 2)
                   - float(l[j]) * float(score[j]) ** 2)
        mean_a = _score_cumsum(big_n, big_n, kind, 1) / big_n
        var = n * m / (big_n * (big_n - 1)) * (ss - big_n * mean_a * mean_a)
        if var <= 0:
            out[kind] = (0.0, 1.0)
            continue
        z = (stat - m * mean_a) / math.sqrt(var)
        out[kind] = (float(z), float(2 * special.ndtr(-abs(z))))
    return out


def rank_test(reference: np.ndarray, current: np.ndarray, *, kind: str) -> tuple[float, float]:
    """One of :func:`rank_tests`: ``(z, two-sided p)`` of "wilcoxon" or "ansari".

    >>> z, p = rank_test(np.array([0, 30, 40, 30, 0]), np.array([0, 10, 40, 50, 0]), kind="wilcoxon")
    >>> round(z, 3), round(p, 6)   # scipy.stats.mannwhitneyu(..., use_continuity=False): p = 0.000233
    (3.68, 0.000233)
    """
    if kind not in RANK_KINDS:
        raise ValueError(f"kind must be one of {RANK_KINDS}, got {kind!r}")
    return rank_tests(reference, current)[kind]


def mean_shift(reference: NumericReference, current: NumericCounts, *, smallest_p: float = 1.0
               ) -> tuple[float, float, str]:
    """Standardised shift of the mean and of the spread, with a test: ``(value, p_value, note)``.

    * value: :math:`\\max(|\\bar y - \\bar x| / s_x,\\; |a_y / a_x - 1|)` — the mean
      shift in reference sds or the relative change of the mean absolute
      deviation *a* about the reference median, whichever is larger (a
      scale change by 20 % gives 0.2).  When the reference is constant both
      are scaled by the sd of both samples together.
    * p-value: :math:`\\min(1, 2\\min(p_{loc}, p_{spread}))`, Bonferroni over a
      Wilcoxon rank-sum test (location) and an Ansari–Bradley test (spread)
      on the grid counts (:func:`rank_tests`; permutation p-values of the same
      two statistics for a small effective size, :func:`conditional_p_values`).  A Welch z and an F test of the
      running moments were measured first: on skewed or heavy-tailed
      columns (lognormal, t3) with windows of a few hundred rows they
      rejected 3-6 times the nominal rate at p = 0.0025, the level that
      matters after Benjamini–Hochberg over 20 features; the rank tests hold it.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=10000))
    >>> v, p, _ = mean_shift(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, 1.0, size=5000), ref))
    >>> round(v, 1), p < 1e-12
    (0.5, True)
    """
    xr = reference.mean
    xc = current.mean
    scale, note = _scale(reference, current)
    weights = _mad_weights(reference)  # one centre and one distance per bin for both sides
    ar, _ = mean_abs_deviation(reference, reference, weights=weights)
    ac, _ = mean_abs_deviation(current, reference, weights=weights)
    d_mean = abs(xc - xr) / scale if scale > 0 else 0.0
    if ar > 0:
        d_spread = abs(ac / ar - 1)
    else:
        d_spread = abs(ac - ar) / scale if scale > 0 else 0.0
    conditional = conditional_p_values(reference, current, smallest_p=smallest_p)
    if conditional is None:
        tests = rank_tests(reference.counts, current.counts)
        (_, p_loc), (_, p_spread) = tests["wilcoxon"], tests["ansari"]
    else:
        p_loc, p_spread = conditional[0]["wilcoxon"], conditional[0]["ansari"]
        note = join_notes(note, conditional[1])
    text = f"mean {xc:.6g} (reference {xr:.6g}), mean abs deviation {ac:.6g} (reference {ar:.6g})"
    return (float(max(d_mean, d_spread)), float(min(1.0, 2 * min(p_loc, p_spread))),
            "; ".join(x for x in (text, note) if x))


# =========================================================================== raw samples (exact tests)

@dataclass(kw_only=True)
class RawSample:
    """Raw finite values per column, for exact tests on request; ``merge`` concatenates.

    Memory grows with the window: this is the explicit opt-in of ``exact: true``.
    """

    values: dict[str, np.ndarray]

    def merge(self, other: RawSample) -> RawSample:
        keys = list(dict.fromkeys([*self.values, *other.values]))
        empty = np.empty(0)
        return RawSample(values={k: np.concatenate([self.values.get(k, empty), other.values.get(k, empty)])
                                 for k in keys})


#: keys under which a batch's model columns are kept (they have no column name in a Batch)
SCORE_KEY, PREDICTION_KEY = "\0score", "\0prediction"


def batch_numeric(batch: Batch) -> dict[str, np.ndarray]:
    """A batch's numeric columns, with the score (and a numeric prediction) under role keys."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in batch.numeric.items()}
    if batch.score is not None:
        out[SCORE_KEY] = np.asarray(batch.score, dtype=np.float64)
    if batch.prediction is not None and np.asarray(batch.prediction).dtype.kind in "fiub":
        out[PREDICTION_KEY] = np.asarray(batch.prediction, dtype=np.float64)
    return out


def role_key(profile: Profile, column: str) -> str:
    """The key of ``column`` in :func:`batch_numeric`'s output."""
    role = profile.roles.get(column)
    if role == "score":
        return SCORE_KEY
    if role == "prediction":
        return PREDICTION_KEY
    return column


@dataclass(frozen=True, kw_only=True)
class _ExactReference(NumericReference):
    sample: np.ndarray


@dataclass(kw_only=True)
class _ExactCounts(NumericCounts):
    sample: np.ndarray


def _with_sample(obj: Any, cls: type, sample: np.ndarray) -> Any:
    return cls(**{f.name: getattr(obj, f.name) for f in fields(obj)}, sample=sample)


# =========================================================================== detectors

class PSI(BinnedDistance):
    """Population stability index on 10 reference-quantile bins (numeric) or over categories.

    .. math:: \\mathrm{PSI} = \\sum_i (q_i - p_i) \\ln (q_i / p_i)

    Numeric: the bins are the reference deciles; a value holding more than a
    tenth of the reference (a flag, a zero-inflated or small-integer column)
    is a bin of its own, so such columns have fewer bins.  Values below the
    reference minimum fall in the first bin, above the maximum in the last.  Categorical: the reference categories plus one ``<unseen>``
    column.  **Smoothing**: proportions are raised to at least ``1e-4``
    (:data:`PSI_EPSILON`) before the logarithm, so a bin empty on one side
    and holding the share *s* on the other contributes
    :math:`(s - 10^{-4}) \\ln(s / 10^{-4})` — finite, at most 9.2 — rather than
    infinity (tested in ``tests/test_drift_kernels.py``).

    p-value: the chi-square homogeneity test on the same bins (categorical:
    every category its own column, sparse ones pooled), as JS, KL, Hellinger
    and TV.  A PSI past its threshold on a handful of rows is therefore not
    an alarm.  (Reading :math:`\\mathrm{PSI}\\,nm/(n+m)` as
    :math:`\\chi^2_{k-1}`, its second-order law, rejected 7 % of no-change
    windows of 100 rows at 5 %, and 2-3 times the nominal family rate over
    20 features: its tail is heavier than the chi-square's on small windows.)

    Defaults: ``warn`` 0.04 and ``alert`` 0.25 — the PSI of a 0.2-sd and a
    0.5-sd normal location shift on deciles (the rule of thumb 0.1 / 0.25
    corresponds to 0.33 / 0.5 sd; set ``warn: 0.1`` for it); ``alpha`` 0.05
    after Benjamini–Hochberg; ``min_rows`` 100; ``features`` (all).

    >>> from detectors.profile import NumericReference, NumericCounts, Profile
    >>> from detectors.base import Context
    >>> from datetime import datetime, timezone
    >>> rng = np.random.default_rng(0)
    >>> ref = NumericReference.from_values(rng.normal(size=5000))
    >>> cur = NumericCounts.of(rng.normal(1.0, size=5000), ref)
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> f = PSI().score(Profile(n_rows=5000, numeric={"x": ref}), Profile(n_rows=5000, numeric={"x": cur}),
    ...                 context=Context(model="m", window_start=t, window_end=t))[0]
    >>> f.status, round(f.value, 1)
    ('alert', 1.0)
    """

    name: ClassVar[str] = "psi"
    statistic_name: ClassVar[str] = "psi"
    params = drift_params(warn=0.04, alert=0.25, test=True)

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:
        return psi(p, q)



class JensenShannon(BinnedDistance):
    """Jensen–Shannon distance, base 2 (in [0, 1]), on the 10 reference-quantile bins or the categories.

    .. math:: \\mathrm{JS} = \\sqrt{\\tfrac12 \\sum_i p_i \\log_2 \\tfrac{p_i}{m_i}
              + \\tfrac12 \\sum_i q_i \\log_2 \\tfrac{q_i}{m_i}}, \\quad m = \\tfrac12(p+q)

    Computed on the same ten reference-quantile bins as PSI (not the fine
    grid: on ~2000 bins sampling noise alone would dominate the distance);
    no smoothing is needed.  p-value: chi-square homogeneity test on the
    same bins (categories: every category its own column, sparse ones pooled).

    Defaults: ``warn`` 0.08, ``alert`` 0.2 — the JS distance of a 0.2-sd and a
    0.5-sd normal location shift on deciles; ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = JensenShannon().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 1), s.p_value < 1e-12
    (0.2, True)
    """

    name: ClassVar[str] = "jensen_shannon"
    statistic_name: ClassVar[str] = "js_distance"
    params = drift_params(warn=0.08, alert=0.2, test=True)

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:
        return js_distance(p, q)


class KLDivergence(BinnedDistance):
    """Kullback–Leibler divergence of the current from the reference (nats), 10 quantile bins or categories.

    .. math:: \\mathrm{KL}(q\\|p) = \\sum_i q_i \\ln (q_i/p_i)

    Proportions raised to at least ``1e-4`` and renormalised (see
    :func:`kl_divergence`).  p-value: chi-square homogeneity test on the
    same bins (categories: every category its own column, sparse ones pooled).

    Defaults: ``warn`` 0.02, ``alert`` 0.12 — the KL of a 0.2-sd and a
    0.5-sd normal location shift on deciles; ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = KLDivergence().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 2), s.p_value < 1e-12
    (0.11, True)
    """

    name: ClassVar[str] = "kl_divergence"
    statistic_name: ClassVar[str] = "kl_divergence"
    params = drift_params(warn=0.02, alert=0.12, test=True)

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:
        return kl_divergence(p, q)


class Hellinger(BinnedDistance):
    """Hellinger distance (in [0, 1]) on the 10 reference-quantile bins or the categories.

    .. math:: H = \\sqrt{\\tfrac12 \\sum_i (\\sqrt{p_i} - \\sqrt{q_i})^2}

    p-value: chi-square homogeneity test on the same bins (categories: every
    category its own column, sparse ones pooled).

    Defaults: ``warn`` 0.07, ``alert`` 0.17 — the distance of a 0.2-sd and a
    0.5-sd normal location shift on deciles; ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = Hellinger().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 2), s.p_value < 1e-12
    (0.17, True)
    """

    name: ClassVar[str] = "hellinger"
    statistic_name: ClassVar[str] = "hellinger_distance"
    params = drift_params(warn=0.07, alert=0.17, test=True)

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:
        return hellinger(p, q)


class Wasserstein(ColumnDrift):
    """Wasserstein-1 distance divided by the reference standard deviation.

    .. math:: W = \\frac{1}{s_{ref}} \\int |F_{ref}(x) - F_{cur}(x)|\\,dx

    From the fine-grid counts (uniform mass within each bin) with the values
    outside the reference range handled exactly from their sums (see
    :func:`wasserstein_binned`); within 1 % of
    ``scipy.stats.wasserstein_distance`` on windows spread over bins the way
    the reference is.  In general the binned W1 is off by at most
    :math:`\\sum_j w_j (p_j + q_j)/2` (bin widths times both samples' shares),
    which the grid keeps under a thousandth of the reference range: a window
    piled into one wide bin of a long-tailed reference (a stuck sensor far
    in the tail) can be a few percent off — 4.9 % for a constant window in
    the tail of a lognormal with sigma 3.  A location shift of *d* sds gives
    W = *d* for any distribution.  When the reference is constant the
    distance is scaled by the sd of both samples together.

    p-value: the Cramér–von Mises test on the same grid
    (:func:`cramer_von_mises_binned`).  W1 has no distribution-free null
    law, and moment-matched approximations of its limit
    :math:`\\int |B(F(x))|\\,dx` proved too light-tailed (2-3x the nominal
    rate at p = 0.002 for skewed data), so the guard against noise is the
    calibrated CvM test of the same counts.

    Defaults: ``warn`` 0.2, ``alert`` 0.5 (sds); ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = Wasserstein().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 1), s.p_value < 1e-12
    (0.5, True)
    """

    name: ClassVar[str] = "wasserstein"
    statistic_name: ClassVar[str] = "wasserstein_sd"
    applies_to = frozenset({"numeric"})
    params = drift_params(warn=0.2, alert=0.5, test=True)

    def statistic(self, reference: NumericReference, current: NumericCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        w1 = wasserstein_binned(reference, current)
        scale, note = _scale(reference, current)
        value = w1 / scale if scale > 0 else 0.0
        _, pv, _ = _shared_cvm(reference, current)
        conditional = conditional_p_values(reference, current, smallest_p=smallest_p)
        if conditional is not None:
            pv, note = conditional[0]["cvm"], join_notes(note, conditional[1])
        return Stat(value=float(value), p_value=pv, note=join_notes(f"W1 {w1:.6g} in column units", note))


class KS(ColumnDrift):
    """Two-sample Kolmogorov–Smirnov test; the value is the statistic D.

    Binned on the reference grid by default (see :func:`ks_binned`: within
    1e-3 of the exact D, conservative p-value); the p-value is the
    asymptotic one of :func:`ks_p_value`, given the pooled grid counts: on a
    column whose pooled sample puts more than 1 % on one grid bin (a flag,
    a count, zeros, a cap) it is the tie-aware law of :func:`ks_tied_sf`,
    otherwise Kolmogorov's law as ``ks_2samp(method="asymp")``.

    Under an effective size of 300 (:func:`conditional_p_values`: a window
    of under 300 rows, or few values outside one dominant value) the
    p-value is the permutation one of :mod:`detectors.permutation` instead.

    ``exact: true`` keeps the raw finite values of the reference (once) and
    of every window batch (through the per-batch hooks) and runs
    ``scipy.stats.ks_2samp`` on them: memory then grows with the window.
    When one distinct value holds more than 1 % of both samples together,
    the p-value is the same tie-aware law on the raw pooled values (scipy's
    exact and asymptotic laws assume no ties), or under an effective size
    of 300 the permutation p-value with the distinct values as bins; the
    exact finite-sample law with ties, a count of lattice paths, costs O(nm).

    Defaults: ``warn`` 0.06 and ``alert`` 0.15 — the D of a 0.2-sd and a
    0.5-sd location shift of a uniform feature, :math:`d/\\sqrt{12}`, the
    unimodal shape on which KS is least sensitive (a normal gives
    :math:`2\\Phi(d/2) - 1`: 0.08 and 0.2), so a 0.2-sd shift of any unimodal
    feature reaches ``warn``; ``alpha`` 0.05 (BH); ``min_rows`` 100;
    ``exact`` false.

    >>> from detectors.profile import NumericReference, NumericCounts
    >>> rng = np.random.default_rng(1)
    >>> ref = NumericReference.from_values(rng.normal(size=20000))
    >>> cur = NumericCounts.of(rng.normal(0.5, size=20000), ref)
    >>> s = KS().statistic(ref, cur)
    >>> round(s.value, 2), s.p_value < 1e-10
    (0.2, True)
    """

    name: ClassVar[str] = "ks"
    statistic_name: ClassVar[str] = "ks_d"
    applies_to = frozenset({"numeric"})
    params = {**drift_params(warn=0.06, alert=0.15, test=True),
              "exact": Param(False, boolean, "exact test on the raw samples (memory grows with the window)")}

    batch_fields = frozenset({"numeric", "model"})

    @property  # type: ignore[override]
    def uses_batches(self) -> bool:  # only the exact test needs the raw values
        return bool(self.exact)

    @property  # type: ignore[override]
    def keeps_raw_values(self) -> bool:
        return bool(self.exact)

    def reference_extra(self, reference: Batch) -> Any:
        return self.batch_extra(None, reference) if self.exact else None

    def batch_extra(self, reference_extra: Any, batch: Batch) -> RawSample | None:
        if not self.exact:
            return None
        return RawSample(values={k: v[np.isfinite(v)] for k, v in batch_numeric(batch).items()})

    def score(self, summary: Profile, current: Profile, *, context: Context) -> list[Finding]:
        ref_raw, cur_raw = summary.extras.get(self.key), current.extras.get(self.key)
        if not self.exact or ref_raw is None:
            return super().score(summary, current, context=context)
        cur_values = cur_raw.values if cur_raw is not None else {}
        numeric_ref, numeric_cur = dict(summary.numeric), dict(current.numeric)
        for col, ref in summary.numeric.items():
            key = role_key(summary, col)
            if key in ref_raw.values and col in current.numeric:
                numeric_ref[col] = _with_sample(ref, _ExactReference, ref_raw.values[key])
                numeric_cur[col] = _with_sample(current.numeric[col], _ExactCounts,
                                                cur_values.get(key, np.empty(0)))
        return super().score(
            Profile(n_rows=summary.n_rows, numeric=numeric_ref, categorical=summary.categorical,
                    roles=summary.roles, extras=summary.extras),
            Profile(n_rows=current.n_rows, numeric=numeric_cur, categorical=current.categorical,
                    roles=current.roles, extras=current.extras),
            context=context)

    def statistic(self, reference: NumericReference, current: NumericCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        if isinstance(reference, _ExactReference) and isinstance(current, _ExactCounts) and current.sample.size:
            from scipy import stats

            x, y = reference.sample, current.sample
            _, where, pooled = np.unique(np.concatenate([x, y]), return_inverse=True, return_counts=True)
            if pooled.max() > KS_TIE_STEP * pooled.sum():  # tied (the distinct values are the bins): as ks_p_value
                d = float(stats.ks_2samp(x, y, method="asymp").statistic)
                by_value = (np.bincount(where[:x.size], minlength=pooled.size),
                            np.bincount(where[x.size:], minlength=pooled.size))
                if needs_permutation(*by_value):
                    pv = permutation_p_values(*by_value, max_draws=draws_for(smallest_p))["ks"]
                    return Stat(value=d, p_value=pv, note=join_notes("exact", permutation_note(*by_value)))
                return Stat(value=d, p_value=ks_p_value(d, n_reference=x.size, n_current=y.size, pooled=pooled),
                            note="exact; tie-aware p-value")
            res = stats.ks_2samp(x, y)
            return Stat(value=float(res.statistic), p_value=float(res.pvalue), note="exact")
        d = ks_binned(reference.counts, current.counts)
        conditional = conditional_p_values(reference, current, smallest_p=smallest_p)
        if conditional is not None:
            return Stat(value=d, p_value=conditional[0]["ks"], note=conditional[1])
        return Stat(value=d, p_value=ks_p_value(d, n_reference=reference.n, n_current=current.n_finite,
                                                pooled=reference.counts + current.counts))


class CramerVonMises(ColumnDrift):
    """Two-sample Cramér–von Mises test on the fine grid; the value is the CvM distance ω².

    .. math:: \\omega^2 = \\int (F_{ref} - F_{cur})^2\\,dH

    (:math:`H` the pooled CDF).  The test statistic :math:`T` (Anderson's
    ECDF form: ``scipy.stats.cramervonmises_2samp``'s statistic for untied
    data, grid bins as ties) and scipy's asymptotic p-value — with the null
    moments of the tied statistic when a bin holds 1 % of the pooled sample,
    and Smirnov's integral far in the tail — are computed by
    :func:`cramer_von_mises_binned`; T is stated in the note.  The value does
    not grow with the sample size (:math:`T = n_{eff}\\,\\omega^2`, about 1/6
    under no change).

    Defaults: ``warn`` 0.004, ``alert`` 0.02 — ω² of a 0.2-sd and a 0.5-sd
    normal location shift (:math:`\\approx 0.092 d^2` for small *d*);
    ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = CramerVonMises().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 3), s.p_value < 1e-6
    (0.021, True)
    """

    name: ClassVar[str] = "cramer_von_mises"
    statistic_name: ClassVar[str] = "cvm_distance"
    applies_to = frozenset({"numeric"})
    params = drift_params(warn=0.004, alert=0.02, test=True)

    def statistic(self, reference: NumericReference, current: NumericCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        t, pv, omega2 = _shared_cvm(reference, current)
        conditional = conditional_p_values(reference, current, smallest_p=smallest_p)
        if conditional is not None:
            return Stat(value=omega2, p_value=conditional[0]["cvm"], note=join_notes(f"T {t:.6g}", conditional[1]))
        return Stat(value=omega2, p_value=pv, note=f"T {t:.6g}")


class AndersonDarling(ColumnDrift):
    """k-sample (k = 2) Anderson–Darling test on the fine grid; the value is the AD distance.

    .. math:: \\mathrm{AD} = \\int \\frac{(F_{ref} - F_{cur})^2}{H(1-H)}\\,dH
              = A^2_{akN}\\,\\frac{N}{nm}

    The standardised statistic and p-value are those of
    ``scipy.stats.anderson_ksamp(variant="midrank")`` with grid bins as ties
    (:func:`anderson_darling_binned`), except that with material ties (a bin
    holding 1 % of the pooled sample) the variance of the tied statistic
    replaces the continuous one — scipy's rejects about 7 % of no-change
    Poisson samples at 5 % — and that beyond scipy's table the p-value is
    extrapolated instead of capped (:func:`ad_p_value`).  The standardised
    statistic is stated in the note.  The AD distance weights
    the tails more than ω² and does not grow with the sample size.

    Defaults: ``warn`` 0.02, ``alert`` 0.12 — the distance of a 0.2-sd and a
    0.5-sd normal location shift; ``alpha`` 0.05 (BH); ``min_rows`` 100.
    Scholz & Stephens' table is asymptotic, and a window of a few hundred
    rows against a large reference has a heavier tail (p < 0.0025 came 1.6
    to 1.9 times as often as nominal at 120 and 200 rows against 5 000; a
    25-feature model alarmed in 5.4-6.0 % of no-change runs there, 5.0 % at
    250 rows and 3.6 % at 300), so under an effective size of 300
    (:func:`conditional_p_values`) the p-value is the permutation one of
    :mod:`detectors.permutation`, exact at any size; the ``min_rows`` of 300
    that guarded the table is gone.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = AndersonDarling().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.5, size=20000), ref))
    >>> round(s.value, 2), s.p_value < 1e-6
    (0.11, True)
    """

    name: ClassVar[str] = "anderson_darling"
    statistic_name: ClassVar[str] = "ad_distance"
    applies_to = frozenset({"numeric"})
    params = drift_params(warn=0.02, alert=0.12, test=True)

    def statistic(self, reference: NumericReference, current: NumericCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        a2, pv, dist = anderson_darling_binned(reference.counts, current.counts)
        conditional = conditional_p_values(reference, current, smallest_p=smallest_p)
        if conditional is not None:
            return Stat(value=dist, p_value=conditional[0]["ad"],
                        note=join_notes(f"standardised A2 {a2:.6g}", conditional[1]))
        return Stat(value=dist, p_value=pv, note=f"standardised A2 {a2:.6g}")


class MeanShift(ColumnDrift):
    """Quick test of a shift of the mean or the spread, from the running moments alone.

    Value: :math:`\\max(|\\bar y - \\bar x|/s_x, |a_y/a_x - 1|)` (the mean shift in
    reference sds, or the relative change of the mean absolute deviation);
    p-value: Wilcoxon rank-sum (location) and Ansari–Bradley (spread) tests
    on the grid counts, Bonferroni-combined (see :func:`mean_shift`).  Cheap and
    blind to shape changes that keep both moments: pair it with ``ks`` or
    ``wasserstein``.

    Defaults: ``warn`` 0.2, ``alert`` 0.5 (sds; Cohen's small and medium);
    ``alpha`` 0.05 (BH); ``min_rows`` 100.

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=20000))
    >>> s = MeanShift().statistic(ref, NumericCounts.of(np.random.default_rng(1).normal(0.0, 1.5, size=20000), ref))
    >>> round(s.value, 1), s.p_value < 1e-12
    (0.5, True)
    """

    name: ClassVar[str] = "mean_shift"
    statistic_name: ClassVar[str] = "standardised_shift"
    applies_to = frozenset({"numeric"})
    params = drift_params(warn=0.2, alert=0.5, test=True)

    def statistic(self, reference: NumericReference, current: NumericCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        value, pv, note = mean_shift(reference, current, smallest_p=smallest_p)
        return Stat(value=value, p_value=pv, note=note)
