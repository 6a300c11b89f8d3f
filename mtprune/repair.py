"""Training-free repair of a pruned model: each pruned block's output projection refit so that the
block's output plus residual matches the dense model's, layer by layer from the input.

:func:`repair` takes the dense adapter, a mask and calibration rows (any rows with the task's
fields; no labels are read) and returns a new, hard-pruned adapter whose out projections (FFN down
projections, attention output projections) are refit; the input adapter is not changed.

How it runs (after Kwon et al. 2022's mask tuning):

0. Of the calibration rows, those up to ``RepairSettings.max_tokens`` tokens are read (32,768 by
   default, spread over the draw: :func:`cap_tokens`): the dense targets below are kept for every
   pruned site at once, so the tokens bound the memory (tokens x width x 2 bytes per site) and the
   time, which grow with them.
1. One forward pass of the dense model over the calibration batches records, for every layer, the
   arguments it is called with (attention masks, position embeddings...) and the first layer's
   hidden states; which tokens are padding comes from the attention mask each stack receives.
   The same pass keeps, for every pruned site, the dense out projection's output ``o_d`` plus
   its residual stream ``r_d`` (float16, padding tokens left out).
2. Layer by layer from the input, the pruned layer is run on its own hidden states (the outputs of
   its already repaired layers: earlier repairs feed later ones). For each pruned site of the layer
   (the attention first, then the FFN) the run gives the out projection's input ``x`` (kept units)
   and the residual stream ``r_p``, and stops there (the rest of the layer is not computed). The
   target of the pruned out projection is ``t = o_d + r_d - r_p``: then the block's output plus
   residual, before any layer norm, equals the dense one.
3. Over the batches, ``X^T X`` and ``X^T T`` (``X`` with a column of ones for the bias) are summed
   in float64, padding tokens left out, never all tokens in memory; every fifth calibration row
   goes to held-out batches instead.
4. A solver proposes new weights (below) for each damping; the one with the smallest held-out
   reconstruction error wins and is refit on all batches, unless none beats the unrepaired
   projection on the held-out batches: then the site is left as it was.

Variants (``RepairSettings``; after Kwon et al.'s code): ``pooled_last`` fits the last layer's sites
on the first token only (the one an encoder's classifier reads); ``target="intermediate"`` fits
every layer to the model of a ``teacher`` mask (the same scores at the square root of the budget)
instead of the dense one, while the final check still compares with the dense outputs;
``skip_first_attention`` leaves the first layer's attention as pruned.

Solvers (``RepairSettings.solver``) are registered objects, one module each in
:mod:`mtprune.solvers` (``none``, ``bias``, ``scale``, ``lsq``); every verb, config and page reads
that registry.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from mtprune.errors import MtpruneError
from mtprune.masks import Mask
from mtprune.solvers import get_solver

DAMPINGS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
STACK_ORDER = ("encoder", "decoder")
KIND_ORDER = ("heads", "kv", "ffn")  # in a layer, attention comes first


TARGETS = ("dense", "intermediate")
CALIB_TOKENS = 32768  # calibration tokens a repair reads at most (the default of RepairSettings.max_tokens)
# the variants of the layer-wise fit (--repair-variant), each a set of RepairSettings fields
VARIANTS = {
    "standard": {},
    "pooled-last": {"pooled_last": True},
    "intermediate": {"target": "intermediate"},
    "skip-first-attention": {"skip_first_attention": True},
    "kwon": {"pooled_last": True, "target": "intermediate", "skip_first_attention": True},
}


@dataclass(frozen=True)
class RepairSettings:
    """How to repair: the solver (a name in :mod:`mtprune.solvers`), the dampings tried, the share
    of held-out rows, the calibration tokens read at most, and the variant of the layer-wise fit:

    * ``pooled_last``: the last layer's sites fit only the first token, the one an encoder's
      classifier pools (Kwon et al. fit only [CLS] in the last FFN);
    * ``target``: ``dense`` (the dense model's outputs) or ``intermediate`` (those of the mask of
      the same scores at the square root of the budget, Kwon's target; :func:`repair` takes it as
      ``teacher``);
    * ``skip_first_attention``: the first layer's attention is left as pruned (as Kwon's code does).
    """

    solver: str = "lsq"
    dampings: tuple[float, ...] = DAMPINGS
    holdout_every: int = 5  # every n-th calibration row is held out (dampings, and the final check)
    batch_size: int = 32
    max_tokens: int | None = CALIB_TOKENS  # None: every row; bounds the dense targets' memory and the time
    pooled_last: bool = False
    target: str = "dense"
    skip_first_attention: bool = False

    def __post_init__(self):
        get_solver(self.solver)  # one line naming the registered solvers when unknown
        if not self.dampings or any(d < 0 for d in self.dampings):
            raise MtpruneError(f"dampings must be 0 or more, not {self.dampings}")
        if self.holdout_every < 2:
            raise MtpruneError(f"holdout_every must be at least 2, not {self.holdout_every}")
        if self.batch_size < 1:
            raise MtpruneError(f"the batch size must be at least 1, not {self.batch_size}")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                                            or self.max_tokens < 1):
            raise MtpruneError(f"the calibration tokens must be a whole number of at least 1, not {self.max_tokens!r}")
        if self.target not in TARGETS:
            raise MtpruneError(f"unknown repair target {self.target!r}; targets: {', '.join(TARGETS)}")
        for f in ("pooled_last", "skip_first_attention"):
            if not isinstance(getattr(self, f), bool):
                raise MtpruneError(f"{f} is true or false, not {getattr(self, f)!r}")

    @classmethod
    def of(cls, solver: str = "lsq", variant: str | None = None, **kw) -> "RepairSettings":
        """Settings from a solver and a variant name or several joined by commas
        (``pooled-last,intermediate``; :data:`VARIANTS`)."""
        return cls(solver=solver, **parse_variant(variant), **kw)

    @property
    def variant(self) -> str:
        """The variant's name: ``standard``, ``kwon``, or its parts joined by ``+``."""
        parts = [n for n, f in VARIANTS.items() if len(f) == 1 and all(getattr(self, k) == v for k, v in f.items())]
        if len(parts) == 3:
            return "kwon"
        return "+".join(parts) or "standard"

    def describe(self) -> str:
        """The variant in words (``last layer on the pooled token; ...``), ``standard`` for none."""
        parts = (["last layer on the pooled token"] if self.pooled_last else []) + \
            (["target: the mask at the square root of the budget"] if self.target == "intermediate" else []) + \
            (["first layer's attention left as pruned"] if self.skip_first_attention else [])
        return "; ".join(parts) or "standard"

    def to_dict(self) -> dict:
        return {**asdict(self), "variant": self.variant}

    def variant_facts(self) -> dict:
        """What a repaired model's description records of these settings."""
        return {"variant": self.variant, "described": self.describe(), "pooled_last": self.pooled_last,
                "target": self.target, "skip_first_attention": self.skip_first_attention,
                "max_tokens": self.max_tokens}

    @property
    def refits(self) -> bool:
        """False for ``none``: the model is only hard-pruned."""
        return get_solver(self.solver).refits


