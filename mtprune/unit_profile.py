"""One unit's page: everything known about ``encoder.2.ffn.1265``.

* **Its address**: :func:`parse_unit_id` reads ``encoder.2.ffn.1265`` (also ``encoder.2.ffn[1265]``,
  as :class:`mtprune.probe.UnitRef` prints it, and ``encoder.ffn:2:1265``, the heatmaps' address);
  :func:`check_unit` checks it against a model and says which units the model has when it has no
  such unit; :func:`unit_id` writes it.
* **Its standing in every task** (:func:`standings`): from each task's attribution scores, its
  score with a 95% interval (``1.96`` standard errors of the fold sums), its rank in its layer with
  a 95% interval (:func:`mtprune.reliability.rank_intervals`, the seed :meth:`Scores.to_frame`
  uses), its percentile and its layer's reliability; ``not computed`` for a task without scores
  (:func:`cached_scores_by_task` only looks in the disk cache, never computes).
* **Where it fires** (:func:`unit_firing`): the whole split streamed in batches with a hook on the
  unit's site (the forward pass stops there: the layers above are not run), the ``k`` rows of the
  largest peak activation (in magnitude; a head's: the norm of its output), and per word (word
  pieces joined, :func:`mtprune.text.join_pieces`) its mean activation with a 95% interval and
  its count, and how often each word holds a row's peak. Kept in the disk cache (namespace
  ``units``) by model fingerprint, task, split (its data file's identity), unit and ``k``.
* **Without it** (:func:`removal_effect`): every row's P(gold) with the unit and with it alone
  switched off (:func:`mtprune.probe.ablate_unit`), the mean change with a 95% t-interval
  (``scipy.stats.ttest_1samp``) over ``n`` rows; kept in the disk cache too.
* **The masks that keep it** (:func:`masks_keeping`): masks given by the caller and those of the
  model's saved runs (:func:`run_masks`, read from :mod:`mtprune.runs` files), one row per
  distinct mask.

Nothing here imports streamlit.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mtprune.errors import MtpruneError
from mtprune.probe import UnitRef
from mtprune.tasks import TaskSpec, get_task
from mtprune.units import KINDS, canonical_kinds

FORMAT_VERSION = 1  # bump when what is cached changes meaning
NAMESPACE = "units"  # the disk cache's folder
TOP_ROWS = 8  # rows kept where the unit fires most
TOP_WORDS = 20  # words listed
MIN_COUNT = 3  # occurrences a word needs before its mean activation is listed
LEVEL = 0.95
CHUNK = 512  # rows read from the split at a time (ordered by length inside)

_KIND = "|".join(sorted({*KINDS, "groups"}))
_FORMS = (
    re.compile(rf"^(?P<stack>encoder|decoder)\.(?P<layer>\d+)\.(?P<kind>{_KIND})\.(?P<unit>\d+)$"),
    re.compile(rf"^(?P<stack>encoder|decoder)\.(?P<layer>\d+)\.(?P<kind>{_KIND})\[(?P<unit>\d+)\]$"),
    re.compile(rf"^(?P<stack>encoder|decoder)\.(?P<kind>{_KIND}):(?P<layer>\d+):(?P<unit>\d+)$"),
)


# ----------------------------------------------------------------------------------------------
# the address


def unit_id(ref: UnitRef) -> str:
    """``encoder.2.ffn.1265``: a unit's address."""
    return f"{ref.site}.{ref.unit}"


def parse_unit_id(text) -> UnitRef:
    """A :class:`~mtprune.probe.UnitRef` from ``encoder.2.ffn.1265`` (or ``encoder.2.ffn[1265]``,
    ``encoder.ffn:2:1265``); one line saying how an id is written otherwise."""
    s = re.sub(r"\s+", "", str(text or "")).lower()
    for form in _FORMS:
        m = form.match(s)
        if m:
            kind = canonical_kinds(m["kind"])
            return UnitRef(f"{m['stack']}.{kind}", int(m["layer"]), int(m["unit"]))
    shown = str(text or "").strip()[:60]
    raise MtpruneError(f"{shown!r} is not a unit id: write stack.layer.kind.unit, as in encoder.2.ffn.1265 "
                       f"(kinds: {', '.join(KINDS)})" if shown else
                       "type a unit id: stack.layer.kind.unit, as in encoder.2.ffn.1265")


