"""A run history: every evaluation the dashboard makes of a model (how the mask was made, the metric
and its interval, the verdict against the dense model), kept on disk beside the score cache, one
CSV per model, so that it survives slider moves, reloads and restarts, and two sessions writing at
once both keep their rows.

A row's ``run`` is the id of the whole evaluation it belongs to, kept by :mod:`mtprune.runs`
(per-row predictions, the mask, the repair...): the dashboard reopens it from there.

Appends take the file's lock (:class:`mtprune.cache.DiskCache`'s ``fcntl`` lock), read the table,
add the row and write the whole table atomically. A file that does not parse is moved aside (its
name gains ``.corrupt-<time>``) and a new history starts; the move is reported, nothing is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mtprune import assets
from mtprune.io import atomic_write_text

COLUMNS = ["time", "task", "split", "rows", "model", "method", "how", "sparsity", "repair", "metric", "value", "low", "high",
           "dense", "verdict", "p_value", "params", "flops_kept", "session",
           "run"]  # the run's id (mtprune.runs): the whole evaluation, reopened from there


@dataclass
class RunHistory:
    path: Path
    notice: str | None = None  # said once: the old file was corrupt and was moved aside

    @classmethod
    def for_model(cls, fingerprint: str, root: Path | None = None) -> "RunHistory":
        root = Path(root) if root is not None else assets.cache_dir()
        return cls(root / "history" / f"{fingerprint[:16]}.csv")

    def _lock(self):
        from mtprune.cache import DiskCache

        cache = DiskCache(self.path.parent.parent, namespace=self.path.parent.name, suffix=".csv")
        return cache.lock(self.path.stem)

    def _read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=COLUMNS)
        try:
            df = pd.read_csv(self.path, dtype={"run": str})  # an id of digits only stays text
            missing = [c for c in ("time", "task", "metric", "value") if c not in df.columns]
            if missing:
                raise ValueError(f"no column {missing[0]}")
            return df
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            self.path.rename(aside)
            self.notice = (f"the run history {self.path} did not read ({type(exc).__name__}: {exc}); it was moved "
                           f"to {aside.name} and a new history started")
            return pd.DataFrame(columns=COLUMNS)

    def load(self) -> pd.DataFrame:
        """Every recorded run, oldest first."""
        with self._lock():
            return self._read()

    def append(self, record: dict) -> pd.DataFrame:
        """Add one run (missing columns stay empty); returns the whole history."""
        rec = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
        with self._lock():
            df = self._read()
            df = pd.concat([df, pd.DataFrame([rec])], ignore_index=True) if len(df) else pd.DataFrame([rec])
            cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
            df = df[cols]
            atomic_write_text(self.path, df.to_csv(index=False))
        return df

    def csv_bytes(self) -> bytes:
        return self.load().to_csv(index=False).encode()