def parse_variant(text: str | None) -> dict:
    """RepairSettings fields of a variant name, or of several joined by commas; one line for an unknown one."""
    out: dict = {}
    for name in [n.strip() for n in (text or "standard").split(",") if n.strip()] or ["standard"]:
        if name not in VARIANTS:
            raise MtpruneError(f"unknown repair variant {name!r}; variants: {', '.join(VARIANTS)}")
        out.update(VARIANTS[name])
    return out


@dataclass(frozen=True)
class SiteRepair:
    """What repair did at one site: ``changed`` False when the unrepaired projection was kept
    (``why``); errors are held-out squared errors relative to the target's energy."""

    site: str
    solver: str
    changed: bool
    damping: float | None
    error_before: float
    error_after: float
    why: str = ""

    def to_dict(self) -> dict:
        return {"site": self.site, "method": self.solver, **{k: v for k, v in asdict(self).items()
                                                            if k not in ("site", "solver")}}


@dataclass(frozen=True)
class RepairReport:
    solver: str
    calibration_rows: int
    tokens: int
    seconds: float
    sites: tuple[SiteRepair, ...] = field(default_factory=tuple)
    kl_before: float | None = None  # held-out mean KL(dense || pruned) without repair
    kl_after: float | None = None  # ... with the repair (kept only when lower)
    calibration: dict | None = None  # where the calibration rows came from (mtprune.calibration.Drawn.describe)
    variant: dict | None = None  # how the layers were fit (RepairSettings.variant_facts), the teacher's budget
    rows_drawn: int | None = None  # rows offered, when the token cap read fewer (calibration_rows)

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.sites)

    def to_dict(self) -> dict:
        # files say "method", as they did before solvers had a name of their own
        return {"method": self.solver, "calibration_rows": self.calibration_rows, "tokens": self.tokens,
                "seconds": round(self.seconds, 3), "changed": self.changed, "kl_before": self.kl_before,
                "kl_after": self.kl_after, "sites": [s.to_dict() for s in self.sites],
                **({"calibration": self.calibration} if self.calibration is not None else {}),
                **({"variant": self.variant} if self.variant is not None else {}),
                **({"rows_drawn": self.rows_drawn} if self.rows_drawn is not None else {})}

    def summary(self) -> str:
        if not get_solver(self.solver).refits:
            return "no repair"
        gain = [s.error_before - s.error_after for s in self.sites if s.changed]
        text = (f"repair {self.solver}: {self.changed} of {len(self.sites)} sites refit on {self.calibration_rows} "
                f"rows ({self.tokens} tokens) in {self.seconds:.1f} s")
        if self.rows_drawn is not None:
            text += (f" ({self.calibration_rows} of the {self.rows_drawn} rows drawn, spread over them: at most "
                     f"{self.variant.get('max_tokens') if self.variant else '?'} calibration tokens)")
        if self.variant is not None and self.variant.get("variant", "standard") != "standard":
            text += f"; variant {self.variant['variant']}: {self.variant['described']}"
        if gain:
            text += f"; held-out reconstruction error down by {np.mean(gain):.3f} on average"
        if self.kl_before is not None:
            text += (f"; held-out KL to the dense outputs {self.kl_before:.4g} -> "
                     f"{min(self.kl_after, self.kl_before):.4g}" + ("" if self.kl_after < self.kl_before else
                                                                    " (repair reverted)"))
        return text


