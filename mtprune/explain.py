"""Your own sentence: what the dense, the pruned and the repaired model say about it, and why.

:func:`explain` runs one sentence (or a pair, for pair tasks) through a model and returns an
:class:`Explanation`:

* each model's prediction with every label's probability (the softmax of the logits that
  :func:`mtprune.evaluation.evaluate` reads: the dense model, the dense model with the mask's units
  zeroed, and the repaired hard-pruned copy when one is given);
* token attributions for the dense model's predicted label: integrated gradients of its
  probability along a straight path from an all-zero input to the sentence's word embeddings
  (position and segment embeddings stay), ``steps`` midpoints in one batch; the word pieces are
  joined into the words as typed, each word scored by the sum of its pieces; completeness is
  reported (the attributions add up to P(sentence) - P(zero input), up to the integration error);
* per layer and kind of unit, the units that carry that probability for this one sentence: each
  unit's ``h * dP/dh`` summed over the tokens (what ``ap`` sums in magnitude over many examples),
  the top ``top`` of each site by magnitude, each with its standing in the task's cached
  attribution scores (score ± standard error, rank in its layer with a 95% interval, the layer's
  reliability: :mod:`mtprune.reliability`) when such scores are cached, "reliability unknown"
  otherwise, and whether the mask keeps it.

A text longer than the model reads is truncated as the model truncates it, and the explanation
says so (``truncated to N tokens``). Nothing here imports streamlit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task

DEFAULT_STEPS = 20  # integration steps of the token attributions
DEFAULT_TOP = 5  # units shown per layer and kind


# ----------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Prediction:
    """One model's answer: the label it picks and every label's probability."""

    model: str  # dense | pruned | repaired
    label: str
    probs: tuple[float, ...]  # in the task's label order
    labels: tuple[str, ...]

    def __post_init__(self):
        if len(self.probs) != len(self.labels) or self.label not in self.labels:
            raise ValueError(f"{self.model}: {len(self.probs)} probabilities for labels {self.labels}")

    @property
    def index(self) -> int:
        return self.labels.index(self.label)

    @property
    def p(self) -> float:
        return self.probs[self.index]

    def to_dict(self) -> dict:
        return {"model": self.model, "label": self.label, "p": round(self.p, 6),
                "probs": {k: round(v, 6) for k, v in zip(self.labels, self.probs)}}


@dataclass(frozen=True)
class Word:
    """A word as typed (its word pieces joined), the sum of its pieces' attributions, and which
    text it is in (0: the first, 1: the second of a pair)."""

    text: str
    score: float
    segment: int = 0
    pieces: int = 1

    def to_dict(self) -> dict:
        return {"text": self.text, "score": self.score, "segment": self.segment, "pieces": self.pieces}


@dataclass(frozen=True)
class UnitEffect:
    """One unit's part in this sentence's prediction, and its standing in the task's scores."""

    site: str  # encoder.2.ffn
    unit: int
    effect: float  # sum over tokens of h * dP/dh: > 0 raises P(label), < 0 lowers it
    kept: bool | None = None  # by the mask; None without one
    score: float | None = None  # the task's cached attribution score
    se: float | None = None  # its standard error (None without fold sums)
    rank: int | None = None  # in its layer, 1 = most needed by the task
    rank_low: int | None = None
    rank_high: int | None = None
    n_units: int = 0
    layer_reliability: float | None = None  # expected Spearman of the layer's scores with another draw

    @property
    def unit_id(self) -> str:
        """``encoder.2.ffn.1265``: the unit's address."""
        return f"{self.site}.{self.unit}"

    def reliability_text(self) -> str:
        """``rank 12 of 1,536 (95% 5-40), layer reliability 0.93`` or ``reliability unknown``."""
        if self.rank is None:
            return "reliability unknown"
        text = f"rank {self.rank:,} of {self.n_units:,}"
        if self.rank_low is not None:
            text += f" (95% {self.rank_low:,}-{self.rank_high:,})"
        else:
            return text + ", reliability unknown (no fold sums)"
        if self.layer_reliability is not None:
            text += f", layer reliability {self.layer_reliability:.2f}"
        return text

    def to_dict(self) -> dict:
        return {"unit": self.unit_id, "effect": self.effect, "kept": self.kept, "score": self.score, "se": self.se,
                "rank": self.rank, "rank_low": self.rank_low, "rank_high": self.rank_high, "n_units": self.n_units,
                "layer_reliability": self.layer_reliability, "reliability": self.reliability_text()}


