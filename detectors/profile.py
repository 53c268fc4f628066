"""Mergeable partial counts: the profiles every detector works on.

A *reference* is summarised once into grids (:class:`NumericReference`,
:class:`CategoricalReference`).  Each batch of the current window becomes
partial counts on those grids (:class:`NumericCounts`,
:class:`CategoricalCounts`); partial counts merge by addition, so a window
of any size costs memory independent of its length and the same three
functions — count a batch, merge, finalise — run inside any scale-out engine.

Numeric grid
    The interior edges are the union of ``grid_bins`` equal-width bins over
    the reference range ``[min, max]`` and the reference quantiles at
    ``1/quantile_points … `` — so every bin holds at most ``1/quantile_points``
    of the reference mass *and* at most ``(max-min)/grid_bins`` of its range —
    but for an *atom*, a repeated value holding more than ``1/quantile_points``
    of the reference (the zeros of a zero-inflated column, a cap, a default):
    it is a bin of its own, ``[v, nextafter(v))``, so a window whose atom
    moves even slightly (zeros imputed as 1e-3, a cap of 1.0 become 0.999)
    leaves it.  Counts have one slot below the reference minimum and one
    above its maximum; NaN and ±inf are counted apart and never enter the bins.

Counting
    A batch is cut at the edges exactly: sorted once and cut (:func:`_sorted_counts`), or, for a batch
    of ``CELLS // 2`` values or more without NaN or infinities on a grid whose reference spreads over
    it, through a monotone cell map (:class:`CellMap`) that leaves only the values next to an edge to
    sort.  Both give the same counts; the sums of a batch without NaN are taken from its values as they
    come, so the moments do not depend on the path either.

Precision
    float32 data is compared with the edges rounded to float32, and there an
    atom's bin holds both float32 neighbours of a value float32 cannot hold
    (a float32 window of a float64 reference's 0.1), but never more: it does
    not reach into the float64 grid, so a column of large values (epoch
    seconds, ids), where float32 neighbours are hundreds apart, keeps its
    grid.  A reference whose values are all float32 (written as float32)
    has float64 windows rounded to float32 before they are counted, so the
    same one-decimal values written at either precision are the same values.
    float16 data is counted as float32, its atoms' bins widened to float16's
    neighbours the same way.

Example
-------
>>> import numpy as np
>>> ref = NumericReference.from_values(np.arange(1000.0))
>>> a = NumericCounts.of(np.arange(500.0), ref)
>>> b = NumericCounts.of(np.array([np.nan, 2000.0]), ref)
>>> m = a.merge(b)
>>> int(m.n_finite), int(m.n_nan), int(m.counts[-1])
(501, 1, 1)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, TypeVar

import numpy as np

__all__ = [
    "NumericReference",
    "NumericCounts",
    "CategoricalReference",
    "CategoricalCounts",
    "Profile",
    "PSI_QUANTILE_BINS",
    "per_pair",
]

T = TypeVar("T")

PSI_QUANTILE_BINS = 10


def per_pair(current: Any, reference: Any, key: str, compute: Callable[[], T]) -> T:
    """``compute()`` once for ``current`` against ``reference`` under ``key``, then the stored result.

    Several detectors of a run derive the same table or test from the same
    pair (the decile chi-square behind JS, KL, Hellinger and TV; the CvM test
    behind ``cramer_von_mises`` and ``wasserstein``).  The result is kept in
    ``current``'s ``__dict__`` with the reference and the ``counts`` object it
    was computed from, and is used again only while both are the same objects:
    another reference, or counts replaced by assignment, recompute it (only the
    latest reference is kept per key).  Counts must not be changed in place —
    the library never does: ``merge`` makes new ones — and the arrays stored
    are read-only.  Copies and pickles of counts leave the stored results behind.

    >>> c = CategoricalCounts(counts={"a": 1})
    >>> calls = []
    >>> [per_pair(c, "ref", "k", lambda: calls.append(1) or len(calls)) for _ in range(2)]
    [1, 1]
    >>> c.counts = {"a": 2}
    >>> per_pair(c, "ref", "k", lambda: calls.append(1) or len(calls))
    2
    """
    memo = current.__dict__.setdefault("_per_pair", {})
    counts = getattr(current, "counts", None)
    hit = memo.get(key)
    if hit is not None and hit[0] is reference and hit[1] is counts:
        return hit[2]
    value = compute()
    for part in value if isinstance(value, tuple) else (value,):
        if isinstance(part, np.ndarray):
            part.flags.writeable = False
    memo[key] = (reference, counts, value)
    return value


def _fields_only(self: Any) -> dict[str, Any]:
    """Pickled and copied state of counts: their fields, without cached or per-pair results."""
    return {f.name: self.__dict__[f.name] for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class NumericReference:
    """The reference summary of one numeric column.

    ``edges`` are the interior grid edges (strictly increasing); the last one
    is just above the reference maximum so the top bin is closed — +inf when
    the maximum is the largest float, above which nothing finite lies (the
    widths and midpoints of bins come from :attr:`bin_edges`, finite always).
    ``counts`` is the reference histogram on the grid, laid out as
    :attr:`NumericCounts.counts`.  ``psi_cuts`` are indices into the counts
    where the ``PSI_QUANTILE_BINS`` reference-quantile bins start: each a tenth
    of the reference, or one value that holds more (fewer bins then).

    >>> flag = NumericReference.from_values(np.repeat([0.0, 1.0], [700, 300]))
    >>> np.add.reduceat(flag.counts, flag.psi_cuts).tolist()   # not one bin of 1000: the 0s, the 1s
    [700, 300]
    """

    edges: np.ndarray
    counts: np.ndarray
    psi_cuts: np.ndarray
    n: int
    n_missing: int
    mean: float
    std: float
    minimum: float
    maximum: float
    #: of ``n_missing``: infinities; the rest are NaN or null
    n_inf: int = 0
    #: the atoms, each the only value of its grid bin (see the module docstring)
    atoms: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: every finite value is a float32 (see Precision in the module docstring)
    float32_exact: bool = False

    __getstate__ = _fields_only

    @functools.cached_property
    def bin_values(self) -> np.ndarray:
        """Where each interior bin's values lie, for moments from counts: an atom's bin at the atom (its
        bin is a few float32 ulps wide, and no other value lies in it), any other at its midpoint."""
        e = self.bin_edges
        mid = 0.5 * e[:-1] + 0.5 * e[1:]  # halves first: no overflow next to the largest float
        mid[self.atom_bins] = self.atoms
        return mid

    @functools.cached_property
    def atom_bins(self) -> np.ndarray:
        """The interior bin of each atom (searched in ``edges``: an atom at the largest float has the bin
        up to +inf)."""
        return np.searchsorted(self.edges, self.atoms, side="right") - 1

    @property
    def n_nan(self) -> int:
        """Missing values that are NaN or null (not infinite)."""
        return self.n_missing - self.n_inf

    @functools.cached_property
    def bin_edges(self) -> np.ndarray:
        """``edges`` for bin widths and midpoints: an infinite top edge (a maximum at the largest
        float) taken as the maximum itself, so that bin is as wide as the values in it."""
        if self.edges.size and not math.isfinite(float(self.edges[-1])):
            out = self.edges.copy()
            out[-1] = self.maximum
            return out
        return self.edges

    @functools.cached_property
    def edges_float32(self) -> np.ndarray:
        """The edges for float32 data (see :func:`_edges_as`), an atom's bin widened to both float32
        neighbours (:func:`_atom_edges`); computed once per reference."""
        return _atom_edges(_edges_as(self.edges, np.dtype(np.float32)), self.edges, self.atoms, np.float32)

    @functools.cached_property
    def edges_float16(self) -> np.ndarray:
        """The float32 edges for float16 data (counted as float32), an atom's bin widened to both float16
        neighbours; computed once per reference."""
        return _atom_edges(_edges_as(self.edges, np.dtype(np.float32)), self.edges, self.atoms, np.float16)

    @functools.cached_property
    def _cell_maps(self) -> dict[str, CellMap | None]:
        return {}

    @functools.cached_property
    def _cell_pauses(self) -> dict[str, int]:
        return {}

    def cell_map(self, dtype: np.dtype) -> CellMap | None:
        """The cell map counting data of ``dtype`` on :meth:`edges_for` ``(dtype)`` (see :class:`CellMap`),
        planned once per dtype; ``None`` when the column is better sorted, or while the map is paused
        (:meth:`drop_cell_map`)."""
        key = np.dtype(dtype).str
        maps = self._cell_maps
        if key not in maps:
            compute = np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)
            maps[key] = _plan_cells(self.edges_for(dtype), self.counts, compute, atom_bins=self.atom_bins)
        pauses = self._cell_pauses
        if pauses.get(key, 0) > 0:
            pauses[key] -= 1
            return None
        return maps[key]

    def drop_cell_map(self, dtype: np.dtype, *, batches: int | None = None) -> None:
        """Sort the next ``batches`` batches of ``dtype`` (then try the map again): a batch left more than
        ``CELL_SHARE_DROP`` of its values to sort, so the window is not where the reference was (the counts
        are the same either way).  ``batches`` defaults to ``CELL_PAUSE``."""
        self._cell_pauses[np.dtype(dtype).str] = CELL_PAUSE if batches is None else batches

    def edges_for(self, dtype: np.dtype) -> np.ndarray:
        """The edges to compare data of ``dtype`` with (float32's and float16's cached; float16 data is
        compared as float32)."""
        if dtype == np.float16:
            return self.edges_float16
        return self.edges_float32 if dtype == np.float32 else _edges_as(self.edges, dtype)

    @classmethod
    def from_values(cls, values: np.ndarray, *, n_null: int = 0, grid_bins: int = 1000,
                    quantile_points: int = 1000, psi_bins: int = PSI_QUANTILE_BINS) -> NumericReference:
        x = np.asarray(values, dtype=np.float64)
        finite = np.sort(x[np.isfinite(x)])  # sorted once: quantiles and counts are then lookups
        # nulls arrive as NaN in ``values``; ``n_null`` only says how many of the NaNs they are
        n_missing = int(x.size - finite.size)
        n_inf = int(np.count_nonzero(np.isinf(x))) if n_missing else 0
        if finite.size == 0:
            empty = np.empty(0)
            return cls(edges=empty, counts=np.zeros(1, np.int64), psi_cuts=np.zeros(1, np.intp), n=0,
                       n_missing=n_missing, mean=float("nan"), std=float("nan"),
                       minimum=float("nan"), maximum=float("nan"), n_inf=n_inf)
        lo, hi = float(finite[0]), float(finite[-1])
        atoms, atom_counts = _atoms(finite, more_than=max(1.0, finite.size / quantile_points))  # repeated, > 0.1 %
        atom_lo = atoms
        with np.errstate(over="ignore"):
            atom_hi = np.nextafter(atoms, np.inf)  # [v, nextafter(v)): the value alone
        with np.errstate(over="ignore"):  # above the largest float lies +inf (see bin_edges)
            top = float(np.nextafter(hi, np.inf))
            uniform = np.linspace(lo, hi, grid_bins + 1)
            quantiles = _sorted_quantiles(finite, np.linspace(0.0, 1.0, quantile_points + 1))
            psi_q = _sorted_quantiles(finite, np.arange(1, psi_bins) / psi_bins)
        edges = np.unique(np.concatenate([uniform, quantiles, psi_q, [top], atom_lo, atom_hi]))
        edges = edges[(edges >= lo) & (edges <= top)]  # nothing lies inside an atom's bin: it is one float wide
        if edges.size > 2 and not (atoms.size and atoms[-1] == hi):  # a plain maximum is in the closed top bin
            edges = edges[edges != hi]
        counts = _cut(finite, edges)
        # the PSI bins start after the first grid bin where the reference reaches each k/psi_bins share:
        # at the deciles of a continuous column (they are grid edges), and a value holding more than a
        # share (a flag, a zero-inflated or small-integer column) is a bin of its own instead of being
        # merged with its neighbours; a bin the reference leaves empty is not cut
        cum = np.cumsum(counts)
        after = np.searchsorted(cum, np.arange(1, psi_bins) * (finite.size / psi_bins), side="left") + 1
        # an atom holding half a share or more (a cap, a default) is a PSI bin of its own too, so a move of it
        # within its decile is seen: a cut where its grid bin starts (unless it is the minimum's, which the
        # first PSI bin starts at) and one after it when the reference has values beyond it
        at = np.searchsorted(edges, atom_lo[atom_counts >= finite.size / (2 * psi_bins)], side="right")
        cuts = np.concatenate([after, at[at > 1], at + 1])
        cuts = np.unique(cuts[(cuts > 0) & (cuts < counts.size)])
        kept = [0]
        for c in cuts[cum[cuts - 1] < finite.size].tolist():  # each PSI bin holds reference values
            if cum[c - 1] > (cum[kept[-1] - 1] if kept[-1] else 0):
                kept.append(c)
            elif kept[-1]:  # [previous cut, c) is empty: it joins the bin before
                kept[-1] = c
        psi_cuts = np.array(kept)
        if psi_cuts.size == 1:  # one value (a constant): below and above it are bins, or PSI could never move
            psi_cuts = np.array([0, 1, counts.size - 1])
        mean, std = scaled_moments(finite)
        with np.errstate(over="ignore"):
            as32 = finite.astype(np.float32)
        float32_exact = bool(np.isfinite(as32[0]) and np.isfinite(as32[-1]) and np.array_equal(as32, finite))
        return cls(edges=edges, counts=counts, psi_cuts=psi_cuts.astype(np.intp), n=int(finite.size),
                   n_missing=n_missing, mean=float(mean), std=float(std), minimum=lo, maximum=hi, n_inf=n_inf,
                   atoms=atoms, float32_exact=float32_exact)


def _atoms(s: np.ndarray, *, more_than: float) -> tuple[np.ndarray, np.ndarray]:
    """The values of sorted ``s`` that occur more than ``more_than`` times, in order, and their counts.

    >>> [a.tolist() for a in _atoms(np.array([0.0, 0.0, 0.0, 1.0, 2.0, 2.0]), more_than=1)]
    [[0.0, 2.0], [3, 2]]
    """
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    runs = np.diff(np.append(starts, s.size))
    keep = runs > more_than
    return s[starts[keep]], runs[keep]


def _atom_edges(edges32: np.ndarray, edges: np.ndarray, atoms: np.ndarray, precision: type) -> np.ndarray:
    """``edges32`` (the float64 ``edges`` rounded up to float32) for data of ``precision`` (float32 or
    float16, compared as float32), each atom's bin ``[v, nextafter(v))`` widened to ``[down, next(up))``:
    ``down`` the largest value of that precision at or below ``v``, ``up`` the smallest at or above (one
    value when ``v`` is one).  A float32 window of a float64 reference rounds 0.1 to the nearest float32,
    above it or below; both land in the atom's bin.  Edges between are moved to the widened bin's ends
    (such data cannot fall between them anyway), so the bins stay in order and each count keeps its
    meaning; the float64 grid is untouched.  Atoms beyond the precision's range keep their bin.

    >>> edges = np.array([0.0, 0.1, np.nextafter(0.1, 1.0), 0.2])
    >>> e32 = _atom_edges(edges.astype(np.float32), edges, np.array([0.1]), np.float32)
    >>> np.searchsorted(e32, np.float32(0.1), side="right") - 1   # the atom's bin: edges[1] to edges[2]
    np.int64(1)
    >>> bool(e32[1] < np.float32(0.1) < e32[2] and e32[1] == np.nextafter(np.float32(0.1), np.float32(0)))
    True
    """
    if atoms.size == 0 or edges.size < 2:
        return edges32
    inf = precision(np.inf)
    with np.errstate(over="ignore"):
        f = atoms.astype(precision)
        down = np.where(f.astype(np.float64) > atoms, np.nextafter(f, -inf), f).astype(np.float32)
        ceil = np.where(f.astype(np.float64) < atoms, np.nextafter(f, inf), f)
        after = np.nextafter(ceil, inf).astype(np.float32)
    at = np.searchsorted(edges, atoms)
    ok = (at + 1 < edges.size) & np.isfinite(down) & np.isfinite(after)
    ok[ok] = edges[at[ok]] == atoms[ok]
    at, down, after = at[ok], down[ok], after[ok]
    out = edges32.copy()
    out[at] = np.minimum(out[at], down)
    out = np.minimum.accumulate(out[::-1])[::-1]  # edges below an atom's widened start move down to it
    out[at + 1] = np.maximum(out[at + 1], after)
    return np.maximum.accumulate(out)  # and edges above its widened end up to that


def scaled_moments(x: np.ndarray, *, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd (``ddof=1``; 0 for fewer than two values) of the finite values of ``x`` along
    ``axis``, taken on the values scaled by a power of two (exact): squares of values past 1e154
    overflow, the scaled ones do not.

    >>> [float(v) for v in scaled_moments(np.array([1e160, 3e160, np.nan]))]
    [2e+160, 1.414213562373095e+160]
    """
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    e = np.frexp(np.max(np.where(ok, np.abs(x), 0.0), axis=axis, initial=0.0))[1]
    keep = (lambda a: a) if axis is None else (lambda a: np.expand_dims(a, axis))
    scaled = np.ldexp(np.where(ok, x, 0.0), -keep(e))
    mean = scaled.sum(axis=axis) / np.maximum(n, 1)
    dev = np.where(ok, scaled - keep(mean), 0.0)
    sd = np.sqrt(np.sum(dev * dev, axis=axis) / np.maximum(n - 1, 1))
    return np.ldexp(mean, e), np.ldexp(sd, e)


