"""Applying a :class:`~mtprune.masks.Mask` to a model: pure transforms of (adapter, mask).

* :func:`soft_prune` zeroes the pruned units with hooks while a ``with`` block runs: reversible,
  for quick previews; works on every site, hard-prunable or not.
* :func:`hard_prune` returns a new adapter over a deep copy of the model whose Linear layers are
  sliced: an FFN neuron is a row of the in projections (up/gate) and a column of the out
  projection; a head is ``head_dim`` rows of Q, K and V and ``head_dim`` columns of O. Biases of
  out projections stay, so the sliced model computes what the soft-masked one does. The input
  adapter is never changed; the new model's config records every site's size and the mask
  (``mtprune_pruned``), which is how :mod:`mtprune.checkpoints` saves and reloads it.
* A layer may lose every FFN neuron (its FFN then outputs the out projection's bias) or every head:
  the attention module is then replaced by :class:`NoHeadsAttention`, which keeps the module's
  (now empty) children, so parameter names do not change, and returns the out projection's bias.

* T5's heads go through its format's rewrite (:mod:`mtprune.formats.t5`): each layer keeps the
  indices of its heads and slices the stack's shared relative position bias to them.
* Grouped-query attention loses whole key/value groups (``kv`` sites: a group's rows of Q, K
  and V and columns of O); the query heads of a removed group go with it. Single query heads
  (a ``heads`` view) can only be masked: a mask that prunes some of a kept group's heads makes
  :func:`hard_prune` stop with one line (:func:`hard_prune_problem` says why beforehand).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.formats.base import prunable
from mtprune.layers import set_module, slice_linear
from mtprune.masks import Mask
from mtprune.units import HEAD_REWRITES, UnitSite, soft_mask, unit_cost

PRUNED_KEY = "mtprune_pruned"
# attributes of attention modules that count heads, and that hold heads x head size
_HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_HEAD_SIZE_ATTRS = ("all_head_size", "split_size", "inner_dim")
_KV_COUNT_ATTRS = ("num_key_value_heads", "num_kv_heads")


class NoHeadsAttention(nn.Module):
    """Stands in for an attention module whose every head was pruned.

    It keeps the original module's children (the empty Q/K/V and, where the module owns it, the
    out projection), so parameter names are unchanged, and returns ``(out, None)``: the out
    projection of an empty input (its bias) when it owns the out projection, else an empty
    ``[..., 0]`` tensor for the caller's out projection.
    """

    def __init__(self, original: nn.Module, out_child: str | None):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, p in original.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in original.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in original._non_persistent_buffers_set)
        self.out_child = out_child
        self.replaces = type(original).__name__
        for a in _HEAD_COUNT_ATTRS + _HEAD_SIZE_ATTRS:
            if hasattr(original, a):
                setattr(self, a, 0)

    def forward(self, hidden_states=None, *args, **kwargs):
        if hidden_states is None:
            hidden_states = kwargs.get("query", kwargs.get("x"))
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.out_child is None:
            return empty, None
        return self.get_submodule(self.out_child)(empty), None

    def extra_repr(self):
        return f"replaces={self.replaces}, heads=0"


def _unit_index(units: torch.Tensor, width: int, n_units: int, chunks: int = 1) -> torch.Tensor:
    """Row/column indices of ``units`` (each ``width`` wide), repeated for each fused chunk."""
    base = (units.view(-1, 1) * width + torch.arange(width).view(1, -1)).flatten()
    return torch.cat([base + c * n_units * width for c in range(chunks)]) if chunks > 1 else base


def _relative(path: str, prefix: str) -> str | None:
    return path[len(prefix) + 1:] if path.startswith(prefix + ".") else None


def shrink_site(model: nn.Module, site: UnitSite, keep_units: torch.Tensor) -> None:
    """Slice one site of ``model`` in place down to ``keep_units`` (sorted unit indices)."""
    keep_units = keep_units.to(torch.long).cpu()
    n_keep = int(keep_units.numel())
    out_cols = _unit_index(keep_units, site.width, site.n_units)
    set_module(model, site.out_proj, slice_linear(model.get_submodule(site.out_proj), out_cols, dim=1))
    for ip in site.in_proj:
        rows = _unit_index(keep_units, ip.rows(site), site.n_units, ip.chunks)
        set_module(model, ip.path, slice_linear(model.get_submodule(ip.path), rows, dim=0))
    if site.kind == "ffn" or not site.attn_module:
        return
    if site.head_rewrite:  # the format removes the heads from its attention module
        HEAD_REWRITES[site.head_rewrite](model, site, keep_units)
        return
    attn = model.get_submodule(site.attn_module)
    if n_keep == 0:
        set_module(model, site.attn_module,
                    NoHeadsAttention(attn, _relative(site.out_proj, site.attn_module)))
        return
    for a in _HEAD_COUNT_ATTRS:
        if isinstance(getattr(attn, a, None), int):
            setattr(attn, a, n_keep * site.heads_per_unit)
    for a in _HEAD_SIZE_ATTRS:
        if isinstance(getattr(attn, a, None), int):
            setattr(attn, a, n_keep * site.width)
    if site.kind == "kv":
        for a in _KV_COUNT_ATTRS:
            if isinstance(getattr(attn, a, None), int):
                setattr(attn, a, n_keep)


def _sites_to_cut(adapter, mask: Mask) -> tuple[list[UnitSite], dict[str, torch.Tensor]]:
    """The sites ``mask`` removes units of, and every site's keep vector. A view site (the query
    heads of grouped attention) is left out when its pruned units are exactly those inside the
    pruned units of the site it is a view of (removing the groups removes them)."""
    sites = prunable(adapter).unit_sites()
    keep = mask.keep_for_sites(sites)
    cut = [s for s in sites if s.name in keep and not bool(keep[s.name].all())]
    by_place = {(s.stack, s.layer, s.kind): s for s in sites}
    out = []
    for s in cut:
        owner = by_place.get((s.stack, s.layer, s.view_of)) if s.view_of else None
        if owner is not None and owner.name in keep and owner.n_units:
            covered = keep[owner.name].repeat_interleave(owner.width // s.width)
            if torch.equal(covered, keep[s.name]):
                continue
        out.append(s)
    return out, keep


@contextmanager
def soft_prune(adapter, mask: Mask):
    """Zero the units ``mask`` prunes while the block runs (hooks; the model is not changed)."""
    cut, keep = _sites_to_cut(adapter, mask)
    with soft_mask(adapter.model, cut, {s.name: keep[s.name] for s in cut}) as names:
        yield names


def site_sizes(adapter) -> dict[str, int]:
    """``{site.name: units}`` of the adapter's model as it is now."""
    return {s.name: s.n_units for s in prunable(adapter).unit_sites()}