def _span(values: Sequence[int]) -> str:
    """``0-5`` for consecutive values, ``0, 2, 3`` otherwise, ``4`` for one."""
    v = sorted(values)
    if len(v) == 1:
        return str(v[0])
    return f"{v[0]}-{v[-1]}" if v == list(range(v[0], v[-1] + 1)) else ", ".join(map(str, v))


def unit_ranges(adapter) -> str:
    """The model's units in address form: ``encoder.0-5.ffn.0-1535, encoder.0-5.heads.0-11``
    (layers of equal size together)."""
    from mtprune.formats.base import prunable

    spans: dict[tuple[str, str, int], list[int]] = {}
    for s in prunable(adapter).unit_sites():
        if s.n_units:
            spans.setdefault((s.stack, s.kind, s.n_units), []).append(s.layer)
    return ", ".join(f"{stack}.{_span(layers)}.{kind}.0-{n - 1}" for (stack, kind, n), layers in spans.items())


def check_unit(adapter, unit) -> tuple[UnitRef, object]:
    """``(UnitRef, UnitSite)`` of a unit id (text or UnitRef) on this model; one line listing the
    units the model has when it has no such unit."""
    from mtprune.formats.base import prunable

    ref = unit if isinstance(unit, UnitRef) else parse_unit_id(unit)
    site = next((s for s in prunable(adapter).unit_sites() if s.name == ref.site), None)
    if site is None or not 0 <= ref.unit < site.n_units:
        where = (f"{ref.site} has units 0-{site.n_units - 1}" if site is not None and site.n_units
                 else f"it has no site {ref.site}")
        raise MtpruneError(f"this model has no unit {unit_id(ref)} ({where}); its units: {unit_ranges(adapter)}")
    return ref, site


# ----------------------------------------------------------------------------------------------
# its standing in every task


@dataclass(frozen=True)
class Standing:
    """One unit in one task's scores; ``status`` ``scored``, ``not computed`` (no scores), or
    ``not scored`` (scores without the unit's kind)."""

    task: str
    status: str
    score: float | None = None
    se: float | None = None  # None: no fold sums, or a method that reads no examples
    rank: int | None = None  # in its layer, 1 = most needed
    rank_low: int | None = None
    rank_high: int | None = None
    n_units: int = 0
    examples: int | None = None
    method: str = ""
    layer_reliability: float | None = None

    def __post_init__(self):
        if self.status not in ("scored", "not computed", "not scored"):
            raise ValueError(f"unknown status {self.status!r}")
        if self.status == "scored" and (self.score is None or self.rank is None or self.n_units < 1):
            raise ValueError("a scored standing needs its score, rank and layer size")

    @property
    def percentile(self) -> float | None:
        """100 = the layer's most needed unit for the task, 0 = its least."""
        if self.rank is None:
            return None
        return 100.0 * (self.n_units - self.rank) / max(self.n_units - 1, 1)

    def percentile_interval(self) -> tuple[float, float] | None:
        if self.rank_low is None:
            return None
        to = lambda r: 100.0 * (self.n_units - r) / max(self.n_units - 1, 1)  # noqa: E731
        return to(self.rank_high), to(self.rank_low)

    def score_interval(self) -> tuple[float, float] | None:
        if self.se is None or self.score is None:
            return None
        return self.score - 1.96 * self.se, self.score + 1.96 * self.se

    def to_dict(self) -> dict:
        return {**asdict(self), "percentile": self.percentile}


def _rank_in_layer(row: np.ndarray, unit: int) -> int:
    """As :func:`mtprune.plots.layer_ranks`: 1 + the units scored higher (ties: the lower index first)."""
    s = row[unit]
    return int(1 + np.sum(row > s) + np.sum(row[:unit] == s))


