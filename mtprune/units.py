"""Prunable units and the named places where hooks reach them.

A *unit site* is one layer's group of units of one kind: the FFN neurons of ``encoder.3`` or its
attention heads. Every unit is a block of ``width`` input columns of one Linear layer, the site's
*out projection* (BERT's ``output.dense``, T5's ``wo``, Llama's ``down_proj``; the attention output
projection for heads, with ``width`` = head size), and a block of output rows of its *in
projections* (up/gate, or query/key/value). Attribution, soft masks and physical pruning all work
through these two facts, so no other module needs to know an architecture's module names. A format
describes its layers by name (:class:`StackSpec` with an :class:`FFNSpec` and an
:class:`AttentionSpec`); :func:`build_sites` turns them into sites.

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

# ``kv``: key/value groups of grouped-query attention (one key/value head and the query heads that
# share it), the unit such attention loses physically; its query heads stay a soft ``heads`` view
KINDS = ("ffn", "heads", "kv")
STACKS = ("encoder", "decoder")
KIND_CHOICES = ("ffn", "heads", "kv", "all")  # what to prune: one kind or all of them
KIND_LABELS = {"ffn": "FFN neurons", "heads": "attention heads", "kv": "key/value groups"}
# old spellings of a kind, still read: ``--kinds groups``, masks, scores and pruned models that name
# ``decoder.groups`` (the word collided with a *group*, a [layers x units] array)
KIND_ALIASES = {"groups": "kv"}
STACK_CHOICES = ("encoder", "decoder", "all")
GROUPS = tuple(f"{s}.{k}" for s in STACKS for k in KINDS)  # display order: encoder first, FFN first


def canonical_kinds(kinds: str) -> str:
    """A kind or kind filter in today's spelling (``groups`` -> ``kv``); anything else as it is."""
    return KIND_ALIASES.get(kinds, kinds) if isinstance(kinds, str) else kinds


def canonical_name(name: str) -> str:
    """A group or site name in today's spelling: ``decoder.groups`` -> ``decoder.kv``,
    ``decoder.3.groups`` -> ``decoder.3.kv``; anything else as it is."""
    head, dot, kind = name.rpartition(".")
    return f"{head}.{KIND_ALIASES[kind]}" if dot and kind in KIND_ALIASES else name


@dataclass(frozen=True)
class InProj:
    """A module whose output rows index the units; ``chunks`` > 1 for fused projections (GPT-2's
    ``c_attn`` holds query | key | value, each ``n_units * width`` rows)."""

    path: str
    chunks: int = 1
    width: int = 0  # rows per unit when not the site's width (a key/value group's K and V: one head)

    def rows(self, site: "UnitSite") -> int:
        return self.width or site.width


@dataclass(frozen=True, kw_only=True)
class UnitSite:
    """One layer's units of one kind (built by :func:`build_sites` from a format's specs)."""

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
    """Groups whose units are parts of another group's (``decoder.heads`` when ``decoder.kv`` is
    there: the query heads of grouped attention live inside their key/value groups)."""
    have = set(groups)
    return {f"{s}.heads" for s in STACKS if f"{s}.kv" in have and f"{s}.heads" in have}


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
    """Whether a unit group is chosen by a kind filter (``ffn``/``heads``/``kv``/``all``) and a stack filter."""
    s, k = group_parts(group)
    kinds = canonical_kinds(kinds)
    return (kinds == "all" or k == kinds) and (stack == "all" or s == stack)


def ordered_groups(groups: Iterable[str]) -> list[str]:
    """Groups in display order: encoder before decoder, FFN neurons before heads."""
    have = list(groups)
    return [g for g in GROUPS if g in have] + [g for g in have if g not in GROUPS]


def select_sites(sites: Iterable[UnitSite], kinds: str = "all", stack: str = "all") -> list[UnitSite]:
    """Filter by kind (``ffn``, ``heads``, ``kv`` or ``all``) and stack (``encoder``, ``decoder``, ``all``)."""
    kinds = canonical_kinds(kinds)
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


# ----------------------------------------------------------------------------------------------
# layer specs: how a format describes its layers, by name


