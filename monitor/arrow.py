"""Arrow → NumPy without pandas.

pyarrow imports pandas on first use of ``Array.to_numpy`` (its C++ converter
is the pandas one), of ``pa.array`` and of ``pa.scalar``: 0.4 s of start-up
and about 55 MB of resident memory in a process that never uses pandas.  The
evaluator needs only fixed-width values and category labels, which these
helpers take straight from the Arrow buffers.  A test runs a check and a
daemon and asserts that pandas stays unimported.

``pyarrow.compute`` is imported on first use too (:func:`compute`): 0.1 s of
every start, and counting float and dictionary columns without nulls in
partitions wholly inside the window never calls it.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pyarrow as pa

__all__ = ["compute", "values_view", "valid_mask", "filled", "labels", "scalar"]


def compute() -> ModuleType:
    """``pyarrow.compute``, imported at its first use (see the module's docstring)."""
    import pyarrow.compute

    return pyarrow.compute


def _dtype(typ: pa.DataType) -> np.dtype:
    if pa.types.is_floating(typ):
        kind = "f"
    elif pa.types.is_unsigned_integer(typ):
        kind = "u"
    elif pa.types.is_integer(typ) or pa.types.is_temporal(typ):
        kind = "i"
    else:
        raise TypeError(f"no fixed-width NumPy view of Arrow type {typ}")
    return np.dtype(f"{kind}{typ.bit_width // 8}")


def values_view(arr: pa.Array) -> np.ndarray:
    """The value buffer of a fixed-width array (numbers; temporal types as integers) as a read-only
    NumPy view, nulls included as whatever the buffer holds there (see :func:`valid_mask`).

    >>> values_view(pa.array([1.5, 2.5, 3.5]).slice(1)).tolist()
    [2.5, 3.5]
    """
    dtype = _dtype(arr.type)
    data = arr.buffers()[1]
    if data is None or len(arr) == 0:
        return np.empty(0, dtype)
    out = np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    out.flags.writeable = False
    return out


def valid_mask(arr: pa.Array) -> np.ndarray | None:
    """``True`` where ``arr`` holds a value, from its validity bitmap; ``None`` when it has no nulls.

    >>> valid_mask(pa.array([1, None, 3])).tolist()
    [True, False, True]
    """
    if arr.null_count == 0:
        return None
    bitmap = arr.buffers()[0]
    if bitmap is None:  # the null type: no bitmap, every slot null
        return np.zeros(len(arr), bool)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)].astype(bool)


def filled(arr: pa.Array, fill: float | int) -> np.ndarray:
    """:func:`values_view` with the nulls replaced by ``fill`` (a copy only when there are nulls).

    >>> filled(pa.array([1.0, None]), float("nan")).tolist()
    [1.0, nan]
    """
    values = values_view(arr)
    valid = valid_mask(arr)
    if valid is not None:
        values = values.copy()
        values[~valid] = fill
    return values


def float_categories(arr: pa.Array) -> pa.Array:
    """A float column read as categories: NaN is missing (pandas writes a missing value of an integer
    column so, making the column float64), whole numbers are integers (``1.0`` is the category ``1``, as
    an integer column of the same codes writes it), and a column holding any other number is its text
    (Arrow's shortest form, ``0.5``).

    >>> float_categories(pa.array([1.0, float("nan"), 3.0, None])).to_pylist()
    [1, None, 3, None]
    >>> float_categories(pa.array([0.5, float("nan"), 2.0])).to_pylist()
    ['0.5', None, '2']
    """
    x = filled(arr, np.nan).astype(np.float64, copy=False)
    missing = np.isnan(x)
    v = x[~missing]
    with np.errstate(invalid="ignore"):
        whole = bool(np.all(np.isfinite(v)) and np.all(v == np.trunc(v)) and np.all(np.abs(v) < 2.0 ** 63))
    if whole:
        ints = np.zeros(x.size, np.int64)
        ints[~missing] = v.astype(np.int64)
        return pa.array(ints, mask=missing)
    return compute().cast(pa.array(x, mask=missing), pa.string())


def category_values(arr: pa.Array) -> pa.Array:
    """``arr`` as the values categories are read from: floats as :func:`float_categories` reads them
    (a dictionary of floats decoded first) and booleans as 1 and 0, as numeric columns read them (a class
    written as 0/1 in one file and as booleans in another is the same class); any other array as it is.

    >>> category_values(pa.array([True, None, False])).to_pylist()
    [1, None, 0]
    """
    if pa.types.is_dictionary(arr.type) and (pa.types.is_floating(arr.dictionary.type)
                                             or pa.types.is_boolean(arr.dictionary.type)):
        arr = arr.dictionary_decode()
    if pa.types.is_floating(arr.type):
        return float_categories(arr)
    if pa.types.is_boolean(arr.type):
        return compute().cast(arr, pa.int8())
    return arr


def labels(arr: pa.Array) -> np.ndarray:
    """An object array of the values as ``str`` (``None`` for nulls), through a dictionary encoding:
    one Python string per distinct value, of :func:`category_values`.

    >>> labels(pa.array([3, None, 3])).tolist()
    ['3', None, '3']
    >>> labels(pa.array([3.0, float("nan")])).tolist()
    ['3', None]
    >>> labels(pa.array([True, None])).tolist()
    ['1', None]
    """
    arr = category_values(arr)
    if not pa.types.is_dictionary(arr.type):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = compute().cast(arr, pa.string())
        arr = compute().dictionary_encode(arr)
    dictionary = arr.dictionary
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        dictionary = compute().cast(dictionary, pa.string())
    table = np.empty(len(dictionary) + 1, dtype=object)  # the last slot, None, for nulls
    table[:-1] = dictionary.to_pylist()
    codes = values_view(arr.indices).astype(np.intp)
    valid = valid_mask(arr.indices)
    if valid is not None:
        codes[~valid] = len(dictionary)
    return table[codes]


def scalar(value: int, typ: pa.DataType) -> pa.Scalar:
    """An Arrow scalar of an integer-backed type (integers, timestamps) from its integer value.

    >>> scalar(5, pa.timestamp("s", tz="UTC")).as_py().isoformat()
    '1970-01-01T00:00:05+00:00'
    """
    buf = pa.py_buffer(np.array([value], dtype=_dtype(typ)))
    return pa.Array.from_buffers(typ, 1, [None, buf])[0]