def standing(scores, ref: UnitRef, task: str | None = None) -> Standing:
    """The unit's standing in ``scores`` (None: ``not computed``)."""
    from mtprune.reliability import rank_intervals

    task = task or (scores.spec.task if scores is not None else "")
    if scores is None:
        return Standing(task, "not computed")
    g = ref.group
    if g not in scores.arrays or ref.layer >= len(scores.n_units[g]) or ref.unit >= scores.n_units[g][ref.layer]:
        return Standing(task, "not scored", method=scores.spec.method)
    n = int(scores.n_units[g][ref.layer])
    row = np.asarray(scores.arrays[g][ref.layer, :n], dtype=np.float64)
    info = dict(task=task, status="scored", score=float(row[ref.unit]), rank=_rank_in_layer(row, ref.unit),
                n_units=n, examples=scores.meta.get("examples") or (scores.spec.examples if scores.spec.info.needs_data
                                                                    else None),
                method=scores.spec.method)
    ses = scores.standard_errors() if scores.spec.info.needs_data else None
    if ses is not None:
        se = np.asarray(ses[g][ref.layer, :n], dtype=np.float64)
        low, high = rank_intervals(row, se, seed=ref.layer)  # the seed Scores.to_frame uses: the CSV's interval
        rel = scores.reliability().get(g)
        per = rel.per_layer[ref.layer] if rel is not None else float("nan")
        info.update(se=float(se[ref.unit]), rank_low=int(low[ref.unit]), rank_high=int(high[ref.unit]),
                    layer_reliability=float(per) if np.isfinite(per) else None)
    return Standing(**info)


def standings(ref: UnitRef, scores_by_task: dict) -> list[Standing]:
    """The unit in every task of ``{task: Scores or None}``, in that order."""
    return [standing(s, ref, t) for t, s in scores_by_task.items()]


def cached_scores_by_task(adapter, spec, tasks: Iterable[str], auto: tuple[float, int] | None = None, *,
                          cache_dir=None) -> dict:
    """``{task: Scores or None}``: ``spec``'s settings for every task, from the disk cache only
    (``auto``: ``(target, cap)`` of ``--examples auto``'s draw); None where nothing is cached:
    nothing is computed."""
    from mtprune.attribution import lookup_cached
    from mtprune.examples_auto import lookup_auto

    out = {}
    for t in tasks:
        s = spec.for_task(t)
        try:
            found = (lookup_auto(adapter, s, *auto, cache_dir=cache_dir) if auto is not None
                     else lookup_cached(adapter, s, cache_dir=cache_dir))
        except (MtpruneError, OSError, ValueError):  # a task without labelled rows, kinds the model lacks
            found = None
        out[t] = found[0] if found else None
    return out


# ----------------------------------------------------------------------------------------------
# where it fires, over a whole split


@dataclass(frozen=True)
class TopRow:
    """A row where the unit fires: its position in the split, its tokens and the unit's
    activation at each (padding left out), the peak (largest magnitude) and where it is."""

    row: int
    peak: float
    at: int  # the token of the peak
    tokens: tuple[str, ...]
    values: tuple[float, ...]
    label: int | None = None
    text: str = ""

    def __post_init__(self):
        if len(self.tokens) != len(self.values):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.values)} activations")


@dataclass(frozen=True)
class WordStat:
    """A word (pieces joined) over the split: how often it occurs, the unit's mean activation at it
    (a word's activation: its piece of largest magnitude) with its standard deviation, and the largest."""

    word: str
    count: int
    mean: float
    sd: float
    peak: float

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """A t-interval of the mean (the mean itself for one occurrence or no spread)."""
        from scipy.stats import t

        if self.count < 2 or self.sd == 0:
            return self.mean, self.mean
        half = float(t.ppf(0.5 + level / 2, self.count - 1)) * self.sd / np.sqrt(self.count)
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class UnitFiring:
    """Where one unit fires over a whole split (:func:`unit_firing`)."""

    unit: str
    task: str
    split: str
    rows: int  # rows read
    tokens: int  # tokens read (padding left out)
    top: tuple[TopRow, ...]
    words: tuple[WordStat, ...]  # highest mean activation first (words seen MIN_COUNT times or more)
    peak_words: tuple[tuple[str, int], ...]  # the word at each row's peak: (word, rows), most rows first
    peaks: dict = field(default_factory=dict)  # quantiles of the rows' peaks: median, q90, q99, max
    seconds: float = 0.0
    min_count: int = MIN_COUNT

    def __post_init__(self):
        if self.rows < 1:
            raise ValueError("a unit's firing needs at least one row")
        if any(a.peak < b.peak for a, b in zip(self.top, self.top[1:])):
            raise ValueError("the top rows must be ordered by their peak, highest first")

    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, "unit": self.unit, "task": self.task, "split": self.split,
                "rows": self.rows, "tokens": self.tokens, "top": [asdict(r) for r in self.top],
                "words": [asdict(w) for w in self.words], "peak_words": [list(p) for p in self.peak_words],
                "peaks": dict(self.peaks), "seconds": self.seconds, "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict) -> "UnitFiring":
        if d.get("format") != FORMAT_VERSION:
            raise ValueError("another version of the unit cache")
        top = tuple(TopRow(**{**r, "tokens": tuple(r["tokens"]), "values": tuple(r["values"])}) for r in d["top"])
        return cls(d["unit"], d["task"], d["split"], int(d["rows"]), int(d["tokens"]), top,
                   tuple(WordStat(**w) for w in d["words"]), tuple((str(w), int(n)) for w, n in d["peak_words"]),
                   dict(d["peaks"]), float(d["seconds"]), int(d.get("min_count", MIN_COUNT)))


