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
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:  # torch loads when a model does, not when the CLI builds its parser
    import torch
    from torch import nn

# ``groups``: key/value groups of grouped-query attention (one key/value head and the query heads
# that share it), the unit such attention loses physically; its query heads stay a soft ``heads`` view
KINDS = ("ffn", "heads", "groups")
STACKS = ("encoder", "decoder")
KIND_CHOICES = ("ffn", "heads", "groups", "all")  # what to prune: one kind or all of them
KIND_LABELS = {"ffn": "FFN neurons", "heads": "attention heads", "groups": "key/value groups"}
STACK_CHOICES = ("encoder", "decoder", "all")
GROUPS = tuple(f"{s}.{k}" for s in STACKS for k in KINDS)  # display order: encoder first, FFN first


@dataclass(frozen=True)
class InProj:
    """A module whose output rows index the units; ``chunks`` > 1 for fused projections (GPT-2's
    ``c_attn`` holds query | key | value, each ``n_units * width`` rows)."""

    path: str
    chunks: int = 1
    width: int = 0  # rows per unit when not the site's width (a key/value group's K and V: one head)

    def rows(self, site: "UnitSite") -> int:
        return self.width or site.width


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
    layer_path: str = ""  # the layer (block) module the site belongs to: encoder.layer.3
    residual: str = ""  # the module whose first input is the residual stream this site's output is added to
    # FFN sites that end their layer: the layer's output is output_norm(out_proj output + residual),
    # "" for no norm (pre-LN models), None when the layer does more after its FFN or nobody said
    output_norm: str | None = None
    heads_per_unit: int = 1  # query heads in one unit (a key/value group: the heads sharing it)
    soft_reason: str = ""  # why the units cannot be removed physically (hard_prunable False)
    # the kind of another site of the layer whose units hold this site's parameters (the query heads
    # of grouped attention are parts of the key/value groups): removing those removes these
    view_of: str = ""
    # a named rewrite (:func:`register_head_rewrite`) that removes heads from ``attn_module`` in
    # place of the generic slicing (T5: the stack's shared position bias is sliced per layer)
    head_rewrite: str = ""

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


# name -> fn(model, site, keep_units): removes heads from the site's attention module (after its
# in and out projections are sliced); registered by the formats that need one
HEAD_REWRITES: dict[str, Callable] = {}


def register_head_rewrite(name: str, fn: Callable) -> Callable:
    HEAD_REWRITES[name] = fn
    return fn


def group_sites(sites: Iterable[UnitSite]) -> dict[str, list[UnitSite]]:
    """Sites by group, each list ordered by layer."""
    out: dict[str, list[UnitSite]] = {}
    for s in sites:
        out.setdefault(s.group, []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s.layer)
    return out


def view_groups(groups: Iterable[str]) -> set[str]:
    """Groups whose units are parts of another group's (``decoder.heads`` when ``decoder.groups``
    is there: the query heads of grouped attention live inside their key/value groups)."""
    have = set(groups)
    return {f"{s}.heads" for s in STACKS if f"{s}.groups" in have and f"{s}.heads" in have}


def chosen_groups(groups: Iterable[str], kinds: str = "all", stack: str = "all") -> list[str]:
    """The groups a kind and stack filter prune. ``all`` leaves out view groups: on a grouped-query
    model it means FFN neurons and key/value groups; its query heads are pruned only by name."""
    groups = list(groups)
    views = view_groups(groups) if kinds == "all" else set()
    return [g for g in groups if selected(g, kinds, stack) and g not in views]


def group_parts(group: str) -> tuple[str, str]:
    """``encoder.ffn`` -> (``encoder``, ``ffn``); ValueError for a name that is not a unit group."""
    stack, _, kind = group.partition(".")
    if stack not in STACKS or kind not in KINDS:
        raise ValueError(f"unknown unit group {group!r} (known: {', '.join(GROUPS)})")
    return stack, kind


def selected(group: str, kinds: str = "all", stack: str = "all") -> bool:
    """Whether a unit group is chosen by a kind filter (``ffn``/``heads``/``all``) and a stack filter."""
    s, k = group_parts(group)
    return (kinds == "all" or k == kinds) and (stack == "all" or s == stack)


def ordered_groups(groups: Iterable[str]) -> list[str]:
    """Groups in display order: encoder before decoder, FFN neurons before heads."""
    have = list(groups)
    return [g for g in GROUPS if g in have] + [g for g in have if g not in GROUPS]


def select_sites(sites: Iterable[UnitSite], kinds: str = "all", stack: str = "all") -> list[UnitSite]:
    """Filter by kind (``ffn``, ``heads`` or ``all``) and stack (``encoder``, ``decoder``, ``all``)."""
    if kinds not in KIND_CHOICES:
        raise ValueError(f"kinds must be one of {', '.join(KIND_CHOICES)}, not {kinds!r}")
    return [s for s in sites if (kinds == "all" or s.kind == kinds) and (stack == "all" or s.stack == stack)]


