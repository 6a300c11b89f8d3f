"""Files that appear whole or not at all, and hashes that do not change between runs.

* :func:`atomic_write` calls ``write(tmp)`` on a temporary file beside the target, flushes it to
  disk and renames it over the target: a reader sees the old file, the new one, or none, never
  half of one. :func:`atomic_write_bytes` and :func:`atomic_write_text` are its common cases.
* :func:`publish_dir` moves a finished temporary directory onto its final name with renames; the
  old directory, when replaced, is moved aside first and removed only after the new one is in
  place. :func:`staging_dir` makes that temporary directory beside the target.
* :func:`stable_hash` is the SHA-256 of a canonical JSON text (sorted keys, no spaces): the cache
  keys of scores, the keys of result rows and the digests of masks all come from it.

Everything here is used by the cache, masks, result tables, checkpoints and training alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mtprune.errors import MtpruneError


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: equal objects, equal texts."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 32) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path`` (same folder, created
    when missing). On any error the temporary file goes and ``path`` is left as it was. The file
    gets the permissions of a plain ``open`` under the user's umask."""
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(parent))
    except OSError as exc:
        raise MtpruneError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for reading
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# directories


@contextmanager
def staging_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden directory beside ``out`` to build a result in; removed when the block ends
    (after :func:`publish_dir` has moved it, nothing is left to remove)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent)))
    except OSError as exc:
        raise MtpruneError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _plain_permissions(tmp: Path) -> None:
    """The permissions of a plain mkdir and open under the user's umask (mkdtemp makes 0700)."""
    mask = _umask()
    tmp.chmod(0o777 & ~mask)
    for f in tmp.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~mask)


def publish_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished directory ``tmp`` to ``out`` by renames (same filesystem).

    An existing ``out`` is moved aside first and deleted only once the new one is in place; if the
    final rename fails, the old one is put back. Callers decide beforehand whether replacing
    ``out`` is allowed.
    """
    tmp, out = Path(tmp), Path(out)
    _plain_permissions(tmp)
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=str(out.parent)))
            old.rmdir()
            out.rename(old)
        else:
            out.rmdir()
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
    return out


def zip_directory(path: str | os.PathLike, folder: str) -> bytes:
    """The bytes of a zip of every file under ``path``, stored under ``folder/``."""
    import io as _io
    import zipfile

    root = Path(path)
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder}/{f.relative_to(root)}")
    return buf.getvalue()