class _Reached(Exception):
    """Raised by the hook once the unit's activation is read: the layers above it are not run."""


def _text_of(task: TaskSpec, row: dict, width: int = 600) -> str:
    text = " || ".join(str(row.get(f, "")) for f in task.fields)
    return text if len(text) <= width else text[: width - 1] + "…"


def _split_chunks(task: TaskSpec, split: str, rows: Sequence[dict] | None):
    """``(total, iterator of (first row's position, [rows]))`` over the split (or the rows given)."""
    if rows is not None:
        rows = [dict(r) for r in rows]
        return len(rows), ((s, rows[s: s + CHUNK]) for s in range(0, len(rows), CHUNK))
    from mtprune.tasks import load_rows

    ds = load_rows(task, split)

    def gen():
        for s in range(0, len(ds), CHUNK):
            cols = ds[s: s + CHUNK]
            keys = list(cols)
            yield s, [dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))]
    return len(ds), gen()


def _activations(adapter, task: TaskSpec, site, unit: int, batch_rows: list[dict]):
    """``[(tokens, values)]`` of a batch: the unit's activation at every non-padding token."""
    import torch

    from mtprune.batching import token_masks
    from mtprune.units import site_hooks

    store = {}

    def fn(s, x):
        v = x[..., unit, :].detach().float()
        store["a"] = v[..., 0] if s.width == 1 else v.norm(dim=-1)
        raise _Reached

    clean = [{k: v for k, v in r.items() if k != "label"} for r in batch_rows]  # activations need no label
    batch = adapter.encode(clean, task)
    with torch.inference_mode(), token_masks(adapter, [site]) as masks, site_hooks(adapter.model, [site], fn):
        try:
            adapter.logits(batch, task)
        except _Reached:
            pass
    if "a" not in store:
        raise MtpruneError(f"{site.name} was not reached when running {task.name}: the model does not use that unit")
    acts, ids, mask = store["a"].cpu(), batch.get("input_ids"), masks.get(site.stack)
    out = []
    for i in range(len(batch_rows)):
        keep = mask[i].bool().cpu() if mask is not None and mask.dim() == 2 and mask.shape[1] == acts.shape[1] \
            else torch.ones(acts.shape[1], dtype=torch.bool)
        vals = acts[i][keep].numpy()
        if isinstance(ids, torch.Tensor) and ids.shape[1] == acts.shape[1]:
            toks = adapter.tokenizer.convert_ids_to_tokens(ids[i][keep.to(ids.device)].tolist())
        else:  # the stack reads something else than the input ids (a decoder's label words)
            toks = [f"<{site.stack} position {p}>" for p in range(len(vals))]
        out.append((list(toks), vals))
    return out


