"""``--examples auto``: attribute on more examples until the scores are reliable enough.

The draw doubles, from ``FIRST`` examples, until every chosen group's reliability (the expected
Spearman correlation with an independent draw of as many examples: :mod:`mtprune.reliability`)
reaches the target, or the cap (``--max-examples``, or the split's labelled rows) is reached. Each
draw extends the cached draw of half as many (:func:`mtprune.attribution.half_of`), so asking later
for a higher target or a larger cap reads only the examples not read yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mtprune.errors import MtpruneError

FIRST = 64  # the first draw, and the smallest cap
DEFAULT_TARGET = 0.9
DEFAULT_CAP = 4096


def check_auto(target: float, cap: int) -> None:
    """One clear line for a target outside (0, 1) or a cap below one draw."""
    try:
        t = float(target)
    except (TypeError, ValueError):
        raise MtpruneError(f"--reliability is a number in (0, 1), not {target!r}") from None
    if not 0.0 < t < 1.0:
        raise MtpruneError(f"--reliability is a number in (0, 1), not {target!r}")
    if not isinstance(cap, int) or cap < FIRST:
        raise MtpruneError(f"--max-examples must be at least {FIRST} (the first draw), not {cap}")


@dataclass(frozen=True)
class AutoExamples:
    """How many examples ``--examples auto`` chose and why it stopped: ``target`` (every group
    reached it), ``cap`` (``--max-examples``), ``split`` (the split has no more labelled rows), or
    ``not stochastic`` (a method that reads no examples)."""

    examples: int
    stop: str
    reliability: dict
    target: float
    cap: int

    @property
    def reached(self) -> bool:
        return self.stop in ("target", "not stochastic")

    def describe(self) -> str:
        """``ffn 0.93, heads 0.88 at 4,096 examples: the cap; heads' ranks stay uncertain``."""
        if self.stop == "not stochastic":
            return "this method reads no examples: another draw gives the same scores, so there is nothing to add"
        from mtprune.reliability import short_names

        name = short_names(self.reliability)
        parts = ", ".join(f"{name[g]} {v:.2f}" for g, v in self.reliability.items())
        why = {"target": f"every kind reached {self.target:g}", "cap": "the cap (--max-examples)",
               "split": "all the split's labelled rows"}[self.stop]
        text = f"{parts} at {self.examples:,} examples: {why}"
        low = [name[g] for g, v in self.reliability.items() if not v >= self.target]
        if low and self.stop != "target":
            text += f"; {', '.join(low)}' ranks stay uncertain"
        return text

    def to_dict(self) -> dict:
        return {"examples": self.examples, "stop": self.stop, "target": self.target, "cap": self.cap,
                "reliability": {g: round(v, 4) for g, v in self.reliability.items()}}


def attribute_auto(adapter, spec, target: float = DEFAULT_TARGET, cap: int = DEFAULT_CAP, *, progress=None,
                   batch_size: int = 32, cache_dir=None, log=None):
    """``(scores, cache_hit, path, AutoExamples)``: the scores of the smallest doubling draw whose
    every group reaches ``target`` reliability, or of the cap's draw."""
    from mtprune.attribution import attribute_cached

    def fetch(s):
        return attribute_cached(adapter, s, progress=progress, batch_size=batch_size, cache_dir=cache_dir)

    (scores, hit, path), auto = _walk(spec, target, cap, fetch, log)
    return scores, hit, path, auto


def lookup_auto(adapter, spec, target: float = DEFAULT_TARGET, cap: int = DEFAULT_CAP, *, cache_dir=None):
    """``(scores, path, AutoExamples)`` when every draw :func:`attribute_auto` would read is in the
    disk cache, else None; never computes, never writes (a page shows cached scores at once)."""
    from mtprune.attribution import lookup_cached

    found = _walk(spec, target, cap, lambda s: lookup_cached(adapter, s, cache_dir=cache_dir))
    if found is None:
        return None
    (scores, path), auto = found
    return scores, path, auto


def _walk(spec, target: float, cap: int, fetch, log=None):
    """``(fetch's answer for the chosen draw, AutoExamples)``; None as soon as ``fetch`` answers None.
    ``fetch(spec)`` returns a tuple whose first item is the scores."""
    from mtprune.attribution import labelled_rows

    check_auto(target, cap)
    if not spec.info.needs_data:
        got = fetch(spec)
        return None if got is None else (got, AutoExamples(0, "not stochastic", {}, float(target), cap))
    limit = min(cap, labelled_rows(spec))
    n = min(FIRST, limit)
    while True:
        got = fetch(replace(spec, examples=n))
        if got is None:
            return None
        rel = {g: r.spearman for g, r in got[0].reliability().items() if r.spearman == r.spearman}  # not NaN
        if log:
            log(f"  {n:,} examples: " + ", ".join(f"{g} {v:.3f}" for g, v in rel.items()))
        if rel and all(v >= target for v in rel.values()):
            stop = "target"
        elif n >= limit:
            stop = "cap" if limit == cap else "split"
        else:
            n = min(2 * n, limit)
            continue
        return got, AutoExamples(n, stop, rel, float(target), cap)