@dataclass(frozen=True)
class SiteEffect:
    """One layer's units of one kind: the ``top`` units by the magnitude of their effect, and the
    share of the site's summed magnitude they hold."""

    site: str
    n_units: int
    total: float  # sum over the site's units of |effect|
    top: tuple[UnitEffect, ...]

    @property
    def share(self) -> float:
        return float(sum(abs(u.effect) for u in self.top) / self.total) if self.total > 0 else 0.0

    def to_dict(self) -> dict:
        return {"site": self.site, "n_units": self.n_units, "total_abs_effect": self.total,
                "top_share": round(self.share, 4), "top": [u.to_dict() for u in self.top]}


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` found for one sentence (or pair)."""

    task: str
    texts: tuple[str, ...]
    dense: Prediction
    pruned: Prediction | None = None
    repaired: Prediction | None = None
    repair: str | None = None  # the repair's summary line
    words: tuple[Word, ...] = ()
    ig: dict = field(default_factory=dict)  # steps, p, p_baseline, sum: the integration's check
    sites: tuple[SiteEffect, ...] = ()
    n_tokens: int = 0  # tokens the model read
    n_tokens_full: int = 0  # tokens of the whole text
    max_length: int = 0
    reliability: str = ""  # where the units' standing comes from, or why it is unknown
    mask: dict | None = None  # the mask's header (None: no mask)
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.texts or any(not t.strip() for t in self.texts):
            raise ValueError("an explanation needs non-empty texts")
        if self.n_tokens_full < self.n_tokens:
            raise ValueError(f"{self.n_tokens_full} tokens in all but {self.n_tokens} read")

    @property
    def label(self) -> str:
        """The label explained: the dense model's prediction."""
        return self.dense.label

    @property
    def truncated(self) -> bool:
        return self.n_tokens_full > self.n_tokens

    def predictions(self) -> list[Prediction]:
        return [p for p in (self.dense, self.pruned, self.repaired) if p is not None]

    def to_dict(self) -> dict:
        return {"task": self.task, "texts": list(self.texts), "label": self.label,
                "predictions": {p.model: p.to_dict() for p in self.predictions()}, "repair": self.repair,
                "words": [w.to_dict() for w in self.words],
                "integrated_gradients": dict(self.ig), "units": [s.to_dict() for s in self.sites],
                "tokens": self.n_tokens, "tokens_in_text": self.n_tokens_full, "max_length": self.max_length,
                "truncated": self.truncated, "reliability": self.reliability, "mask": self.mask,
                "notes": list(self.notes)}


# ----------------------------------------------------------------------------------------------
# input


def check_texts(task: TaskSpec | str, texts: str | Sequence[str]) -> tuple[str, ...]:
    """The texts as a tuple of one (or two, for a pair task) non-empty strings, or one line saying
    what is wrong."""
    task = get_task(task) if isinstance(task, str) else task
    texts = (texts,) if isinstance(texts, str) else tuple(texts)
    need = len(task.fields)
    if len(texts) != need:
        if need == 1:
            raise MtpruneError(f"{task.name} reads one text ({task.fields[0]}), not {len(texts)}")
        raise MtpruneError(f"{task.name} reads a pair of texts ({' and '.join(task.fields)}): give "
                           f"{'both' if len(texts) < need else 'two, not ' + str(len(texts))}")
    for name, t in zip(task.fields, texts):
        if not isinstance(t, str) or not t.strip():
            if need == 1:
                raise MtpruneError("the sentence is empty: type some text")
            raise MtpruneError(f"{name} is empty: {task.name} reads a pair of texts ({' and '.join(task.fields)}): "
                               "give both")
    return tuple(t.strip() for t in texts)


def cached_scores(adapter, task: TaskSpec | str, method: str = "ap"):
    """The task's attribution scores in the disk cache, or None; never computes. Tried in turn:
    every kind, then FFN neurons, then heads; the auto draw (the dashboard's default), then 256
    examples (the CLI's default)."""
    from mtprune.attribution import AttributionSpec, lookup_cached
    from mtprune.examples_auto import lookup_auto

    task = get_task(task) if isinstance(task, str) else task
    for kinds in ("all", "ffn", "heads"):
        spec = AttributionSpec(task=task.name, method=method, kinds=kinds)
        try:
            found = lookup_auto(adapter, spec) or lookup_cached(adapter, spec)
        except (MtpruneError, OSError, ValueError):  # a task without labelled rows, kinds the model lacks
            continue
        if found:
            return found[0]
    return None


def repair_for(adapter, task: TaskSpec | str, mask, solver: str = "lsq", calib: int = 1024,
               calib_split: str | None = None, progress=None):
    """The mask applied to a hard-pruned copy and its out projections refit by ``solver`` on
    ``calib`` rows of the task's train split (:func:`mtprune.pipeline.prune`): a
    :class:`~mtprune.pipeline.Pruned`."""
    from mtprune.pipeline import plan_calibration, prune

    task = get_task(task) if isinstance(task, str) else task
    plan = plan_calibration(task, solver, n=calib, split=calib_split)
    return prune(adapter, task, mask=mask, repair_with=plan.solver, calibration=plan, progress=progress)


# ----------------------------------------------------------------------------------------------
# the model's answers


def _prediction(name: str, adapter, task: TaskSpec, row: dict, context=None) -> Prediction:
    from mtprune.evaluation import predict_logits

    logits = predict_logits(adapter, task, [row], batch_size=1, context=context)[0]
    probs = logits.float().softmax(-1).tolist()  # as evaluate's probabilities
    return Prediction(name, task.labels[int(np.argmax(probs))], tuple(float(p) for p in probs), task.labels)


def _prob(adapter, task: TaskSpec, batch: dict, label: int):
    """[rows] the probability of ``label`` among the task's labels (as :func:`_prediction`)."""
    return adapter.logits(batch, task).float().softmax(-1)[:, label]


def _ids_of(batch: dict) -> list[int]:
    """The token ids of the batch's one row (a prompt's, for label-word models)."""
    if "input_ids" in batch:
        return [int(i) for i in batch["input_ids"][0].tolist()]
    return [int(i) for i in batch["prompt_ids"][0]]


def _repeat(batch: dict, k: int) -> dict:
    """The one-row batch ``k`` times over."""
    import torch

    return {n: (torch.cat([v] * k, 0) if isinstance(v, torch.Tensor) and v.dim() > 0 else
                v * k if isinstance(v, list) else v) for n, v in batch.items()}


@contextmanager
def _grad_mode():
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield


# ----------------------------------------------------------------------------------------------
# tokens

Slot = tuple  # (word key, text index, the word as typed) of one token; None: a special or prompt token


@contextmanager
def _embedding_gate(model, ids: list[int], words, gate, base_id: int | None):
    """While the block runs, the word embeddings of the calls that read ``ids`` (the first
    ``len(ids)`` positions of every row) go from the baseline (``base_id``'s embedding, zeros when
    None) at gate 0 to themselves at gate 1, at the positions where ``words`` is True; ``gate`` is
    [rows, len(ids)]. Other calls (a T5 decoder's) pass unchanged."""
    import torch

    reader = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model  # T5: its encoder's
    emb = reader.get_input_embeddings()
    if emb is None:
        raise MtpruneError(f"{type(model).__name__} has no input embeddings to attribute words through")
    want, n = torch.tensor(ids), len(ids)
    on = torch.tensor(words, dtype=torch.float32).view(1, -1, 1)

    def hook(mod, args, out):
        x = args[0] if args else None
        if (not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] != gate.shape[0] or x.shape[1] < n
                or not torch.equal(x[:, :n].cpu(), want.expand(x.shape[0], n))):
            return None
        head = out[:, :n]
        base = emb.weight[base_id].detach() if base_id is not None else torch.zeros_like(head[0, 0])
        g = gate.to(device=out.device, dtype=out.dtype).unsqueeze(-1)
        moved = head + on.to(device=out.device, dtype=out.dtype) * (g - 1) * (head - base)
        return torch.cat([moved, out[:, n:]], 1)

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _token_attributions(adapter, task: TaskSpec, batch: dict, label: int, words: list[bool], steps: int):
    """``(per-token attributions, P at the text, P at the baseline)``: integrated gradients of
    P(label) from the text with every word token's embedding replaced by the padding token's to the
    text itself (``steps`` midpoints, one batch); other tokens keep theirs and get 0."""
    import torch

    ids = _ids_of(batch)
    base_id = adapter.tokenizer.pad_token_id
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    with _grad_mode():
        gate = alphas.view(-1, 1).expand(steps, len(ids)).clone().requires_grad_(True)
        with _embedding_gate(adapter.model, ids, words, gate, base_id):
            p = _prob(adapter, task, _repeat(batch, steps), label)
            (grad,) = torch.autograd.grad(p.sum(), [gate], allow_unused=True)
    ends = torch.tensor([0.0, 1.0]).view(-1, 1).expand(2, len(ids))
    with torch.inference_mode(), _embedding_gate(adapter.model, ids, words, ends, base_id):
        p0, p1 = _prob(adapter, task, _repeat(batch, 2), label).tolist()
    grad = grad.mean(0).double().cpu().numpy() if grad is not None else np.zeros(len(ids))
    return grad * np.asarray(words, dtype=np.float64), float(p1), float(p0)


def _segments(ids: list[int], special: set[int]) -> list[int]:
    """Which text each token is in: a special token after a text's tokens closes that text."""
    seg, seen, out = 0, False, []
    for i in ids:
        if i in special:
            if seen:
                seg, seen = seg + 1, False
            out.append(-1)
        else:
            seen = True
            out.append(seg)
    return out


def _piece(tok: str) -> tuple[str, bool]:
    """A word piece as a reader sees it and whether it starts a new word."""
    if tok.startswith("##"):
        return tok[2:], False
    if tok.startswith(("Ġ", "▁")):
        return tok[1:], True
    return tok, True


def _slots_by_prefix(tokenizer, ids: list[int]) -> list[Slot | None]:
    """Without offsets: pieces joined by their prefixes (``##``, ``Ġ``, ``▁``), texts told apart by
    the special tokens between them."""
    special = set(getattr(tokenizer, "all_special_ids", []) or []) - {tokenizer.unk_token_id}
    segs = _segments(ids, special)
    out: list[Slot | None] = []
    w, text = -1, ""
    for i, t, seg in zip(ids, tokenizer.convert_ids_to_tokens(ids), segs):
        if seg < 0:
            out.append(None)
            continue
        piece, new = _piece(str(t))
        if new or not out or out[-1] is None:
            w, text = w + 1, piece
        else:
            text += piece
        out.append((w, seg, text))
    # every token of a word carries the whole word
    whole = {slot[0]: slot[2] for slot in out if slot is not None}
    return [None if s is None else (s[0], s[1], whole[s[0]]) for s in out]


def _text_ranges(prompt: str, texts: Sequence[str]) -> list[tuple[int, int]]:
    """Where each text is in the prompt (each found once, in turn)."""
    taken: list[tuple[int, int]] = []
    for t in texts:
        i = prompt.find(t)
        while i >= 0 and any(a <= i < b for a, b in taken):
            i = prompt.find(t, i + 1)
        taken.append((i, i + len(t)) if i >= 0 else (-1, -1))
    return taken


def _token_slots(adapter, task: TaskSpec, row: dict, ids: list[int]) -> list[Slot | None]:
    """Per token the word it belongs to, from the fast tokenizer's offsets (for label-word models:
    only the words of the texts inside the prompt); by prefixes when the offsets do not line up
    with the tokens the model read."""
    tok = adapter.tokenizer
    prompt = getattr(adapter, "prompt", None)
    texts = [row[f] for f in task.fields]
    source = [prompt(task, row)] if callable(prompt) else texts
    try:
        enc = tok(*source[:2], add_special_tokens=True, return_offsets_mapping=True, verbose=False)
        words, seqs, offs = enc.word_ids(), enc.sequence_ids(), enc["offset_mapping"]
    except Exception:  # a slow tokenizer: no offsets
        return _slots_by_prefix(tok, ids)
    full = list(enc["input_ids"])
    start = next((s for s in (0, len(full) - len(ids)) if s >= 0 and full[s:s + len(ids)] == ids), None)
    if start is None:
        return _slots_by_prefix(tok, ids)
    ranges = _text_ranges(source[0], texts) if callable(prompt) else None
    keys: list = []
    for j in range(start, start + len(ids)):
        if words[j] is None:
            keys.append(None)
        elif ranges is None:
            keys.append((seqs[j], words[j]))
        else:
            a, b = offs[j]
            seg = next((k for k, (lo, hi) in enumerate(ranges) if lo <= a and b <= hi and b > a), None)
            keys.append(None if seg is None else (seg, words[j]))
    spans: dict[tuple, list[int]] = {}
    for key, j in zip(keys, range(start, start + len(ids))):
        if key is not None:
            a, b = offs[j]
            lo, hi = spans.setdefault(key, [a, b])
            spans[key] = [min(lo, a), max(hi, b)]
    order = {k: i for i, k in enumerate(spans)}
    return [None if k is None else (order[k], k[0], source[0 if ranges is not None else k[0]][slice(*spans[k])])
            for k in keys]


def _words(slots: list[Slot | None], scores: np.ndarray) -> tuple[Word, ...]:
    """The words in order of appearance, each scored by the sum of its tokens' attributions."""
    words: dict[int, list] = {}
    for slot, s in zip(slots, scores):
        if slot is not None:
            entry = words.setdefault(slot[0], [slot[2], 0.0, slot[1], 0])
            entry[1] += float(s)
            entry[3] += 1
    return tuple(Word(text, score, seg, n) for text, score, seg, n in words.values())


def _length_in_full(adapter, task: TaskSpec, row: dict) -> int:
    """Tokens of the whole text, untruncated (the model reads at most ``adapter.max_length``)."""
    prompt = getattr(adapter, "prompt", None)
    texts = [prompt(task, row)] if callable(prompt) else [row[f] for f in task.fields]
    return len(adapter.tokenizer(*texts[:2], add_special_tokens=True, verbose=False)["input_ids"])


# ----------------------------------------------------------------------------------------------
# units


def _unit_effects(adapter, task: TaskSpec, batch: dict, label: int, sites) -> dict[str, np.ndarray]:
    """``{site: [n_units]}``: each unit's ``sum over tokens of h * dP(label)/dh`` (the gradient of
    P with respect to a gate of ones on the unit), one forward and backward pass."""
    import torch

    from mtprune.units import site_hooks

    with _grad_mode():
        gates = {s.name: torch.ones(1, s.n_units, device=adapter.device, requires_grad=True) for s in sites}

        def fn(site, x):
            g = gates[site.name]
            return x * g.view(1, *([1] * (x.dim() - 3)), site.n_units, 1).to(x.dtype)

        with site_hooks(adapter.model, sites, fn):
            p = _prob(adapter, task, batch, label)
            names = list(gates)
            grads = torch.autograd.grad(p.sum(), [gates[n] for n in names], allow_unused=True)
    return {n: (g[0].double().cpu().numpy() if g is not None else np.zeros(gates[n].shape[1]))
            for n, g in zip(names, grads)}


def _standing(scores) -> dict:
    """``{group: (totals, ses or None, layer reliabilities or None)}`` of the cached scores."""
    if scores is None:
        return {}
    ses = scores.standard_errors() if scores.spec.info.needs_data else None
    rel = scores.reliability() if ses is not None else {}
    return {g: (scores.arrays[g], None if ses is None else ses[g], rel[g].per_layer if g in rel else None)
            for g in scores.arrays}


def _rank_interval(group: str, layer: int, total: np.ndarray, se: np.ndarray, cache: dict):
    """``(low, high)`` of every unit's rank in its layer, once per layer."""
    from mtprune.reliability import rank_intervals

    key = (group, layer)
    if key not in cache:
        cache[key] = rank_intervals(total, se, seed=layer)  # the seed Scores.to_frame uses: the same interval
    return cache[key]


def _unit(site, u: int, effect: float, mask, standing: dict, cache: dict) -> UnitEffect:
    kept = None if mask is None else bool(mask.keep[site.group][site.layer, u]) if site.group in mask.keep else True
    base = UnitEffect(site.name, int(u), float(effect), kept, n_units=site.n_units)
    if site.group not in standing:
        return base
    arr, ses, rel = standing[site.group]
    n = min(site.n_units, int(np.sum(~np.isnan(arr[site.layer]))))
    if u >= n:
        return base
    total = arr[site.layer, :n].astype(np.float64)
    filled = np.where(np.isnan(total), -np.inf, total)
    rank = int(np.sum(filled > filled[u]) + np.sum(filled[:u] == filled[u]) + 1)  # 1 = highest; ties by position
    out = replace(base, score=float(total[u]), rank=rank, n_units=n)
    if ses is None:
        return out
    se = ses[site.layer, :n].astype(np.float64)
    lo, hi = _rank_interval(site.group, site.layer, total, se, cache)
    r = rel[site.layer] if rel is not None else float("nan")
    return replace(out, se=float(se[u]), rank_low=int(lo[u]), rank_high=int(hi[u]),
                   layer_reliability=float(r) if np.isfinite(r) else None)


def _sites(adapter, effects: dict[str, np.ndarray], top: int, mask, scores) -> tuple[SiteEffect, ...]:
    standing, cache = _standing(scores), {}
    out = []
    for s in adapter.unit_sites():
        e = effects.get(s.name)
        if e is None or s.n_units == 0:
            continue
        order = np.argsort(-np.abs(e), kind="stable")[:top]
        units = tuple(_unit(s, int(u), float(e[u]), mask, standing, cache) for u in order)
        out.append(SiteEffect(s.name, s.n_units, float(np.abs(e).sum()), units))
    return tuple(out)


def _reliability_note(scores, task: TaskSpec) -> str:
    if scores is None:
        return (f"reliability unknown: no attribution scores of {task.name} are cached for this model "
                f"(mtprune attribute --task {task.name} --examples auto makes them)")
    where = scores.spec.describe()
    if not scores.spec.info.needs_data:
        return f"ranks from {where}; it reads no examples, so another draw gives the same ranks"
    if not scores.has_folds:
        return f"ranks from {where}; reliability unknown: these scores carry no fold sums"
    return f"ranks from {where}, with 95% intervals and each layer's reliability"


# ----------------------------------------------------------------------------------------------
# the whole


def explain(adapter, task: TaskSpec | str, texts: str | Sequence[str], *, mask=None, repaired=None, scores=None,
            top: int = DEFAULT_TOP, steps: int = DEFAULT_STEPS) -> Explanation:
    """The dense (and, with ``mask``, the soft-pruned; with ``repaired``, a
    :class:`~mtprune.pipeline.Pruned` from :func:`repair_for`, the repaired) predictions for one
    sentence or pair, the words and units that carry the dense prediction, and each unit's standing
    in ``scores`` (a task's :class:`~mtprune.attribution.Scores`; None: reliability unknown)."""
    from mtprune.formats.base import prunable
    from mtprune.pruning import soft_prune

    task = get_task(task) if isinstance(task, str) else task
    texts = check_texts(task, texts)
    for name, v, lo in (("top", top, 1), ("steps", steps, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise MtpruneError(f"{name} must be a whole number of at least {lo}, not {v!r}")
    adapter = prunable(adapter)
    adapter.head_for(task)
    if repaired is not None and mask is None:
        mask = repaired.mask
    if mask is not None:
        mask.check_matches(adapter)
    row = dict(zip(task.fields, texts))
    dense = _prediction("dense", adapter, task, row)
    pruned = _prediction("pruned", adapter, task, row, lambda: soft_prune(adapter, mask)) if mask is not None else None
    rep = _prediction("repaired", repaired.adapter, task, row) if repaired is not None else None
    batch = adapter.encode([row], task)
    ids = _ids_of(batch)
    slots = _token_slots(adapter, task, row, ids)
    tokens, p1, p0 = _token_attributions(adapter, task, batch, dense.index, [s is not None for s in slots], int(steps))
    effects = _unit_effects(adapter, task, batch, dense.index, adapter.unit_sites())
    full = max(_length_in_full(adapter, task, row), len(ids))
    notes = (f"truncated to {len(ids)} tokens: the text has {full:,} and the model reads at most "
             f"{adapter.max_length:,}",) if full > len(ids) else ()
    return Explanation(
        task=task.name, texts=texts, dense=dense, pruned=pruned, repaired=rep,
        repair=repaired.report.summary() if repaired is not None else None, words=_words(slots, tokens),
        ig={"steps": int(steps), "p": p1, "p_baseline": p0, "sum": float(tokens.sum()),
            "baseline": "every word's tokens replaced by padding" if adapter.tokenizer.pad_token_id is not None
            else "every word's embeddings set to zero"},
        sites=_sites(adapter, effects, int(top), mask, scores), n_tokens=len(ids), n_tokens_full=full,
        max_length=int(adapter.max_length), reliability=_reliability_note(scores, task),
        mask=mask.summary() | {"digest": mask.digest()} if mask is not None else None, notes=notes)