class _Tally:
    """Running sums of the words' activations, the rows' peaks and the top rows."""

    def __init__(self, k: int):
        self.k, self.heap, self.words, self.peak_words, self.peaks, self.tokens = k, [], {}, {}, [], 0

    def add(self, task: TaskSpec, pos: int, row: dict, toks: list[str], vals: np.ndarray) -> None:
        from mtprune.text import join_pieces

        self.tokens += len(vals)
        mag = np.abs(vals)
        at = int(np.argmax(mag)) if len(vals) else 0
        peak = float(mag[at]) if len(vals) else 0.0
        self.peaks.append(peak)
        for word, idx in join_pieces(toks):
            w = float(mag[idx].max())
            s = self.words.setdefault(word, [0, 0.0, 0.0, 0.0])
            s[0] += 1
            s[1] += w
            s[2] += w * w
            s[3] = max(s[3], w)
            if at in idx:
                self.peak_words[word] = self.peak_words.get(word, 0) + 1
        label = row.get("label")
        item = (peak, -pos, TopRow(pos, peak, at, tuple(toks), tuple(float(v) for v in vals),
                                   int(label) if label is not None and int(label) >= 0 else None, _text_of(task, row)))
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def word_stats(self, min_count: int) -> tuple[WordStat, ...]:
        out = []
        for word, (n, s, ss, mx) in self.words.items():
            if n >= min_count:
                mean = s / n
                sd = float(np.sqrt(max(ss / n - mean * mean, 0.0) * n / (n - 1))) if n > 1 else 0.0
                out.append(WordStat(word, n, mean, sd, mx))
        return tuple(sorted(out, key=lambda w: (-w.mean, w.word))[:TOP_WORDS])


def _firing(adapter, task: TaskSpec, split: str, ref: UnitRef, site, k: int, rows, batch_size: int,
            progress) -> UnitFiring:
    from mtprune.batching import length_order

    t0 = time.perf_counter()
    total, chunks = _split_chunks(task, split, rows)
    tally, done = _Tally(k), 0
    for start, chunk in chunks:
        order = length_order(task, chunk)
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            for i, (toks, vals) in zip(idx, _activations(adapter, task, site, ref.unit, [chunk[i] for i in idx])):
                tally.add(task, start + i, chunk[i], toks, vals)
            done += len(idx)
            if progress:
                progress(done, total)
    if done == 0:
        raise MtpruneError(f"{task.name}/{split} has no rows")
    min_count = MIN_COUNT if any(n >= MIN_COUNT for n, *_ in tally.words.values()) else 1
    top = tuple(item[2] for item in sorted(tally.heap, reverse=True))
    peaks = np.asarray(tally.peaks)
    quant = {"median": float(np.median(peaks)), "q90": float(np.quantile(peaks, 0.9)),
             "q99": float(np.quantile(peaks, 0.99)), "max": float(peaks.max())}
    peak_words = tuple(sorted(tally.peak_words.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_WORDS])
    return UnitFiring(unit_id(ref), task.name, split, done, tally.tokens, top, tally.word_stats(min_count),
                      peak_words, quant, time.perf_counter() - t0, min_count)


def _json_cache(cache_dir):
    from mtprune.cache import DiskCache

    return DiskCache(cache_dir, namespace=NAMESPACE, suffix=".json")


def _key_parts(adapter, task: TaskSpec, split: str, ref: UnitRef, rows, what: str, **extra) -> dict:
    from mtprune import __version__
    from mtprune.attribution import data_identity
    from mtprune.evaluation import rows_digest

    data = data_identity(task, split) if rows is None else {"rows": rows_digest(task, rows)}
    return {"what": what, "format": FORMAT_VERSION, "version": __version__, "model": adapter.fingerprint(),
            "task": task.name, "split": split, "unit": unit_id(ref), "data": data, **extra}


def _cached(cache, key, compute, reader, writer, lookup_only: bool):
    if lookup_only:
        return cache.load(key, reader) if cache.exists(key) else None
    return cache.get_or_compute(key, compute, reader=reader, writer=writer)[0]