def layout(sites: Sequence[UnitSite]) -> tuple[dict[str, tuple[int, int]], dict[str, list[int]]]:
    """Per group the array shape ``(n_layers, max_units)`` and the units of every layer: the layout
    of scores and masks."""
    shapes, n_units = {}, {}
    for g, ss in group_sites(sites).items():
        nu = [0] * (max(s.layer for s in ss) + 1)
        for s in ss:
            nu[s.layer] = s.n_units
        shapes[g] = (len(nu), max(nu) if nu else 0)
        n_units[g] = nu
    return shapes, n_units


def unit_cost(model: nn.Module, site: UnitSite) -> int:
    """Parameters one unit of ``site`` holds, the count physical pruning removes per unit: its
    ``width`` input columns of the out projection, and its output rows of every in projection with
    their biases (fused projections: once per chunk)."""
    from mtprune import layers

    cost = site.width * layers.out_features(model.get_submodule(site.out_proj))
    for ip in site.in_proj:
        m = model.get_submodule(ip.path)
        cost += ip.rows(site) * ip.chunks * (layers.in_features(m) + (1 if layers.has_bias(m) else 0))
    return cost


def sites_for_layers(model: nn.Module, stack: str, layer_paths: Sequence[str], ffn, heads, head_dim: int,
                     hard_heads: bool = True, kv_groups: tuple[str, str, str, int] | None = None,
                     soft_reason: str = "", head_rewrite: str = "") -> list[UnitSite]:
    """Sites from per-layer relative module names, for a format to describe its architecture.

    ``ffn = (in_names, out_name, residual_name[, output_norm])``; ``heads = (in_names, out_name,
    attn_module, residual_name)``; names relative to each layer path (``""``: the layer itself),
    either may be None. An in name ending in ``*3`` is a fused q|k|v projection. The residual module
    is the one whose first input is the residual stream the site's output is added to; an FFN that
    ends its layer names the norm applied to its output plus residual (``""``: none). Repair reads both.

    ``kv_groups = (q_name, k_name, v_name, heads_per_group)`` describes grouped-query attention
    (more than one query head per key/value head): every layer then has a ``groups`` site (a group
    is ``heads_per_group`` heads of Q and O and one head of K and V, removable as a whole) and a
    ``heads`` site of its query heads, a soft view of the groups' parameters.
    """
    from mtprune import layers

    def path(lp, name):
        return f"{lp}.{name}" if name else lp

    sites = []
    for i, lp in enumerate(layer_paths):
        if ffn is not None:
            ins, out, res, *norm = ffn
            n = layers.in_features(model.get_submodule(f"{lp}.{out}"))
            sites.append(UnitSite(stack, i, "ffn", n, 1, f"{lp}.{out}", tuple(InProj(f"{lp}.{x}") for x in ins),
                                  layer_path=lp, residual=path(lp, res),
                                  output_norm=(f"{lp}.{norm[0]}" if norm[0] else "") if norm else None))
        if heads is not None:
            ins, out, attn, res = heads
            n_in = layers.in_features(model.get_submodule(f"{lp}.{out}"))
            common = dict(attn_module=f"{lp}.{attn}", layer_path=lp, residual=path(lp, res))
            if kv_groups is not None and kv_groups[3] > 1:
                q, k, v, ratio = kv_groups
                n_kv = layers.out_features(model.get_submodule(f"{lp}.{k}")) // head_dim
                sites.append(UnitSite(
                    stack, i, "heads", n_in // head_dim, head_dim, f"{lp}.{out}", (InProj(f"{lp}.{q}"),),
                    hard_prunable=False, view_of="groups",
                    soft_reason=f"each key/value head is shared by {ratio} query heads", **common))
                sites.append(UnitSite(
                    stack, i, "groups", n_kv, ratio * head_dim, f"{lp}.{out}",
                    (InProj(f"{lp}.{q}"), InProj(f"{lp}.{k}", width=head_dim), InProj(f"{lp}.{v}", width=head_dim)),
                    heads_per_unit=ratio, **common))
                continue
            in_proj = tuple(InProj(f"{lp}.{x[:-2]}", 3) if x.endswith("*3") else InProj(f"{lp}.{x}") for x in ins)
            sites.append(UnitSite(stack, i, "heads", n_in // head_dim, head_dim, f"{lp}.{out}", in_proj,
                                  hard_prunable=hard_heads, soft_reason="" if hard_heads else soft_reason,
                                  head_rewrite=head_rewrite, **common))
    return sites


# A hook function sees the site and the out projection's input reshaped to [..., n_units, width];
# it returns a replacement of the same shape, or None to leave the input unchanged.
SiteFn = Callable[[UnitSite, "torch.Tensor"], "torch.Tensor | None"]

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


def first_tensor(args, kwargs):
    """The hidden states a module is called with (what a forward pre-hook sees): its first
    positional argument, else the usual keyword (``hidden_states``, ``query``, ``x``, ``input``)."""
    import torch

    if args:
        return args[0]
    for k in ("hidden_states", "query", "x", "input"):
        if isinstance(kwargs.get(k), torch.Tensor):
            return kwargs[k]
    raise RuntimeError(f"no hidden states among the arguments {sorted(kwargs)}")


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