def pruned_entry(prev: dict | None, adapter_format: str, sizes: dict[str, int], mask: Mask | None,
                  max_length: int | None) -> dict:
    """The ``mtprune_pruned`` config entry: format, every site's size, the last mask's header
    (earlier masks of a model pruned more than once go to ``history``)."""
    prev = dict(prev or {})
    entry = {"format": adapter_format, "sizes": dict(sizes)}
    history = list(prev.get("history", []))
    if mask is not None:
        if prev.get("mask_meta"):
            history.append(prev["mask_meta"])
        meta = {**mask.to_header(), "kept": mask.kept(), "total": mask.total()}
        meta.pop("n_units", None)
        entry["mask_meta"] = meta
    elif prev.get("mask_meta"):
        entry["mask_meta"] = prev["mask_meta"]
    if history:
        entry["history"] = history
    if max_length is not None:
        entry["max_length"] = int(max_length)
    return entry


def hard_prune_problem(adapter, mask: Mask) -> str | None:
    """Why ``mask`` cannot be applied by slicing this model (heads of T5 or of grouped key/value
    attention can only be masked), or None when it can."""
    cut, _ = _sites_to_cut(adapter, mask)
    bad = [s for s in cut if not s.hard_prunable]
    if not bad:
        return None
    names = ", ".join(s.name for s in bad[:3]) + ("..." if len(bad) > 3 else "")
    model = type(adapter.model).__name__
    if any(s.view_of == "kv" for s in bad):
        return (f"{model} cannot lose single query heads physically ({names}): {bad[0].soft_reason}; "
                "prune whole key/value groups (--kinds kv), or keep the heads as a soft mask "
                "(experiments' --prune soft, the dashboard's preview)")
    return (f"{model} heads cannot be removed physically ({names}): {bad[0].soft_reason or 'not supported'}; "
            "prune its FFN neurons, or use a soft mask for heads")


def hard_prune(adapter, mask: Mask):
    """A new adapter over a deep copy of the model with the pruned units sliced away.

    The input adapter and its model are not changed. Logits equal those of :func:`soft_prune`
    with the same mask (to float rounding). The config records every site's size and the mask
    (``config.mtprune_pruned``).
    """
    problem = hard_prune_problem(adapter, mask)
    if problem:
        raise MtpruneError(problem)
    cut, keep = _sites_to_cut(adapter, mask)
    new = adapter.copy()
    for s in cut:
        shrink_site(new.model, s, torch.nonzero(keep[s.name]).flatten())
    prev = getattr(adapter.model.config, PRUNED_KEY, None)
    entry = pruned_entry(prev, adapter.format, site_sizes(new), mask, adapter.max_length)
    # the model it came from (the first one, for a model pruned more than once)
    entry["source"] = (prev or {}).get("source") or {"model": str(adapter.source), "fingerprint": adapter.fingerprint()}
    entry.pop("measured", None)  # a new model: what was measured on the old one does not hold
    setattr(new.model.config, PRUNED_KEY, entry)
    new.model.eval()
    return new


def count_parameters(adapter, mask: Mask | None = None) -> int:
    """Parameters of the model (task heads included) after removing what ``mask`` prunes: each
    pruned unit's :func:`mtprune.units.unit_cost`, whether or not its site can be hard-pruned."""
    total = adapter.num_parameters()
    if mask is None:
        return total
    cut, keep = _sites_to_cut(adapter, mask)
    return total - sum(int((~keep[s.name]).sum()) * unit_cost(adapter.model, s) for s in cut)