@dataclass(frozen=True, kw_only=True)
class FFNSpec:
    """A layer's feed-forward block, by module names relative to the layer (``""``: the layer).

    Its units are the neurons: output rows of every ``in_proj`` (up, and gate where there is one)
    and input columns of ``out_proj`` (down). ``residual`` is the module whose first input is the
    residual stream the block's output is added to. ``output_norm`` is, for a block that ends its
    layer, the norm applied to its output plus the residual (``""``: none, as in pre-LN models);
    None when the layer does more after the block or nobody said. Repair reads both."""

    in_proj: tuple[str, ...]
    out_proj: str
    residual: str
    output_norm: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttentionSpec:
    """A layer's self-attention, by module names relative to the layer (``""``: the layer).

    Its units are the heads, ``head_dim`` wide: output rows of the query, key and value projections
    (``q``, ``k``, ``v``, or one ``qkv`` that holds query | key | value, as GPT-2's ``c_attn``) and
    input columns of the out projection ``o``. ``module`` is the attention module whose head count
    changes with pruning; ``residual`` as in :class:`FFNSpec`.

    ``query_per_kv`` > 1 is grouped-query attention (that many query heads share one key/value
    head): the layer then has a ``kv`` site (one key/value group: its query heads' rows of Q and
    columns of O and one head of K and V, removable as a whole) and a ``heads`` site of its query
    heads, a soft view of the groups' parameters. ``head_rewrite`` names a
    :func:`register_head_rewrite` rewrite that removes heads from ``module`` in place of the
    generic one. ``soft_reason`` says why the heads cannot be removed physically (they are then
    only masked); ``""``: they can."""

    o: str
    module: str
    residual: str
    head_dim: int
    q: str = ""
    k: str = ""
    v: str = ""
    qkv: str = ""
    query_per_kv: int = 1
    head_rewrite: str = ""
    soft_reason: str = ""

    def __post_init__(self):
        if bool(self.qkv) == bool(self.q or self.k or self.v) or not (self.qkv or (self.q and self.k and self.v)):
            raise ValueError("an attention spec names q, k and v, or one fused qkv")
        if self.query_per_kv > 1 and self.qkv:
            raise ValueError("grouped-query attention needs separate q, k and v projections")


@dataclass(frozen=True, kw_only=True)
class StackSpec:
    """The layers of one stack (their module paths, in order) and what each of them has."""

    stack: str
    layers: tuple[str, ...]
    ffn: FFNSpec | None = None
    attention: AttentionSpec | None = None


def _at(layer: str, name: str) -> str:
    return f"{layer}.{name}" if name else layer


def _ffn_site(model: nn.Module, stack: str, i: int, lp: str, spec: FFNSpec) -> UnitSite:
    from mtprune import layers

    out = _at(lp, spec.out_proj)
    norm = None if spec.output_norm is None else (_at(lp, spec.output_norm) if spec.output_norm else "")
    return UnitSite(stack=stack, layer=i, kind="ffn", n_units=layers.in_features(model.get_submodule(out)),
                    width=1, out_proj=out, in_proj=tuple(InProj(_at(lp, x)) for x in spec.in_proj),
                    layer_path=lp, residual=_at(lp, spec.residual), output_norm=norm)


def _attention_sites(model: nn.Module, stack: str, i: int, lp: str, spec: AttentionSpec) -> list[UnitSite]:
    from mtprune import layers

    out = _at(lp, spec.o)
    n_heads = layers.in_features(model.get_submodule(out)) // spec.head_dim
    common = dict(stack=stack, layer=i, out_proj=out, attn_module=_at(lp, spec.module), layer_path=lp,
                  residual=_at(lp, spec.residual))
    soft = dict(hard_prunable=not spec.soft_reason, soft_reason=spec.soft_reason)
    if spec.query_per_kv <= 1:
        in_proj = ((InProj(_at(lp, spec.qkv), chunks=3),) if spec.qkv else
                   tuple(InProj(_at(lp, x)) for x in (spec.q, spec.k, spec.v)))
        return [UnitSite(kind="heads", n_units=n_heads, width=spec.head_dim, in_proj=in_proj,
                         head_rewrite=spec.head_rewrite, **soft, **common)]
    ratio, q = spec.query_per_kv, InProj(_at(lp, spec.q))
    n_kv = layers.out_features(model.get_submodule(_at(lp, spec.k))) // spec.head_dim
    kv_rows = tuple(InProj(_at(lp, x), width=spec.head_dim) for x in (spec.k, spec.v))
    return [
        UnitSite(kind="heads", n_units=n_heads, width=spec.head_dim, in_proj=(q,), hard_prunable=False,
                 view_of="kv", soft_reason=f"each key/value head is shared by {ratio} query heads", **common),
        UnitSite(kind="kv", n_units=n_kv, width=ratio * spec.head_dim, in_proj=(q, *kv_rows), heads_per_unit=ratio,
                 head_rewrite=spec.head_rewrite, **soft, **common),
    ]


def build_sites(model: nn.Module, stacks: Iterable[StackSpec]) -> list[UnitSite]:
    """The unit sites of ``model`` from its format's specs: per stack, per layer, its FFN neurons
    then its attention heads (and key/value groups)."""
    sites = []
    for spec in stacks:
        for i, lp in enumerate(spec.layers):
            if spec.ffn is not None:
                sites.append(_ffn_site(model, spec.stack, i, lp, spec.ffn))
            if spec.attention is not None:
                sites += _attention_sites(model, spec.stack, i, lp, spec.attention)
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