def unit_firing(adapter, task: TaskSpec | str, split: str, unit, k: int = TOP_ROWS, *,
                rows: Sequence[dict] | None = None, batch_size: int = 64, progress=None, cache_dir=None,
                lookup_only: bool = False) -> UnitFiring | None:
    """Where ``unit`` fires over every row of ``task``/``split`` (or the ``rows`` given): the ``k``
    rows of the highest peak, the words of the highest mean activation, the words at the rows'
    peaks. From the disk cache when there; else computed and stored (``lookup_only``: None
    instead of computing)."""
    task = get_task(task) if isinstance(task, str) else task
    if not isinstance(k, int) or k < 1:
        raise MtpruneError(f"the number of top rows must be at least 1, not {k}")
    if rows is None and split not in task.splits:
        raise MtpruneError(f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}")
    ref, site = check_unit(adapter, unit)
    cache = _json_cache(cache_dir)
    key = cache.key(_key_parts(adapter, task, split, ref, rows, "unit firing", k=k))
    return _cached(cache, key, lambda: _firing(adapter, task, split, ref, site, k, rows, batch_size, progress),
                   lambda p: UnitFiring.from_dict(json.loads(Path(p).read_text())),
                   lambda v, p: Path(p).write_text(json.dumps(v.to_dict())), lookup_only)


def split_size(task: TaskSpec | str, split: str) -> int:
    """How many rows the split has (labelled or not): what :func:`unit_firing` reads."""
    from mtprune.tasks import load_rows

    return len(load_rows(task, split))


# ----------------------------------------------------------------------------------------------
# without it


@dataclass(frozen=True)
class RemovalEffect:
    """P(gold) with the unit and with it alone switched off, on ``n`` rows: the mean change
    (without - with) and its 95% t-interval."""

    unit: str
    task: str
    split: str
    n: int
    mean: float
    low: float
    high: float
    p_value: float
    p_gold: float  # mean with the unit
    p_gold_without: float
    changes: tuple[float, ...] = ()  # per row, in the rows' order

    def __post_init__(self):
        if self.n < 1 or len(self.changes) not in (0, self.n):
            raise ValueError(f"{self.n} rows but {len(self.changes)} changes")
        if not self.low - 1e-9 <= self.mean <= self.high + 1e-9:
            raise ValueError("the mean lies outside its interval")

    @property
    def verdict(self) -> str:
        """``lowers P(gold)`` / ``raises P(gold)`` when the interval excludes 0, else ``no measurable change``."""
        if self.high < 0:
            return "lowers P(gold)"
        if self.low > 0:
            return "raises P(gold)"
        return "no measurable change"

    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, **asdict(self), "changes": list(self.changes)}

    @classmethod
    def from_dict(cls, d: dict) -> "RemovalEffect":
        if d.get("format") != FORMAT_VERSION:
            raise ValueError("another version of the unit cache")
        d = {k: v for k, v in d.items() if k != "format"}
        return cls(**{**d, "changes": tuple(float(c) for c in d["changes"])})


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float, float]:
    """``(mean, low, high, p)``: a t-interval of the mean and the one-sample t-test's p against 0
    (no spread: the mean itself, and p 1 for a mean of 0, else 0)."""
    from scipy.stats import ttest_1samp

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2 or np.ptp(x) == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    res = ttest_1samp(x, 0.0)
    ci = res.confidence_interval(level)
    return mean, float(ci.low), float(ci.high), float(res.pvalue)


def _removal(adapter, task: TaskSpec, split: str, ref: UnitRef, rows: list[dict], batch_size: int) -> RemovalEffect:
    from mtprune.probe import ablate_unit

    got = ablate_unit(adapter, task, rows, ref, batch_size=batch_size)
    change = np.asarray(got["change"], dtype=np.float64)
    mean, low, high, p = mean_interval(change)
    return RemovalEffect(unit_id(ref), task.name, split, len(rows), mean, low, high, p,
                         float(np.mean(got["p_gold"])), float(np.mean(got["p_gold_without"])),
                         tuple(float(c) for c in change))