# ----------------------------------------------------------------------------------------------
# calibration rows


def calibration_rows(task, n: int = 1024, split: str | None = None, data_file=None, seed: int = 0) -> list[dict]:
    """``n`` rows drawn with ``seed`` (uniformly: no labels are needed) from the task's train split,
    another split, or a JSONL file of the task's fields (labels optional); several sources with
    weights: :class:`mtprune.calibration.CalibrationMix`."""
    from mtprune.calibration import CalibrationMix
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise MtpruneError(f"--calib must be at least 1, not {n}")
    mix = CalibrationMix.of_files([data_file], int(n), seed) if data_file is not None else \
        CalibrationMix.of_task(task, int(n), split, seed)
    return [r for rows in mix.draw(task).rows.values() for r in rows]


# ----------------------------------------------------------------------------------------------
# recording the dense model's layer calls


def _cache_classes():
    try:
        from transformers.cache_utils import Cache

        return (Cache,)
    except ImportError:  # pragma: no cover
        return ()


def _stack_modules(adapter) -> dict[str, torch.nn.Module]:
    model = adapter.model
    if getattr(model.config, "is_encoder_decoder", False):
        return {"encoder": model.get_encoder(), "decoder": model.get_decoder()}
    return {"encoder" if adapter.unit_sites()[0].stack == "encoder" else "decoder": model}


@dataclass
class _Call:
    """One call of a stack's layers: the first layer's hidden states, every layer's other
    arguments, the token mask [B, T] (None: every token counts)."""

    stack: str
    hidden: torch.Tensor
    args: dict = field(default_factory=dict)  # layer index -> (args, kwargs) with the hidden states removed
    mask: torch.Tensor | None = None
    batch: dict | None = None  # the encoded batch (encoder calls of encoder-decoder models)
    source: "_Call | None" = None  # a decoder call: the encoder call whose output it attends to
    output: torch.Tensor | None = None  # an encoder call: the dense encoder's output (what decoders read)
    held_out: bool = False  # its rows choose the damping and check the repair, they are not fit


def _split_hidden(args, kwargs):
    if args:
        return args[0], ("args", args[1:], kwargs)
    return kwargs["hidden_states"], ("kwargs", args, {k: v for k, v in kwargs.items() if k != "hidden_states"})


