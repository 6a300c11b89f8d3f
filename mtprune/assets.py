"""Where data and models live: one root, ``MTPRUNE_HOME``, holding ``data/`` and ``models/``.

It defaults to ``../shared`` (beside the current directory or beside the package's checkout) when
that exists. ``--model default`` means ``models/minilm-l6-mt6`` under the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtprune.errors import MtpruneError

DEFAULT_MODEL = "minilm-l6-mt6"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path | None:
    """The asset root, or None when there is none (then only the hub can serve data and models)."""
    env = os.environ.get("MTPRUNE_HOME")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise MtpruneError(f"MTPRUNE_HOME={env} is not a directory")
        return path.resolve()
    for candidate in (Path.cwd().parent / "shared", _REPO_ROOT.parent / "shared"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def data_dir() -> Path | None:
    root = home()
    return root / "data" if root is not None and (root / "data").is_dir() else None


def models_dir() -> Path | None:
    root = home()
    return root / "models" if root is not None and (root / "models").is_dir() else None


def cache_dir() -> Path:
    """The disk cache for scores and sweeps: ``MTPRUNE_CACHE`` or ``cache/`` in the checkout."""
    env = os.environ.get("MTPRUNE_CACHE")
    return Path(env).expanduser() if env else _REPO_ROOT / "cache"


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not name.startswith((".", "/", "~"))
        and all(c.isalnum() or c in "-_." for c in "".join(parts))
    )


def resolve_model(name: str) -> str:
    """Turn a model argument into a local directory path, or a hub id when it looks like one.

    ``default`` and the names of directories under ``models/`` resolve there; an existing
    directory is returned as is; ``owner/name`` that is no local path is taken as a hub id.
    """
    if not name:
        raise MtpruneError("no model given")
    mdir = models_dir()
    if name == "default":
        if mdir is None or not (mdir / DEFAULT_MODEL).is_dir():
            raise MtpruneError(
                "the default model is not here: set MTPRUNE_HOME to the folder holding "
                f"models/{DEFAULT_MODEL}"
            )
        return str(mdir / DEFAULT_MODEL)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MtpruneError(f"{name} is a file, not a model directory")
        return str(path.resolve())
    if mdir is not None and (mdir / name).is_dir():
        return str(mdir / name)
    if looks_like_hub_id(name):
        return name
    raise MtpruneError(f"unknown model {name!r}: not a directory, not under {mdir}, not a hub id")


def model_dirs() -> list[tuple[str, Path]]:
    """``(name, path)`` of every directory with a ``config.json`` under ``models/`` (the default
    model named ``default``); what format each holds is :func:`mtprune.checkpoints.list_models`'s."""
    mdir = models_dir()
    if mdir is None:
        return []
    return [("default" if sub.name == DEFAULT_MODEL else sub.name, sub)
            for sub in sorted(p for p in mdir.iterdir() if p.is_dir()) if (sub / "config.json").is_file()]
