"""One registry for every concept that users and plugins extend by adding one object: attribution
methods (:mod:`mtprune.methods`), repair solvers (:mod:`mtprune.solvers`) and budget measures
(:mod:`mtprune.measures`). The CLI's choices and help, the configs' validation, the dashboard's
lists and the docs read a registry; nothing else names the members.

A package of members imports each of its modules with :func:`import_members`, so a new member is
one new module; your own live in a module named in ``MTPRUNE_PLUGINS`` (:mod:`mtprune.plugins`).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Iterable, TypeVar

from mtprune import plugins
from mtprune.errors import MtpruneError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one class (each with a ``name``), in registration order."""

    def __init__(self, what: str, cls: type, plural: str | None = None):
        self.what, self.cls, self.plural = what, cls, plural or f"{what}s"
        self._items: dict[str, T] = {}

    def register(self, item: T, *, replace: bool = False) -> T:
        """Make ``item`` known to every verb and page; a second one of the same name is an error
        unless ``replace``."""
        if not isinstance(item, self.cls):
            raise TypeError(f"a {self.what} is a {self.cls.__name__}, not {type(item).__name__}")
        name = item.name
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"a {self.what} named {name!r} is registered already")
        self._items[name] = item
        return item

    def all(self) -> dict[str, T]:
        """Every registered member (plugins included), in registration order."""
        plugins.load()
        return dict(self._items)

    def names(self) -> list[str]:
        return list(self.all())

    def get(self, name) -> T:
        """The member called ``name``; one clear line when there is none."""
        item = self.all().get(name)
        if item is None:
            raise MtpruneError(f"unknown {self.what} {name!r}; {self.plural}: {', '.join(self.names())}")
        return item

    def help(self) -> str:
        """``name: help; ...``: the CLI's list of the members."""
        return "; ".join(f"{m.name}: {m.help}" for m in self.all().values())


def import_members(package: str, path: Iterable[str], first: tuple[str, ...] = (),
                   helpers: tuple[str, ...] = ("base",)) -> None:
    """Import every module of ``package`` (each registers its member): ``first`` in that order (the
    lists of the CLI and the dashboard keep it), then any other module by name; ``helpers`` are not
    members."""
    others = sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in first + helpers)
    for name in (*first, *others):
        importlib.import_module(f"{package}.{name}")