def _call_layer(layer, rest, hidden):
    where, args, kwargs = rest
    out = layer(hidden, *args, **kwargs) if where == "args" else layer(*args, hidden_states=hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _record_calls(adapter, batches, layer_paths: dict[str, list[str]], sites,
                  pooled: frozenset = frozenset()) -> tuple[list[_Call], list, dict]:
    """Run the dense model on every batch, recording each stack call's layer inputs, the dense
    logits of every batch, and every site's target ``o_d + r_d`` per call (float16, padding left
    out; only the first token of the sites named in ``pooled``): the dense model then need not run
    again."""
    model = adapter.model
    caches = _cache_classes()
    stacks = _stack_modules(adapter)
    calls: list[_Call] = []
    current: dict[str, _Call] = {}
    pending_mask: dict[str, torch.Tensor | None] = {}
    current_batch: dict = {}
    handles = []
    targets: dict[str, list] = {s.name: [] for s in sites}
    residuals: dict[str, torch.Tensor] = {}

    def res_pre(site):
        from mtprune.units import first_tensor

        def hook(mod, args, kwargs):
            residuals[site.name] = first_tensor(args, kwargs)
        return hook

    def out_post(site):
        def hook(mod, args, out):
            t = out + residuals.pop(site.name)
            m = current[site.stack].mask
            targets[site.name].append((_first(t, m) if site.name in pooled else _tokens(t, m)).to(torch.float16))
        return hook

    def stack_pre(stack):
        def hook(mod, args, kwargs):
            m = kwargs.get("attention_mask")
            pending_mask[stack] = m if isinstance(m, torch.Tensor) and m.dim() == 2 else None
        return hook

    def stack_post(stack):
        def hook(mod, args, kwargs, out):
            if stack == "encoder" and "encoder" in current:
                current["encoder"].output = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
        return hook

    def layer_pre(stack, i):
        def hook(mod, args, kwargs):
            args = tuple(None if caches and isinstance(v, caches) else v for v in args)
            kwargs = {k: (None if caches and isinstance(v, caches) else v) for k, v in kwargs.items()}
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            hidden, rest = _split_hidden(args, kwargs)
            if i == 0:
                call = _Call(stack, hidden.detach(), mask=pending_mask.get(stack),
                             batch=current_batch.get("batch") if stack == "encoder" else None,
                             source=current.get("encoder") if stack == "decoder" else None,
                             held_out=current_batch["held_out"])
                calls.append(call)
                current[stack] = call
            current[stack].args[i] = rest
        return hook

    try:
        for stack, mod in stacks.items():
            handles.append(mod.register_forward_pre_hook(stack_pre(stack), with_kwargs=True))
            handles.append(mod.register_forward_hook(stack_post(stack), with_kwargs=True))
        for stack, paths in layer_paths.items():
            for i, p in enumerate(paths):
                handles.append(model.get_submodule(p).register_forward_pre_hook(layer_pre(stack, i), with_kwargs=True))
        for site in sites:
            handles.append(model.get_submodule(site.residual).register_forward_pre_hook(res_pre(site), with_kwargs=True))
            handles.append(model.get_submodule(site.out_proj).register_forward_hook(out_post(site)))
        logits = []
        with torch.inference_mode():
            for task, chunk, held_out in batches:
                batch = adapter.encode(chunk, task)
                current_batch["batch"] = batch
                current_batch["held_out"] = held_out
                logits.append(adapter.logits(batch, task).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return calls, logits, targets


# ----------------------------------------------------------------------------------------------
# statistics


class _Stats:
    """Sums over tokens for one site: ``G = X^T X``, ``C = X^T T`` (X with a ones column), ``T^T T``,
    for the fitting batches and the held-out ones."""

    def __init__(self, k: int, d: int):
        self.G = [torch.zeros(k + 1, k + 1, dtype=torch.float64) for _ in range(2)]
        self.C = [torch.zeros(k + 1, d, dtype=torch.float64) for _ in range(2)]
        self.tt = [0.0, 0.0]
        self.n = [0, 0]

    def add(self, x: torch.Tensor, t: torch.Tensor, held_out: bool) -> None:
        i = int(held_out)
        x = torch.cat([x.float(), torch.ones(len(x), 1, dtype=torch.float32, device=x.device)], 1)
        t = t.float()
        self.G[i] += (x.T @ x).double().cpu()
        self.C[i] += (x.T @ t).double().cpu()
        self.tt[i] += float(t.double().pow(2).sum())
        self.n[i] += len(x)

    def all(self):
        return self.G[0] + self.G[1], self.C[0] + self.C[1]


def _error(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, tt: float) -> float:
    """``||X W^T - T||^2`` from the sums, ``W`` = [d, k + 1] (weights, then bias)."""
    return float((W @ G * W).sum() - 2 * (W * C.T).sum() + tt)


def _skipped(stats: _Stats, W0: torch.Tensor, settings: RepairSettings, name: str, why: str) -> tuple[torch.Tensor, SiteRepair]:
    """W0 kept without a fit (``why``), with its held-out error."""
    base = _error(W0, stats.G[1], stats.C[1], stats.tt[1]) / max(stats.tt[1], 1e-30)
    return W0, SiteRepair(name, settings.solver, False, None, base, base, why)


def _fit(stats: _Stats, W0: torch.Tensor, settings: RepairSettings, width: int, name: str) -> tuple[torch.Tensor, SiteRepair]:
    """The chosen weights [d, k + 1] (W0 when nothing beats it on the held-out batches): the solver
    proposes weights for each damping on the fitting batches, the held-out error picks one, and the
    winner is refit on all batches."""
    solver = get_solver(settings.solver)
    Gf, Cf = stats.G[0], stats.C[0]
    Gh, Ch, tth = stats.G[1], stats.C[1], stats.tt[1]
    energy = max(tth, 1e-30)
    base = _error(W0, Gh, Ch, tth) / energy
    kept = lambda lam, why: (W0, SiteRepair(name, solver.name, False, lam, base, base, why))  # noqa: E731
    if stats.n[1] == 0 or stats.n[0] == 0:
        return kept(None, "too few calibration rows")
    candidates = []
    for lam in (settings.dampings if solver.damped else (None,)):
        W = solver.fit(Gf, Cf, W0, width=width, damping=lam)
        if W is not None and torch.isfinite(W).all():
            candidates.append((lam, W))
    scored = [(_error(W, Gh, Ch, tth) / energy, lam) for lam, W in candidates]
    if not scored:
        return kept(None, "no stable solution")
    err, lam = min(scored, key=lambda e: e[0])
    if not err < base:
        return kept(lam, "the held-out error did not improve")
    G, C = stats.all()
    W = solver.fit(G, C, W0, width=width, damping=lam)
    if W is None or not torch.isfinite(W).all():
        return kept(lam, "the refit on all batches failed")
    return W, SiteRepair(name, solver.name, True, lam, base, err)


# ----------------------------------------------------------------------------------------------
# the layer-wise pass


class _Stop(Exception):
    """Raised by a capture hook once it has what it needs: the rest of the layer is not run."""


@contextmanager
def _capture(model, site, store: dict, want_output: bool, stop: bool = False):
    """Hooks that record the out projection's input (and output) and the residual's input of the
    pruned model's layer; with ``stop``, :class:`_Stop` is raised as soon as both inputs are
    recorded (the out projection and the rest of the layer are not computed)."""
    from mtprune.units import first_tensor

    handles = []

    def check():
        if stop and not want_output and "x" in store and "r" in store:
            raise _Stop

    def out_pre(mod, args):
        store["x"] = args[0].detach()
        check()

    def out_post(mod, args, out):
        store["o"] = out.detach()

    def res_pre(mod, args, kwargs):
        store["r"] = first_tensor(args, kwargs).detach()
        check()

    try:
        handles.append(model.get_submodule(site.out_proj).register_forward_pre_hook(out_pre))
        if want_output:
            handles.append(model.get_submodule(site.out_proj).register_forward_hook(out_post))
        handles.append(model.get_submodule(site.residual).register_forward_pre_hook(res_pre, with_kwargs=True))
        yield store
    finally:
        for h in handles:
            h.remove()


def _first(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, ...] -> [B, ...]: the first token of every row (the one an encoder's classifier pools)."""
    if mask is not None and tuple(mask.shape) == tuple(t.shape[:2]) and not bool(mask[:, 0].bool().all()):
        raise MtpruneError("the last layer cannot be fit on the pooled token: the tokenizer pads on the left, "
                           "so the first token of some rows is padding")
    return t[:, 0]


def _tokens(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, ...] -> [tokens, ...] without padding (every token when ``mask`` is None or does not fit)."""
    if mask is not None and t.dim() >= 3 and tuple(mask.shape) == tuple(t.shape[:2]):
        return t[mask.to(t.device).bool()]
    return t.reshape(-1, t.shape[-1])


def _out_weight(model, site) -> torch.Tensor:
    """The out projection as [d, k + 1]: its weight [out, in], then its bias (zeros when none)."""
    from mtprune import layers

    mod = model.get_submodule(site.out_proj)
    W = layers.weight_out_in(mod).detach().double().cpu()
    b = mod.bias.detach().double().cpu() if layers.has_bias(mod) else torch.zeros(W.shape[0], dtype=torch.float64)
    return torch.cat([W, b[:, None]], 1)


def _set_out_weight(model, site, W: torch.Tensor) -> None:
    from mtprune import layers

    mod = model.get_submodule(site.out_proj)
    w = layers.weight_out_in(mod)
    new_b = W[:, -1].to(w.dtype) if layers.has_bias(mod) else None
    layers.set_module(model, site.out_proj, layers.make_linear(W[:, :-1].to(device=w.device, dtype=w.dtype),
                                                                None if new_b is None else new_b.to(w.device), mod))


def repair(adapter, mask: Mask, calibration, task=None, settings: RepairSettings | None = None, *,
           progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
           origin: dict | None = None, teacher: Mask | None = None):
    """``(pruned and repaired adapter, RepairReport)``: ``adapter`` hard-pruned by ``mask``, its
    pruned sites' out projections refit (see the module's docstring).

    ``calibration`` is a list of rows of ``task`` (their fields are read, not their labels), or
    ``{task: rows}`` for a model several tasks share (a key: a task name or a
    :class:`~mtprune.tasks.TaskSpec`, as read through another task's head); of them, rows up to
    ``settings.max_tokens`` tokens are read (:func:`cap_tokens`). ``origin`` says where the rows
    came from (:meth:`mtprune.calibration.Drawn.describe`): the report and the pruned model's
    description record it. ``teacher``: the mask whose model's outputs are the targets, with
    ``settings.target == "intermediate"`` (:func:`mtprune.pipeline.intermediate_mask`); the final
    check still compares with the dense model. The solver ``none`` only prunes. A mask that
    prunes heads the model cannot remove physically (T5, grouped key/value heads) is an error, as
    in :func:`mtprune.pruning.hard_prune`: prune and repair their FFN neurons.
    """
    from mtprune.pruning import hard_prune, site_sizes

    settings = settings or RepairSettings()
    if settings.refits and (teacher is None) == (settings.target == "intermediate"):
        raise MtpruneError("the intermediate repair target needs the mask of the same scores at the square root of "
                           "the budget (give scores and a budget, not a mask file)" if teacher is None else
                           "a teacher mask is read only with the intermediate repair target")
    per_task = _calibration_by_task(adapter, calibration, task)
    n_rows = sum(len(r) for r in per_task.values())
    t0 = time.perf_counter()
    pruned = hard_prune(adapter, mask)
    if not settings.refits:
        return pruned, RepairReport(settings.solver, n_rows, 0, time.perf_counter() - t0)
    if n_rows == 0:
        raise MtpruneError("the calibration set is empty")
    dense_sizes = site_sizes(adapter)
    # a view (the query heads of removed key/value groups) shares its out projection with its owner
    cut = [s for s in pruned.unit_sites() if s.n_units < dense_sizes[s.name] and not s.view_of]
    if not cut:
        return pruned, RepairReport(settings.solver, n_rows, 0, time.perf_counter() - t0)
    dense_sites = {s.name: s for s in adapter.unit_sites()}
    layer_paths: dict[str, list[str]] = {}
    for s in sorted(adapter.unit_sites(), key=lambda s: (STACK_ORDER.index(s.stack), s.layer)):
        paths = layer_paths.setdefault(s.stack, [])
        if s.layer_path not in paths:
            paths.append(s.layer_path)
    pooled = _pooled_sites(adapter, cut, layer_paths) if settings.pooled_last else frozenset()
    per_task = cap_tokens(adapter, per_task, settings.max_tokens)
    n_read = sum(len(r) for r in per_task.values())
    batches = _calibration_batches(adapter, per_task, settings)
    was = adapter.model.training
    adapter.model.eval()
    try:
        calls, dense_logits, targets = _targets(adapter, batches, layer_paths, [dense_sites[s.name] for s in cut],
                                                pooled, teacher)
        original = {s.name: _out_weight(pruned.model, s) for s in cut}
        reports, fitted, tokens = _layerwise(pruned, calls, targets, cut, layer_paths, settings, progress, log, pooled)
        reports, fidelity = _guard(pruned, batches, dense_logits, cut, original, fitted, reports, log)
    finally:
        adapter.model.train(was)
    variant = {**settings.variant_facts(), **({"teacher_budget": teacher.meta.get("budget")} if teacher else {})}
    report = RepairReport(settings.solver, n_read, tokens, time.perf_counter() - t0, tuple(reports),
                          kl_before=fidelity[0], kl_after=fidelity[1], calibration=origin, variant=variant,
                          rows_drawn=n_rows if n_read < n_rows else None)
    _record(pruned, report)
    return pruned, report


def _guard(pruned, batches, dense_logits, cut, original, fitted, reports, log):
    """``(reports, (KL before, KL after))``: the whole repair must bring the held-out outputs closer
    to the dense model's than no repair does; else every site goes back to its pruned weights."""
    held = [i for i, b in enumerate(batches) if b[2]]
    if not (fitted and held):
        return reports, (None, None)
    after = _fidelity(pruned, batches, dense_logits, held)
    _apply(pruned, cut, original)
    before = _fidelity(pruned, batches, dense_logits, held)
    if after < before:
        _apply(pruned, cut, fitted)
    else:
        reports = [replace(r, changed=False, why="reverted: the held-out outputs moved away from the "
                           "dense model's") if r.changed else r for r in reports]
        if log:
            log(f"  repair reverted: held-out KL to the dense outputs {after:.4g} with it, {before:.4g} without")
    return reports, (before, after)


def _pooled_sites(adapter, cut, layer_paths) -> frozenset:
    """The names of the pruned sites of the last layer, which ``pooled_last`` fits on the first
    token only: only an encoder's classifier reads that token alone."""
    if set(layer_paths) != {"encoder"} or getattr(adapter.model.config, "is_encoder_decoder", False):
        raise MtpruneError(f"the pooled-last repair fits the first token, the one an encoder's classifier reads; "
                           f"{adapter.display_name} is not an encoder classifier")
    last = len(layer_paths["encoder"]) - 1
    return frozenset(s.name for s in cut if s.layer == last)


def cap_tokens(adapter, per_task: dict, max_tokens: int | None) -> dict:
    """``{task: rows}`` holding at most ``max_tokens`` tokens (padding left out; each task keeps its
    share of the tokens), unchanged when they fit. The rows kept are spread over each task's list
    (a golden-ratio order: a mix's later sources are not cut first) and stay in their order."""
    from mtprune.batching import token_lengths

    if max_tokens is None:
        return per_task
    lengths = {t: np.asarray(token_lengths(adapter, t, rows), dtype=np.int64) for t, rows in per_task.items()}
    total = int(sum(v.sum() for v in lengths.values()))
    if total <= max_tokens:
        return per_task
    out = {}
    for t, rows in per_task.items():
        share = max_tokens * lengths[t].sum() / total
        order = np.argsort((np.arange(len(rows)) * 0.6180339887498949) % 1.0, kind="stable")
        n = max(int(np.searchsorted(np.cumsum(lengths[t][order]), share, side="right")), 1)
        out[t] = [rows[i] for i in sorted(order[:n])]
    return out


def _targets(adapter, batches, layer_paths, sites, pooled, teacher):
    """:func:`_record_calls` of the dense model, or, given a ``teacher`` mask, of the dense model with
    the teacher's units switched off (the targets), plus the dense logits of the held-out batches."""
    if teacher is None:
        return _record_calls(adapter, batches, layer_paths, sites, pooled)
    from mtprune.pruning import soft_prune

    with soft_prune(adapter, teacher):
        calls, _, targets = _record_calls(adapter, batches, layer_paths, sites, pooled)
    with torch.inference_mode():
        logits = [adapter.logits(adapter.encode(chunk, t), t).float().cpu() if held else None
                  for t, chunk, held in batches]
    return calls, logits, targets


def _calibration_by_task(adapter, calibration, task) -> dict:
    """``{TaskSpec: rows}`` from a list of ``task``'s rows or ``{task: rows}``, each row checked
    for the task's fields (their labels are not read)."""
    from mtprune.tasks import get_task

    if not isinstance(calibration, dict):
        if task is None:
            raise ValueError("calibration rows need their task")
        calibration = {task.name if hasattr(task, "name") else task: calibration}
    per_task = {get_task(t) if isinstance(t, str) else t: [dict(r) for r in rows] for t, rows in calibration.items()}
    for t, rows in per_task.items():
        adapter.head_for(t)
        missing = sorted({f for r in rows for f in t.fields if f not in r})
        if missing:
            raise MtpruneError(f"the calibration rows lack the field(s) {', '.join(missing)} that task {t.name} needs")
    return per_task


def _calibration_batches(adapter, per_task: dict, settings: RepairSettings) -> list[tuple]:
    """``(task, batch, held_out)`` in order: every n-th row of every task is held out; the tasks'
    batches are dealt in turn."""
    from mtprune.batching import batches_for

    queues = []
    for t, rows in per_task.items():
        rows = [{f: r[f] for f in t.fields} for r in rows]
        k = settings.holdout_every
        for held_out in (False, True):
            part = [r for i, r in enumerate(rows) if (i % k == k - 1) == held_out]
            queues.append([(t, b, held_out) for b in batches_for(t, part, settings.batch_size, adapter=adapter)])
    queues = [q for q in queues if q]
    return [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]


def _record(pruned, report: RepairReport) -> None:
    """The pruned model's config says how it was repaired (saved with it)."""
    from mtprune.pruning import PRUNED_KEY

    entry = dict(getattr(pruned.model.config, PRUNED_KEY, None) or {})
    entry["repair"] = {"method": report.solver, "calibration_rows": report.calibration_rows,
                       "sites_refit": report.changed, "sites": len(report.sites)}
    if report.calibration is not None:
        entry["repair"]["calibration"] = report.calibration
    if report.variant is not None:
        entry["repair"]["variant"] = report.variant
    if report.rows_drawn is not None:
        entry["repair"]["rows_drawn"] = report.rows_drawn
    setattr(pruned.model.config, PRUNED_KEY, entry)
    pruned._fingerprint = None


def _layerwise(pruned, calls, targets, cut, layer_paths, settings, progress, log, pooled=frozenset()):
    pmodel = pruned.model
    by_layer: dict[tuple, list] = {}
    for s in cut:
        by_layer.setdefault((s.stack, s.layer), []).append(s)
    reports, fitted = [], {}
    tokens = 0
    steps = sum(len(p) for p in layer_paths.values())
    done = 0
    enc_out: dict[int, torch.Tensor] = {}  # id(encoder call) -> the pruned encoder's output
    with torch.inference_mode():
        for stack in STACK_ORDER:
            if stack not in layer_paths:
                continue
            mine = [c for c in calls if c.stack == stack]
            _read_pruned_encoder(mine, enc_out)
            pruned_h = [c.hidden for c in mine]
            for li, path in enumerate(layer_paths[stack]):
                player = pmodel.get_submodule(path)
                sites = sorted(by_layer.get((stack, li), []), key=lambda s: KIND_ORDER.index(s.kind))
                need_next = li + 1 < len(layer_paths[stack]) or (stack == "encoder" and "decoder" in layer_paths)
                next_h = None
                for s in sites:  # attention first: the FFN's inputs come after its repair
                    # the layer's last site, an FFN whose output plus residual is the layer's output (up to
                    # a norm): its inputs give the next layer's hidden states without running it again
                    ends = s is sites[-1] and s.kind == "ffn" and s.output_norm is not None and need_next
                    W0, stats, kept = _site_stats(pmodel, player, s, mine, li, pruned_h, targets[s.name],
                                                  s.name in pooled, ends)
                    if settings.skip_first_attention and li == 0 and s.kind != "ffn":
                        W, rep = _skipped(stats, W0, settings, s.name, "skipped: the first layer's attention")
                    else:
                        W, rep = _fit(stats, W0, settings, s.width, s.name)
                    if ends:
                        norm = pmodel.get_submodule(s.output_norm) if s.output_norm else (lambda t: t)
                        out = pmodel.get_submodule(s.out_proj)
                        wt = W.to(out.weight.dtype) if rep.changed else None
                        next_h = [norm((x @ wt[:, :-1].T + wt[:, -1] if wt is not None else out(x)) + r)
                                  for x, r in kept]
                    if rep.changed:
                        _set_out_weight(pmodel, s, W)
                        fitted[s.name] = W
                    reports.append(rep)
                    targets[s.name] = None  # used: free the memory
                    tokens = max(tokens, sum(stats.n))
                    if log:
                        log(f"  {s.name}: {'refit' if rep.changed else 'kept'} (held-out error {rep.error_before:.4f}"
                            f" -> {rep.error_after:.4f}{', damping %g' % rep.damping if rep.damping is not None else ''})"
                            f"{'' if rep.changed else ': ' + rep.why}")
                if next_h is not None:
                    pruned_h = next_h
                elif need_next:
                    pruned_h = [_call_layer(player, c.args[li], pruned_h[ci]) for ci, c in enumerate(mine)]
                done += 1
                if progress:
                    progress(done, steps)
            if stack == "encoder" and "decoder" in layer_paths:
                enc = pmodel.get_encoder()
                for c in mine:
                    if c.batch is not None:
                        enc_out[id(c)] = enc(input_ids=c.batch["input_ids"], attention_mask=c.batch["attention_mask"])[0]
    return reports, fitted, tokens


def _read_pruned_encoder(calls, enc_out: dict) -> None:
    """Decoder calls' cross-attention reads the pruned encoder's output instead of the dense one."""
    for c in calls:
        if c.source is not None and id(c.source) in enc_out and c.source.output is not None:
            old, new = c.source.output, enc_out[id(c.source)]
            for i, (where, args, kw) in list(c.args.items()):
                c.args[i] = (where, tuple(new if a is old else a for a in args),
                             {k: (new if v is old else v) for k, v in kw.items()})


def _site_stats(pmodel, player, site, calls, li, pruned_h, targets, pooled: bool, keep_inputs: bool):
    """``(W0, sums, inputs)`` of one site: the pruned layer run on its own hidden states of every call,
    up to the site's out projection (the rest is not computed); its input ``x`` and residual ``r``
    (the first token only when ``pooled``) against the call's target; ``inputs``: each call's whole
    ``(x, r)`` when ``keep_inputs``."""
    W0 = _out_weight(pmodel, site)
    stats = _Stats(W0.shape[1] - 1, W0.shape[0])
    kept = []
    for ci, c in enumerate(calls):
        st: dict = {}
        with _capture(pmodel, site, st, False, stop=True):
            try:
                _call_layer(player, c.args[li], pruned_h[ci])
            except _Stop:
                pass
        if pooled:
            x, r = st["x"][:, 0], st["r"][:, 0]
        else:
            x, r = _tokens(st["x"], c.mask), _tokens(st["r"], c.mask)
        stats.add(x, targets[ci].float() - r, held_out=c.held_out)
        if keep_inputs:
            kept.append((st["x"], st["r"]))
    return W0, stats, kept


def _apply(pruned, sites, weights: dict) -> None:
    for s in sites:
        if s.name in weights:
            _set_out_weight(pruned.model, s, weights[s.name])


def _fidelity(adapter, batches, dense_logits, held) -> float:
    """Mean KL(dense || model) of the label distributions over the held-out batches' rows."""
    total, n = 0.0, 0
    with torch.inference_mode():
        for i in held:
            task, chunk, _ = batches[i]
            lp = adapter.logits(adapter.encode(chunk, task), task).float().cpu().log_softmax(-1)
            ld = dense_logits[i].log_softmax(-1)
            total += float((ld.exp() * (ld - lp)).sum())
            n += len(lp)
    return total / max(n, 1)
