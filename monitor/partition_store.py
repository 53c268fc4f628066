"""Partition profiles kept on disk, so a restarted daemon does not read its whole window again.

The evaluator keeps the profile of every hive partition wholly inside its
window (see :class:`monitor.evaluate.Evaluator`).  With a store, the kept set
is also written to ``STATE_DIR/partitions/<model>/``, one file per partition,
and read back on the first run after a start.  A file holds the partition's
key — its span, the reference key and the (path, size, modification time) of
every file in it — so a stored profile is used only for exactly the data and
reference it was counted from, like one kept in memory.

Everything here is a cache: a file that cannot be read or written is logged
and left out, and the run reads that partition instead.  A sync that fails
logs one line naming how many of how many profiles it could not store, and
when the disk failed (full, read-only) calls ``on_error`` once.  Writes are atomic
(a temporary file renamed into place), so a crash never leaves a torn file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from detectors.profile import Profile

__all__ = ["PartitionStore"]

log = logging.getLogger("atalaia.partitions")

SUFFIX = ".profile"


class PartitionStore:
    """Partition profiles of one model in one directory, keyed as the evaluator keys them.

    >>> import tempfile
    >>> store = PartitionStore(Path(tempfile.mkdtemp()) / "m", version=1)
    >>> store.sync({("span", "ref", ()): Profile(n_rows=3)})
    >>> {k: p.n_rows for k, p in PartitionStore(store.directory, version=1).load().items()}
    {('span', 'ref', ()): 3}
    >>> PartitionStore(store.directory, version=2).load()  # another profile layout: not used
    {}
    """

    def __init__(self, directory: Path, *, version: int | str, on_error: Callable[[], None] | None = None) -> None:
        self.directory = directory
        #: the profile layout (and code) version; files of another are ignored and removed
        self.version = version
        #: called once per :meth:`sync` the disk failed (a profile not written or removed: full, read-only);
        #: not for a profile that does not pickle (a plugin's state), which is only logged
        self.on_error = on_error
        #: names of the files this store knows to hold which key (written or loaded by it)
        self._names: dict[str, Any] = {}

    @staticmethod
    def name(key: Any) -> str:
        """The file name of ``key``: a digest of its JSON form (datetimes in ISO form)."""
        doc = json.dumps(key, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))
        return hashlib.sha256(doc.encode()).hexdigest()[:40] + SUFFIX

    def _listed(self, pattern: str) -> list[Path]:
        try:
            return sorted(self.directory.glob(pattern))
        except OSError as exc:
            log.warning("cannot list stored partition profiles in %s: %s", self.directory, exc)
            return []

    def load(self) -> dict[Any, Profile]:
        """Every readable profile of this layout version; unreadable or outdated files are removed,
        and so are temporary files a crash left behind."""
        for path in self._listed(f".tmp-*{SUFFIX}.part"):
            self._remove(path)
        out: dict[Any, Profile] = {}
        for path in self._listed(f"*{SUFFIX}"):
            try:
                with path.open("rb") as fh:
                    doc = pickle.load(fh)
                if not (isinstance(doc, dict) and doc.get("version") == self.version
                        and isinstance(doc.get("profile"), Profile) and self.name(doc.get("key")) == path.name):
                    raise ValueError("another profile layout or a foreign file")
            except FileNotFoundError:  # removed meanwhile by another run
                continue
            except Exception as exc:  # a damaged file is a cache miss, never fatal
                log.warning("ignoring stored partition profile %s: %s", path, exc)
                self._remove(path)
                continue
            out[doc["key"]] = doc["profile"]
            self._names[path.name] = doc["key"]
        return out

    def clear(self) -> None:
        """Remove every stored profile (when the evaluator keeps none, as with labels joined)."""
        for path in self._listed(f"*{SUFFIX}"):
            self._remove(path)
        self._names.clear()

    def sync(self, kept: Mapping[Any, Profile]) -> None:
        """Make the directory hold exactly ``kept``: write the new ones, remove the dropped ones.

        Failures are logged in one line per call, not one per file (a full disk fails them all)."""
        wanted = {self.name(k): k for k in kept}
        failed_removals = 0
        for name in [n for n in self._names if n not in wanted]:
            if not self._remove(self.directory / name, quiet=True):
                failed_removals += 1
            del self._names[name]
        new = {n: k for n, k in wanted.items() if n not in self._names}
        failed: list[str] = []
        first: BaseException | None = None
        disk = False  # a failure of the disk (full, read-only), not of a profile that does not pickle
        if new:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                failed, first, disk = list(new), exc, True
            else:
                for name, key in new.items():
                    try:
                        self._write(self.directory / name, {"version": self.version, "key": key,
                                                            "profile": kept[key]})
                    except Exception as exc:  # a full disk, or a plugin's partial state that does not pickle
                        failed.append(name)
                        first = first or exc
                        disk |= isinstance(exc, OSError)
                        continue
                    self._names[name] = key
        if failed:
            log.warning("cannot store partition profiles in %s: %d of %d failed (a run after a restart reads those "
                        "partitions again): %s", self.directory, len(failed), len(new), first)
        if failed_removals:
            log.warning("cannot remove %d stored partition profiles in %s", failed_removals, self.directory)
        if (disk or failed_removals) and self.on_error is not None:
            self.on_error()

    @staticmethod
    def _write(path: Path, doc: dict[str, Any]) -> None:
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}{SUFFIX}.part")  # created with the umask's mode
        try:
            with tmp.open("xb") as fh:
                pickle.dump(doc, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _remove(path: Path, *, quiet: bool = False) -> bool:
        """Remove ``path``; ``False`` when it cannot be (logged unless ``quiet``)."""
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            if not quiet:
                log.warning("cannot remove stored partition profile %s: %s", path, exc)
            return False
        return True
