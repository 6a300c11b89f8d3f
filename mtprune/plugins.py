"""Your own methods and model formats, loaded by name: the modules listed in ``MTPRUNE_PLUGINS``
(comma-separated, importable from ``sys.path``, e.g. ``MTPRUNE_PLUGINS=my_methods``) and those
installed packages declare under the ``mtprune.plugins`` entry-point group. A plugin module calls
:func:`mtprune.methods.register_method` (or :func:`mtprune.formats.register_format`) when it is
imported. The registries load plugins once, the first time they are read, so every verb of the
CLI and the dashboard sees them.

Plugins are code you chose to run; nothing is loaded from a model directory or an upload.
"""

from __future__ import annotations

import importlib
import os

from mtprune.errors import MtpruneError

ENV = "MTPRUNE_PLUGINS"
ENTRY_POINT_GROUP = "mtprune.plugins"
_loaded: set[str] = set()


def plugin_names() -> list[str]:
    return [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]


def load() -> list[str]:
    """Import every plugin not imported yet; returns the names imported now."""
    from importlib.metadata import entry_points

    done = []
    for name in plugin_names():
        if name in _loaded:
            continue
        _loaded.add(name)
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise MtpruneError(f"could not import the plugin {name!r} named in {ENV}: {type(exc).__name__}: {exc}") from None
        done.append(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {ep.name}"
        if key in _loaded:
            continue
        _loaded.add(key)
        try:
            ep.load()
        except Exception as exc:
            raise MtpruneError(f"could not load the mtprune plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}") from None
        done.append(ep.value)
    return done
