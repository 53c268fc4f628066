"""Where the data comes from: Parquet sinks on a local disk or an object store."""

from __future__ import annotations

from .parquet import ColumnKind, ParquetSink, label_lookup, make_filesystem

__all__ = ["ColumnKind", "ParquetSink", "label_lookup", "make_filesystem"]