def removal_effect(adapter, task: TaskSpec | str, split: str, unit, limit: int | None = 256, *,
                   rows: Sequence[dict] | None = None, batch_size: int = 32, cache_dir=None,
                   lookup_only: bool = False) -> RemovalEffect | None:
    """The change in P(gold) when ``unit`` alone is switched off, over the first ``limit`` labelled
    rows of ``task``/``split`` (None: all; or the ``rows`` given), with its 95% interval. From the
    disk cache when there; else computed and stored (``lookup_only``: None instead)."""
    from mtprune.evaluation import eval_rows

    task = get_task(task) if isinstance(task, str) else task
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise MtpruneError(f"the number of rows must be at least 1, not {limit}")
    ref, _ = check_unit(adapter, unit)
    rows = [dict(r) for r in rows] if rows is not None else eval_rows(task, split, limit)
    cache = _json_cache(cache_dir)
    key = cache.key(_key_parts(adapter, task, split, ref, rows, "removal effect"))
    return _cached(cache, key, lambda: _removal(adapter, task, split, ref, rows, batch_size),
                   lambda p: RemovalEffect.from_dict(json.loads(Path(p).read_text())),
                   lambda v, p: Path(p).write_text(json.dumps(v.to_dict())), lookup_only)


# ----------------------------------------------------------------------------------------------
# the masks that keep it


@dataclass(frozen=True)
class MaskSource:
    """A mask the caller knows of, with where it comes from (``run 3f2a9c0b71de``, ``the Prune
    page's settings``...), its task and how it was made."""

    name: str
    mask: object
    task: str = ""
    how: str = ""


@dataclass(frozen=True)
class MaskUse:
    """Whether one distinct mask keeps the unit: ``kept``, the units it keeps in the unit's layer
    (of ``n_in_layer``), and the sources that hold this mask."""

    digest: str
    kept: bool
    kept_in_layer: int
    n_in_layer: int
    sources: tuple[str, ...]
    task: str = ""
    how: str = ""


def mask_keeps(mask, ref: UnitRef) -> bool:
    """Whether ``mask`` keeps the unit (a mask without the unit's kind leaves it alone: kept)."""
    g = ref.group
    if g not in mask.keep:
        return True
    if ref.layer >= len(mask.n_units[g]) or ref.unit >= mask.n_units[g][ref.layer]:
        raise MtpruneError(f"the mask was made for another model: it has no unit {unit_id(ref)}")
    return bool(mask.keep[g][ref.layer, ref.unit])


def masks_keeping(ref: UnitRef, sources: Iterable[MaskSource]) -> list[MaskUse]:
    """One row per distinct mask (by digest; the sources holding it together), in the sources'
    order; masks of another model are left out."""
    out: dict[str, dict] = {}
    for src in sources:
        try:
            kept = mask_keeps(src.mask, ref)
        except MtpruneError:
            continue
        d = src.mask.digest()
        if d in out:
            out[d]["sources"].append(src.name)
            continue
        g = ref.group
        n = int(src.mask.n_units[g][ref.layer]) if g in src.mask.keep else 0
        k = int(src.mask.keep[g][ref.layer].sum()) if g in src.mask.keep else 0
        out[d] = {"digest": d, "kept": kept, "kept_in_layer": k, "n_in_layer": n, "sources": [src.name],
                  "task": src.task, "how": src.how}
    return [MaskUse(**{**v, "sources": tuple(v["sources"])}) for v in out.values()]


def run_masks(fingerprint: str, root=None, task: str | None = None) -> list[MaskSource]:
    """The masks of the model's saved runs (:class:`mtprune.runs.RunStore`), newest first; a run
    file that does not read is left out. Only the header and the mask's arrays are read."""
    from safetensors import safe_open

    from mtprune.masks import Mask
    from mtprune.runs import SUFFIX, RunStore, read_header

    store = RunStore(fingerprint, root)
    out = []
    for info in store.list(task):
        path = store.root / f"{info.id}{SUFFIX}"
        try:
            h = read_header(path)
            m = h.get("mask")
            if not m:
                continue
            with safe_open(str(path), framework="np") as f:
                keep = {g: np.asarray(f.get_tensor(f"mask.{g}")).astype(bool) for g in m["n_units"]}
            mask = Mask(keep=keep, n_units=m["n_units"], sparsity=m["sparsity"], scope=m.get("scope", "layer"),
                        kinds=m.get("kinds", "ffn"), stack=m.get("stack", "all"), meta=m.get("meta") or {})
        except Exception:  # a damaged or foreign file: the run list leaves it out too
            continue
        how = " · ".join(p for p in (info.settings.get("how") or "", info.settings.get("method") or "") if p)
        out.append(MaskSource(f"run {info.id}", mask, info.task, how))
    return out
