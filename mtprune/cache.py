"""The disk cache: one file per result, keyed by everything the result depends on.

* **Keys** are the SHA-256 of a canonical JSON of the key's parts (model fingerprint, task, split,
  method and its settings, the library's version...); :meth:`DiskCache.key` makes them.
* **Writes are atomic**: a result is written to a temporary file beside its final name, flushed
  to disk, then renamed over it (``os.replace``), so a reader sees the old file, the new file, or
  none, never half of one.
* **Corruption is detected**: the reader given to :meth:`DiskCache.load` must raise on a bad file
  (scores files carry a checksum of their arrays); a bad entry is deleted and counts as a miss.
* **One computation per key across processes**: :meth:`DiskCache.get_or_compute` takes an
  exclusive ``fcntl.flock`` on ``<key>.lock`` before computing, and looks again once it holds it;
  a second process asking for the same key waits, then finds the first one's result.

The root is ``MTPRUNE_CACHE`` or ``cache/`` in the checkout (:func:`mtprune.assets.cache_dir`), one
folder per namespace (``scores/``...). Nothing here pickles.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.io import atomic_write, stable_hash

V = TypeVar("V")

try:  # POSIX; elsewhere the cache still works, without the cross-process guarantee
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def make_key(parts: dict) -> str:
    """A 32-hex-digit key from a dict of everything a result depends on."""
    return stable_hash(parts, 32)


class DiskCache:
    """One folder of keyed result files with per-key locks.

    >>> cache = DiskCache(namespace="scores")
    >>> value, hit, path = cache.get_or_compute(key, compute, reader=load_fn, writer=save_fn)
    """

    def __init__(self, root: str | Path | None = None, namespace: str = "scores", suffix: str = ".safetensors"):
        base = Path(root).expanduser() if root is not None else assets.cache_dir()
        self.base = base
        self.root = base / namespace if namespace else base
        self.suffix = suffix
        self.last_corrupt: Path | None = None  # the last entry found corrupt and removed

    # -- places ---------------------------------------------------------------------------------
    key = staticmethod(make_key)

    def path(self, key: str) -> Path:
        return self.root / f"{key}{self.suffix}"

    def lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def ensure_writable(self) -> Path:
        """Create the folder when needed and prove a file can be written there; else MtpruneError."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.root.is_dir():
                raise NotADirectoryError(str(self.root))
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=str(self.root))
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise MtpruneError(
                f"the cache directory {self.base} is not writable ({why}): set MTPRUNE_CACHE "
                "or --cache-dir to a folder you can write"
            ) from None
        return self.root

    # -- locking ----------------------------------------------------------------------------------
    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``key`` (blocks while another process holds it)."""
        self.ensure_writable()
        if fcntl is None:  # pragma: no cover
            yield
            return
        fh = open(self.lock_path(key), "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield
        finally:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            finally:
                fh.close()

    # -- entries ----------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str, reader: Callable[[Path], V]) -> V | None:
        """The entry read by ``reader``, or None when absent or corrupt (a corrupt one is removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return reader(path)
        except Exception:
            self.last_corrupt = path
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def store(self, key: str, writer: Callable[[Path], Any]) -> Path:
        """Write an entry atomically with ``writer(tmp_path)``."""
        self.ensure_writable()
        return atomic_write(self.path(key), writer)

    def remove(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def get_or_compute(self, key: str, compute: Callable[[], V], reader: Callable[[Path], V],
                       writer: Callable[[V, Path], Any]) -> tuple[V, bool, Path]:
        """``(value, cache_hit, path)``: the stored value, or ``compute()``'s, stored once.

        A hit needs no lock; a miss takes the key's lock, looks again (another process may have
        finished meanwhile), computes, and writes atomically before releasing the lock.
        """
        self.ensure_writable()
        value = self.load(key, reader)
        if value is not None:
            return value, True, self.path(key)
        with self.lock(key):
            value = self.load(key, reader)
            if value is not None:
                return value, True, self.path(key)
            value = compute()
            path = self.store(key, lambda tmp: writer(value, tmp))
            return value, False, path

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(f"*{self.suffix}") if not p.name.startswith("."))

    def clear(self) -> int:
        n = 0
        for p in self.entries():
            p.unlink(missing_ok=True)
            n += 1
        return n
