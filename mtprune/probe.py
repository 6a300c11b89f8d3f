"""What one unit does: where it fires, and what the task loses without it.

* :func:`unit_activations` runs the model on rows and returns, per row, the tokens and the unit's
  activation at each of them (a head's: the norm of its output vector), padding left out;
* :func:`top_activating` keeps the rows where the unit fires most (its largest activation);
* :func:`ablate_unit` compares every row's probability of its gold label with the unit and with it
  alone switched off (a soft mask of that one unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtprune.errors import MtpruneError
from mtprune.formats.base import prunable
from mtprune.units import canonical_name, site_hooks, soft_mask


@dataclass(frozen=True)
class UnitRef:
    """One unit: ``encoder.3.ffn`` unit 17."""

    group: str
    layer: int
    unit: int

    def __post_init__(self):
        object.__setattr__(self, "group", canonical_name(self.group))  # decoder.groups: decoder.kv

    @property
    def site(self) -> str:
        stack, kind = self.group.split(".")
        return f"{stack}.{self.layer}.{kind}"

    def __str__(self) -> str:
        return f"{self.site}[{self.unit}]"


def _site(adapter, ref: UnitRef):
    sites = {s.name: s for s in prunable(adapter).unit_sites()}
    s = sites.get(ref.site)
    if s is None:
        raise MtpruneError(f"the model has no unit site {ref.site}")
    if not 0 <= ref.unit < s.n_units:
        raise MtpruneError(f"{ref.site} has {s.n_units} units: there is no unit {ref.unit}")
    return s


@dataclass(frozen=True)
class Firing:
    """One row: its tokens and the unit's activation at each."""

    index: int  # the row's position in the rows given
    tokens: list
    values: np.ndarray

    @property
    def peak(self) -> float:
        return float(np.max(np.abs(self.values))) if len(self.values) else 0.0


def unit_activations(adapter, task, rows, ref: UnitRef, batch_size: int = 32) -> list[Firing]:
    """The unit's activation at every (non-padding) token of every row (label-word models: of the
    prompt the model reads first)."""
    from mtprune.batching import token_masks
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    site = _site(adapter, ref)
    out: list[Firing] = []
    store = {}

    def fn(s, x):
        if "a" not in store:  # the first call of a batch (label-word models call the stack once per label)
            v = x[..., ref.unit, :].detach().float()
            store["a"] = v[..., 0] if s.width == 1 else v.norm(dim=-1)
        return None

    with torch.inference_mode(), token_masks(adapter, [site]) as masks, site_hooks(adapter.model, [site], fn):
        for start in range(0, len(rows), batch_size):
            chunk = [dict(r) for r in rows[start:start + batch_size]]
            batch = adapter.encode(chunk, task)
            store.clear()
            adapter.logits(batch, task)
            acts = store["a"].cpu()
            ids = batch.get("input_ids")
            mask = masks.get(site.stack)
            for i in range(len(chunk)):
                n = int(mask[i].sum()) if mask is not None and mask.dim() == 2 else acts.shape[1]
                toks = adapter.tokenizer.convert_ids_to_tokens(ids[i, :n].tolist()) if ids is not None else \
                    [str(t) for t in range(n)]
                out.append(Firing(start + i, toks, acts[i, :n].numpy()))
    return out


def top_activating(adapter, task, rows, ref: UnitRef, k: int = 5, batch_size: int = 32) -> list[Firing]:
    """The ``k`` rows where the unit's largest activation (in magnitude) is highest."""
    firing = unit_activations(adapter, task, rows, ref, batch_size)
    return sorted(firing, key=lambda f: -f.peak)[:k]


def ablate_unit(adapter, task, rows, ref: UnitRef, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every row's P(gold) with the unit and without it (that unit alone masked):
    ``{"p_gold": [...], "p_gold_without": [...], "change": without - with}``."""
    from mtprune.evaluation import predict_logits
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    site = _site(adapter, ref)
    if any("label" not in r for r in rows):
        raise MtpruneError("the rows need their labels to read P(gold)")
    gold = torch.tensor([int(r["label"]) for r in rows])
    keep = torch.ones(site.n_units, dtype=torch.bool)
    keep[ref.unit] = False

    def p_gold(context=None):
        logits = predict_logits(adapter, task, rows, batch_size, context=context)
        return logits.float().softmax(-1).gather(1, gold.view(-1, 1)).squeeze(1).numpy()

    with_unit = p_gold()
    without = p_gold(lambda: soft_mask(adapter.model, [site], {site.name: keep}))
    return {"p_gold": with_unit, "p_gold_without": without, "change": without - with_unit}