def _sorted_quantiles(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(s, q)`` (linear interpolation) of an already sorted, non-empty ``s``, without a partition.

    >>> _sorted_quantiles(np.array([1.0, 2.0, 4.0]), np.array([0.0, 0.25, 1.0])).tolist()
    [1.0, 1.5, 4.0]
    """
    pos = q * (s.size - 1)
    below = np.floor(pos).astype(np.intp)
    above = np.minimum(below + 1, s.size - 1)
    return s[below] + (s[above] - s[below]) * (pos - below)


def _edges_as(edges: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``edges`` in ``dtype``, each rounded *up* to the nearest representable value.

    For a value ``x`` of that dtype, ``x >= e`` exactly when ``x >= ceil(e)``: comparing
    float32 data with float32 edges bins it exactly as against the float64 edges, without
    converting the data.
    """
    if dtype == edges.dtype:
        return edges
    with np.errstate(over="ignore"):
        out = edges.astype(dtype)
        low = out.astype(edges.dtype) < edges
        out[low] = np.nextafter(out[low], np.array(np.inf, dtype=dtype))
    return out


class _Sorted(NamedTuple):
    """One sorted batch cut at the grid edges (see :func:`_sorted_counts`)."""

    counts: np.ndarray
    finite: np.ndarray
    n_neginf: int
    n_posinf: int
    n_nan: int


def _as_float32(x: np.ndarray) -> np.ndarray:
    """float64 ``x`` rounded to float32, for a reference whose values all are float32 (see Precision in the
    module docstring).  A finite value beyond float32's range becomes float32's largest value of its sign:
    beyond every finite float32 edge, as it is, so it falls in the same bin; its sums are taken from ``x``.
    (Leaving the whole batch in float64 instead would bin its other values apart from the reference's
    float32 values, and make the counts depend on which batch such a value arrives in.)

    >>> _as_float32(np.array([0.1, 1e300, -1e300, np.inf])).tolist()
    [0.10000000149011612, 3.4028234663852886e+38, -3.4028234663852886e+38, inf]
    """
    with np.errstate(over="ignore"):
        y = x.astype(np.float32)
    if np.isinf(y).any():
        beyond = np.isinf(y) & np.isfinite(x)
        if beyond.any():
            y[beyond] = np.copysign(np.finfo(np.float32).max, x[beyond])
    return y


def _sorted_counts(x: np.ndarray, edges: np.ndarray) -> _Sorted:
    """Sort ``x`` once and cut it at ``edges`` (of ``x``'s dtype: see :func:`_edges_as`).

    ``counts[j]`` is the number of finite values with exactly ``j`` edges at or
    below them, i.e. bins ``[-inf, e0), [e0, e1), …, [e_last, +inf)``.  One sort
    costs about half of ``np.histogram``'s block sorts plus float64 searches, and
    the sorted values give the infinities and NaNs by position (``np.sort`` puts
    -inf first, +inf and then NaN last) and the tails as slices.
    """
    s = np.sort(x)
    n = s.size
    lo, hi = 0, n
    nan_at = n
    if n:
        if s[0] == -np.inf:
            lo = int(np.searchsorted(s, s[0], side="right"))
        if not math.isfinite(s[-1]):
            hi = int(np.searchsorted(s, s.dtype.type(np.inf), side="left"))
            nan_at = int(np.searchsorted(s, s.dtype.type(np.nan), side="left"))
    finite = s[lo:hi]
    return _Sorted(_cut(finite, edges), finite, lo, nan_at - hi, n - nan_at)


def _cut(finite: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted finite values with exactly ``j`` edges at or below them, ``j = 0 … len(edges)``.

    The shorter array is searched for in the longer: the edges in the values, whose
    positions differenced are the counts, or (a batch with fewer values than edges)
    each value in the edges, giving its bin directly.
    """
    if finite.size < edges.size:
        bins = np.searchsorted(edges, finite, side="right")
        return np.bincount(bins, minlength=edges.size + 1).astype(np.int64, copy=False)
    cuts = np.searchsorted(finite, edges, side="left")
    counts = np.empty(edges.size + 1, np.int64)
    counts[0] = cuts[0] if edges.size else finite.size
    counts[1:-1] = cuts[1:] - cuts[:-1]
    if edges.size:
        counts[-1] = finite.size - cuts[-1]
    return counts


#: cells of the counting map (see :class:`CellMap`): a batch of fewer than half as many values is sorted instead
CELLS = 1 << 16
#: a reference grid is counted through a cell map only if at most this share of the reference falls in cells
#: that hold an edge (those values are sorted): heavier columns (atoms, integers) sort the whole batch
CELL_SHARE_MAX = 0.25
#: a batch that leaves more than this share to sort has its column sorted for the next ``CELL_PAUSE`` batches
CELL_SHARE_DROP = 0.5
CELL_PAUSE = 64
#: the reference shares left out of each end of the map's range, tried in turn (the tails are sorted)
_CELL_TAILS = (0.0, 0.001, 0.005, 0.02, 0.05)
#: at most this many atoms, each holding at least ``CELL_ATOM_SHARE`` of the reference, are counted by comparison
CELL_ATOMS = 4
CELL_ATOM_SHARE = 0.005


class CellMap(NamedTuple):
    """A monotone map of values to ``CELLS`` cells, and the grid slot of each cell that no edge falls in.

    ``cell(x) = ⌊clip((x - lo) · scale, 0, CELLS - 1)⌋``, each operation rounded in the data's dtype.
    Every step rounds monotonically, so ``x ≤ y`` gives ``cell(x) ≤ cell(y)``: a value below an edge
    ``e`` lies in a cell at or before ``cell(e)``, a value at or above it at or after.  A cell no edge
    falls in therefore lies inside one grid bin, ``slots[cell]``, and its values are counted by one
    ``bincount`` of their slots.  The cells an edge falls in, and the first and last cell (everything
    beyond the map's range: the tails, whose distances are summed), have the slot ``left`` (one past
    the grid's): only their values are sorted and cut as :func:`_sorted_counts` cuts a whole batch.
    The counts are the same, exactly.  Per value the map, the lookup and ``bincount`` cost some 3-4 ns
    on one thread, against 20-30 ns for a sort on CPUs whose NumPy sort is not vectorised (about 5 ns
    where it is), plus the sort of the few values left.  ``slots`` takes 2 bytes a cell (128 KiB).

    >>> ref = NumericReference.from_values(np.random.default_rng(0).normal(size=10_000))
    >>> m = ref.cell_map(np.dtype(np.float64))
    >>> x = np.random.default_rng(1).normal(size=CELLS)
    >>> counts, left = _cell_counts(x, ref.edges, m)
    >>> bool(np.array_equal(counts, _sorted_counts(x, ref.edges).counts)), left.size < x.size // 20
    (True, True)
    """

    lo: Any
    scale: Any
    slots: np.ndarray
    #: estimated share of the reference in the cells left to sort (:func:`_plan_cells`)
    share: float
    #: ``(slot, start, end)`` of the atoms counted by comparison among the values left (see :func:`_cell_counts`)
    atoms: tuple[tuple[int, Any, Any], ...] = ()

    def cells(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            y = np.subtract(x, self.lo)
            np.multiply(y, self.scale, out=y)
        np.clip(y, 0, CELLS - 1, out=y)
        return y.astype(np.int32)


def _plan_cells(edges: np.ndarray, counts: np.ndarray, dtype: np.dtype, *,
                atom_bins: np.ndarray = np.empty(0, np.intp)) -> CellMap | None:
    """The cell map for ``edges`` (in ``dtype``) whose clean cells hold the most of the reference ``counts``.

    The map's range runs between two edges that leave a share of the reference out of each end (the
    candidates in ``_CELL_TAILS``: a long tail would otherwise crowd the bulk into a few cells).  The
    share in cells that hold an edge is estimated from the reference histogram, each bin's values
    spread evenly over the cells it spans: a bin spanning ``s ≥ 1`` cells puts about ``1/s`` of its
    values in its two end cells, a bin inside one cell all of them, and an atom's bin (``atom_bins``)
    all of them too: they lie at its lower edge.  The ``CELL_ATOMS`` heaviest atoms holding at least
    ``CELL_ATOM_SHARE`` each (the zeros of a zero-inflated column, a cap, a default value)
    are not sorted but counted by comparing the values left with their bins (:func:`_cell_counts`),
    and are left out of the share.  ``None`` when even the best candidate puts more than
    ``CELL_SHARE_MAX`` in them, no finite range exists or the grid has more slots than 2 bytes count:
    those columns are sorted.
    """
    n = int(counts.sum())
    if edges.size < 2 or edges.size + 1 >= np.iinfo(np.uint16).max or n == 0 or not np.isfinite(edges[0]):
        return None
    dtype = np.dtype(dtype)
    cum = np.cumsum(counts)[:edges.size]  # cum[i]: reference values below edges[i]
    inner = counts[1:edges.size].astype(np.float64)
    at_edge = np.zeros(inner.size, bool)  # an atom's values are all at its bin's lower edge
    atom_bins = atom_bins[(atom_bins >= 0) & (atom_bins < inner.size)]
    at_edge[atom_bins] = True
    # the heaviest atoms are counted by comparison, not sorted: out of the share
    heavy = atom_bins[np.argsort(-inner[atom_bins], kind="stable")[:CELL_ATOMS]]
    heavy = np.sort(heavy[inner[heavy] >= CELL_ATOM_SHARE * n])
    weight = np.ones(inner.size)
    weight[heavy] = 0.0
    best: tuple[float, Any, Any, np.ndarray] | None = None
    for tail in _CELL_TAILS:
        i = max(int(np.searchsorted(cum, tail * n, side="right")) - 1, 0)
        k = min(int(np.searchsorted(cum, (1.0 - tail) * n, side="left")), edges.size - 1)
        a, b = float(edges[i]), float(edges[k])
        if not (math.isfinite(b) and b > a):
            continue
        with np.errstate(over="ignore"):
            scale = dtype.type((CELLS - 1) / (b - a))
        if not (np.isfinite(scale) and scale > 0):
            continue
        ce = CellMap(dtype.type(a), scale, np.empty(0, np.uint16), 1.0).cells(edges)
        span = np.diff(ce).astype(np.float64)
        share = float(np.sum(weight * inner / np.where(at_edge, 1.0, np.maximum(span, 1.0))) / n)
        if best is None or share < best[0]:
            best = (share, dtype.type(a), scale, ce)
    if best is None or best[0] > CELL_SHARE_MAX:
        return None
    share, lo, scale, ce = best
    slots = np.searchsorted(ce, np.arange(CELLS), side="left").astype(np.uint16)  # edges in earlier cells
    slots[ce] = slots[:ce[0] + 1] = slots[ce[-1]:] = edges.size + 1
    atoms = tuple((int(b) + 1, edges[b], edges[b + 1]) for b in heavy.tolist())
    return CellMap(lo, scale, slots, share, atoms)


def _cell_counts(x: np.ndarray, edges: np.ndarray, m: CellMap) -> tuple[np.ndarray, np.ndarray]:
    """The counts of finite ``x`` on ``edges`` (as :func:`_sorted_counts`) through the cell map ``m``,
    and the sorted values of the cells left to sort (the tails at its ends).  Among the values left,
    those in the bin of one of ``m.atoms`` (a value or two wide) are counted by comparison with the
    bin's edges and left out: a few passes over the batch, far cheaper than sorting them."""
    slot = np.take(m.slots, m.cells(x))
    is_left = slot == edges.size + 1
    found = []
    for at, start, end in m.atoms:  # an atom's bin holds one value (two for a float32 window of a float64 one)
        hit = (x >= start) & (x < end)
        hit &= is_left  # its values in cells of their own are counted already
        k = int(np.count_nonzero(hit))
        if k:
            found.append((at, k))
            is_left ^= hit
    left = np.sort(x[is_left])
    counts = _cut(left, edges)
    for at, k in found:
        counts[at] += k
    counts[1:-1] += np.bincount(slot, minlength=edges.size + 2)[1:edges.size]
    return counts, left


def _shifted_sums(x: np.ndarray) -> tuple[float, float, float]:
    """``(k, Σ(x-k), Σ(x-k)²)`` of ``x`` about ``k``, the median of a strided sample of some 64 of its
    values (of sorted ``x``, about its median): sums about a point inside the bulk of the batch lose no
    digits to cancellation, wherever the batch lies — about an outlier they would (1e8 among values of
    sd 1 leaves ``Σ(x-k)² - (Σ(x-k))²/n`` nothing of the variance).  A sample that falls in step with a
    pattern of the batch (a spike every ``n/64`` rows, 64 sorted shards) can still miss the bulk: when
    ``(Σ(x-k))² > n·Σ(x-k)²/4`` (the mean more than half the root mean square away from ``k``) the
    sums are taken once more about the mean they give.  Unsorted and sorted, the same values give the
    same sums whichever way the batch is counted (:meth:`NumericCounts.of`); a batch holding NaN or
    infinities gives non-finite sums (NaN without a pass when the sample meets them).

    float32 data is summed in float32 (pairwise sum; BLAS dot with many partial
    sums): relative error about 1e-5 and at worst 3e-4 on the squares — far below
    the sampling error of any variance the detectors test — at a third of the
    float64 cost.  float64 data, and float32 data whose squares overflow, in float64.

    >>> x = np.full(6400, 1000.0); x[::100] = 1e4   # every sampled value is a spike
    >>> k, s1, s2 = _shifted_sums(x)
    >>> round(s2 - s1 * s1 / x.size) == round(6400 * np.var(x))
    True
    """
    sample = x[::max(1, x.size // 64)]
    k = np.partition(sample, sample.size // 2)[sample.size // 2]
    if not math.isfinite(k):
        return float(k), math.nan, math.nan
    s1, s2 = _sums_about(x, k)
    if math.isfinite(s1) and math.isfinite(s2) and 4.0 * s1 * s1 > x.size * s2:
        k2 = x.dtype.type(float(k) + s1 / x.size)
        if math.isfinite(k2):
            k = k2
            s1, s2 = _sums_about(x, k)
    return float(k), s1, s2


def _sums_about(x: np.ndarray, k: Any) -> tuple[float, float]:
    """``(Σ(x-k), Σ(x-k)²)``: float32 data in float32, in float64 where that overflows (see :func:`_shifted_sums`)."""
    if x.dtype == np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            d = x - k
            s1, s2 = float(d.sum()), float(np.dot(d, d))
        if math.isfinite(s1) and math.isfinite(s2):
            return s1, s2
    with np.errstate(over="ignore", invalid="ignore"):  # deviations past 1e154: Σd² is past float64 (inf); NaN, ±inf: NaN
        d = np.subtract(x, float(k), dtype=np.float64)
        return float(d.sum()), float(np.dot(d, d))


@dataclass(kw_only=True)
class NumericCounts:
    """Partial counts of one numeric column on a reference grid; ``merge`` adds them.

    ``counts[0]`` holds values below the reference minimum, ``counts[-1]``
    values above its maximum; ``below_distance``/``above_distance`` are their
    summed distances from the first and last edge, ``Σ(e_0 - y)`` and
    ``Σ(y - e_last)`` (for distances beyond the reference range: kept as
    distances, not as sums of the values, so that a column at 1e15 keeps the
    digits of how far beyond it lies).  ``n_null`` are Arrow nulls,
    ``n_nan`` NaNs that were not nulls, ``n_posinf``/``n_neginf`` infinities.
    ``mean``/``m2`` are the running mean and sum of squared deviations of the
    finite values (Chan's parallel update on merge).
    """

    counts: np.ndarray
    n_null: int = 0
    n_nan: int = 0
    n_posinf: int = 0
    n_neginf: int = 0
    below_distance: float = 0.0
    above_distance: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    __getstate__ = _fields_only

    @classmethod
    def empty(cls, ref: NumericReference) -> NumericCounts:
        return cls(counts=np.zeros(ref.edges.size + 1, np.int64))

    @classmethod
    def of(cls, values: np.ndarray, ref: NumericReference, *, n_null: int = 0, cells: bool = True) -> NumericCounts:
        """Count one batch. ``values`` may hold NaN for Arrow nulls; pass their number as ``n_null``.
        ``cells=False`` sorts every batch rather than counting large ones through the reference's
        :class:`CellMap` (the same counts and sums: a caller picks whichever runs faster on its CPU).

        Against a reference of float32 values, float64 values are binned as float32 (see Precision in the
        module docstring); their sums and moments are those of the values as they are.
        """
        x = np.asarray(values)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        raw = None
        if ref.float32_exact and x.dtype == np.float64:
            raw, x = x, _as_float32(x)  # binned as float32; tails and sums from ``raw``
        dtype = x.dtype  # before float16 is counted as float32
        edges = ref.edges_for(x.dtype)
        cell_map = ref.cell_map(x.dtype) if cells and x.size >= CELLS // 2 else None
        if x.dtype.itemsize < 4:
            x = x.astype(np.float32)
        # a batch without NaN or infinities has the sums of its values as they come, whichever way it is cut
        # (rounding to float32 makes no new infinities: ``raw`` is finite where ``x`` is)
        sums = _shifted_sums(x if raw is None else raw) if x.size else None
        if sums is not None and not (math.isfinite(sums[1]) and math.isfinite(sums[2])):
            sums = None  # NaN or infinities among the values (or squares past float64): summed once sorted
        n_nan, n_posinf, n_neginf = -n_null, 0, 0  # a batch with sums holds no NaN (more nulls are refused below)
        if sums is not None and cell_map is not None:
            counts, finite = _cell_counts(x, edges, cell_map)  # ``finite``: the values sorted, the tails at its ends
            if finite.size > CELL_SHARE_DROP * x.size:  # the window is not where the reference was: sort a while
                ref.drop_cell_map(dtype)
        else:
            cut = _sorted_counts(x, edges)
            counts, finite = cut.counts, cut.finite
            n_nan, n_posinf, n_neginf = cut.n_nan - n_null, cut.n_posinf, cut.n_neginf
        if n_nan < 0:
            raise ValueError(f"n_null={n_null}: more nulls than the {n_nan + n_null} NaN in the values "
                             "(nulls are passed as NaN)")
        n_fin = finite.size
        below = above = 0.0
        with np.errstate(over="ignore"):  # tails past 1e308 in total: inf, their true magnitude
            # from the float64 edges (a value below the float32 edge rounded up lies below the float64 one)
            if ref.edges.size and counts[0]:
                tail = finite[:counts[0]] if raw is None else raw[(x < edges[0]) & np.isfinite(x)]
                below = float(np.subtract(ref.edges[0], tail, dtype=np.float64).sum())
            if ref.edges.size and counts[-1]:
                tail = finite[n_fin - counts[-1]:] if raw is None else raw[(x >= edges[-1]) & np.isfinite(x)]
                above = float(np.subtract(tail, ref.edges[-1], dtype=np.float64).sum())
        mean = m2 = 0.0
        if sums is not None:
            n_fin = x.size
        elif n_fin:
            # the rounded values hold the same finite positions: _as_float32 makes no new infinities
            sums = _shifted_sums(finite if raw is None else raw[np.isfinite(x)])
        if sums is not None:
            k, s1, s2 = sums
            mean = k + s1 / n_fin
            m2 = max(s2 - s1 * s1 / n_fin, 0.0)
        return cls(counts=counts, n_null=n_null, n_nan=n_nan, n_posinf=n_posinf, n_neginf=n_neginf,
                   below_distance=below, above_distance=above, mean=mean, m2=m2)

    @functools.cached_property
    def n_finite(self) -> int:
        """Finite values counted (cached: counts are never changed in place; ``merge`` makes new counts)."""
        return int(self.counts.sum())

    @property
    def n_missing(self) -> int:
        """Values excluded from the distribution: nulls, NaN and infinities."""
        return self.n_null + self.n_nan + self.n_posinf + self.n_neginf

    @property
    def n_total(self) -> int:
        return self.n_finite + self.n_missing

    @property
    def std(self) -> float:
        n = self.n_finite
        return float(np.sqrt(self.m2 / (n - 1))) if n > 1 else 0.0

    def merge(self, other: NumericCounts) -> NumericCounts:
        na, nb = self.n_finite, other.n_finite
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * nb / n if n else 0.0
        m2 = self.m2 + other.m2 + delta * delta * na * nb / n if n else 0.0
        return NumericCounts(counts=self.counts + other.counts, n_null=self.n_null + other.n_null,
                             n_nan=self.n_nan + other.n_nan, n_posinf=self.n_posinf + other.n_posinf,
                             n_neginf=self.n_neginf + other.n_neginf,
                             below_distance=self.below_distance + other.below_distance,
                             above_distance=self.above_distance + other.above_distance, mean=mean, m2=m2)


@dataclass(frozen=True, kw_only=True)
class CategoricalReference:
    """The reference categories of one column and their counts (most frequent first)."""

    categories: tuple[str, ...]
    counts: np.ndarray
    n_missing: int

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_counts(cls, counts: CategoricalCounts) -> CategoricalReference:
        items = sorted(counts.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(categories=tuple(k for k, _ in items),
                   counts=np.array([v for _, v in items], dtype=np.int64), n_missing=counts.n_null)


@dataclass(kw_only=True)
class CategoricalCounts:
    """Partial counts of one categorical column: ``{category: count}`` plus nulls."""

    counts: dict[str, int] = field(default_factory=dict)
    n_null: int = 0

    __getstate__ = _fields_only

    @classmethod
    def of(cls, values: np.ndarray, *, n_null: int = 0) -> CategoricalCounts:
        """Count one batch of category values (already without nulls)."""
        uniq, cnt = np.unique(np.asarray(values).astype(str), return_counts=True)
        return cls(counts=dict(zip(uniq.tolist(), cnt.tolist(), strict=True)), n_null=n_null)

    @property
    def n_total(self) -> int:
        return sum(self.counts.values()) + self.n_null

    def merge(self, other: CategoricalCounts) -> CategoricalCounts:
        out = dict(self.counts)
        for k, v in other.counts.items():
            out[k] = out.get(k, 0) + v
        return CategoricalCounts(counts=out, n_null=self.n_null + other.n_null)

    def aligned(self, ref: CategoricalReference) -> tuple[np.ndarray, int, list[str]]:
        """Counts in the reference's category order, the unseen total, and the unseen names
        (computed once per reference: do not change the arrays returned)."""
        return per_pair(self, ref, "aligned", lambda: self._aligned(ref))

    def _aligned(self, ref: CategoricalReference) -> tuple[np.ndarray, int, list[str]]:
        index = {c: i for i, c in enumerate(ref.categories)}
        out = np.zeros(len(ref.categories), np.int64)
        unseen: dict[str, int] = {}
        for k, v in self.counts.items():
            i = index.get(k)
            if i is None:
                unseen[k] = v
            else:
                out[i] = v
        return out, sum(unseen.values()), sorted(unseen, key=lambda k: (-unseen[k], k))


@dataclass(kw_only=True)
class Profile:
    """A dataset profile: one entry per column, plus row totals.

    On the reference side the entries are :class:`NumericReference` /
    :class:`CategoricalReference`; on the current side the matching counts.
    ``roles`` maps a column to its role: ``feature``, ``score`` or
    ``prediction`` (scores and predictions are drift targets as well).
    ``extras`` carries what other detector families add (labelled counts,
    group counts) under names they choose.
    """

    n_rows: int
    numeric: dict[str, Any] = field(default_factory=dict)
    categorical: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def columns_for(self, applies_to: frozenset[str]) -> list[str]:
        """Columns of the data types a detector applies to ("numeric", "categorical")."""
        cols: list[str] = []
        if "numeric" in applies_to:
            cols += list(self.numeric)
        if "categorical" in applies_to:
            cols += list(self.categorical)
        return cols

    def approx_bytes(self) -> int:
        """About how much memory the counts hold: grid arrays, categories, extras that are grid counts.

        >>> ref = NumericReference.from_values(np.arange(1000.0))
        >>> Profile(n_rows=1, numeric={"x": NumericCounts.empty(ref)}).approx_bytes() > 8 * ref.edges.size
        True
        """
        total = sum(getattr(c, "counts", np.empty(0)).nbytes for c in self.numeric.values())
        total += sum(64 * len(c.counts) for c in self.categorical.values())
        for extra in self.extras.values():
            counts = getattr(extra, "counts", None)
            total += counts.nbytes if isinstance(counts, np.ndarray) else 0
        return total

    def merge(self, other: Profile) -> Profile:
        num = {k: self.numeric[k].merge(v) if k in self.numeric else v for k, v in other.numeric.items()}
        cat = {k: self.categorical[k].merge(v) if k in self.categorical else v for k, v in other.categorical.items()}
        return Profile(n_rows=self.n_rows + other.n_rows, numeric=self.numeric | num,
                       categorical=self.categorical | cat, roles=self.roles | other.roles,
                       extras=_merge_extras(self.extras, other.extras))


def _merge_extras(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k].merge(v) if k in out else v
    return out
