"""Prunable units and the named places where hooks reach them.

A *unit site* is one layer's group of units of one kind: the FFN neurons of ``encoder.3`` or its
attention heads. Every unit is a block of ``width`` input columns of one Linear layer, the site's
*out projection* (BERT's ``output.dense``, T5's ``wo``, Llama's ``down_proj``; the attention output
projection for heads, with ``width`` = head size), and a block of output rows of its *in
projections* (up/gate, or query/key/value). Attribution, soft masks and physical pruning all work
through these two facts, so no other module needs to know an architecture's module names.

Hooks are named by place, ``encoder.3.ffn``, as TransformerLens names ``blocks.3.mlp.hook_post``;
they are set in a context manager and removed in ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

KINDS = ("ffn", "heads")
STACKS = ("encoder", "decoder")


@dataclass(frozen=True)
class InProj:
    """A module whose output rows index the units; ``chunks`` > 1 for fused projections (GPT-2's
    ``c_attn`` holds query | key | value, each ``n_units * width`` rows)."""

    path: str
    chunks: int = 1


@dataclass(frozen=True)
class UnitSite:
    stack: str
    layer: int
    kind: str
    n_units: int
    width: int
    out_proj: str
    in_proj: tuple[InProj, ...]
    attn_module: str = ""  # for heads: the attention module whose head count changes with pruning
    hard_prunable: bool = True

    def __post_init__(self):
        if self.stack not in STACKS or self.kind not in KINDS:
            raise ValueError(f"bad site {self.stack}/{self.kind}")
        if self.n_units < 0 or self.width < 1 or self.layer < 0:
            raise ValueError(f"bad site sizes {self.n_units}x{self.width} at layer {self.layer}")

    @property
    def name(self) -> str:
        return f"{self.stack}.{self.layer}.{self.kind}"

    @property
    def group(self) -> str:
        """The [layers x units] array a site belongs to: ``encoder.ffn``, ``decoder.heads``..."""
        return f"{self.stack}.{self.kind}"


def group_sites(sites: Iterable[UnitSite]) -> dict[str, list[UnitSite]]:
    """Sites by group, each list ordered by layer."""
    out: dict[str, list[UnitSite]] = {}
    for s in sites:
        out.setdefault(s.group, []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s.layer)
    return out


def select_sites(sites: Iterable[UnitSite], units: str = "all", stack: str = "all") -> list[UnitSite]:
    """Filter by unit kind (``ffn``, ``heads`` or ``all``) and stack (``encoder``, ``decoder``, ``all``)."""
    if units not in ("all", *KINDS):
        raise ValueError(f"units must be ffn, heads or all, not {units!r}")
    return [
        s
        for s in sites
        if (units == "all" or s.kind == units) and (stack == "all" or s.stack == stack)
    ]


# A hook function sees the site and the out projection's input reshaped to [..., n_units, width];
# it returns a replacement of the same shape, or None to leave the input unchanged.
SiteFn = Callable[[UnitSite, torch.Tensor], "torch.Tensor | None"]

_HOOK_TAG = "_mtprune_hook_place"


@contextmanager
def site_hooks(model: nn.Module, sites: Iterable[UnitSite], fn: SiteFn) -> Iterator[list[str]]:
    """Run ``fn`` on the unit activations of every site while the block is active.

    Yields the names of the places hooked. Every hook is removed in ``finally``, also when the
    block raises.
    """
    handles = []
    names = []
    try:
        for site in sites:
            module = model.get_submodule(site.out_proj)

            def pre_hook(mod, args, site=site):
                x = args[0]
                shaped = x.reshape(*x.shape[:-1], site.n_units, site.width)
                out = fn(site, shaped)
                if out is None:
                    return None
                return (out.reshape(x.shape), *args[1:])

            pre_hook.__dict__[_HOOK_TAG] = site.name
            handles.append(module.register_forward_pre_hook(pre_hook))
            names.append(site.name)
        yield names
    finally:
        for h in handles:
            h.remove()


def active_hooks(model: nn.Module) -> list[str]:
    """The places where an mtprune hook is set now (empty outside ``site_hooks``)."""
    found = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            place = getattr(hook, "__dict__", {}).get(_HOOK_TAG)
            if place is not None:
                found.append(place)
    return found


@contextmanager
def soft_mask(model: nn.Module, sites: Iterable[UnitSite], keep: dict[str, torch.Tensor]):
    """Zero the pruned units (``keep[site.name]`` is a bool vector over the site's units).

    Reversible: leaving the block restores the dense model. Sites not in ``keep`` stay whole.
    """
    sites = [s for s in sites if s.name in keep]

    def fn(site, x):
        k = keep[site.name].to(device=x.device, dtype=x.dtype)
        return x * k.view(*([1] * (x.dim() - 2)), -1, 1)

    with site_hooks(model, sites, fn) as names:
        yield names
