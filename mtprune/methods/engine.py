"""What the gradient methods share: the gate gradients of ``ap``, ``ig``, ``fisher`` and
``random-label``, their objectives, and IG's steps batched into one pass. Batches themselves (length
order, the token bound of a pass, this process's share) are :mod:`mtprune.batching`'s.

Every unit's activation ``h`` is multiplied by a per-example *gate* of ones; the gradient of
``sum_b target_b`` with respect to ``gate[b, i]`` is ``sum over tokens of h_i * d target_b / d h_i``:
example ``b``'s attribution of unit ``i``, for every unit of every layer, from ONE forward and
backward pass per batch. IG scales the gates along the path ``alpha = k / steps``; several of its
steps run as one repeated batch, up to a token budget per pass (:data:`IG_PASS_TOKENS`, which also
bounds memory).

Distributed runs (torchrun) form the batches first and give every rank every N-th batch
(:func:`mtprune.batching.batches_for`); methods add the partial sums with :func:`mtprune.distributed.all_reduce_sum`,
so the scores do not depend on the number of processes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from mtprune import distributed
from mtprune.batching import batch_len, batch_tokens, batches_for
from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec
from mtprune.units import site_hooks

Progress = Callable[[int, int], None]  # (examples done, examples in all) on this process

# IG runs several of its steps in one pass (the batch repeated) up to this many tokens (rows x
# length) per pass. On a CPU larger passes gain nothing once a pass has a few hundred tokens (and
# lose to memory traffic), so steps are batched there for small example batches only; a GPU
# wants large passes.
IG_PASS_TOKENS = {"cpu": 1024, "cuda": 65536}


def _repeat_batch(batch: dict, k: int) -> dict:
    """The batch ``k`` times over along the batch dimension: rows ``[b0..bB, b0..bB, ...]``."""
    if k == 1:
        return batch
    out = {}
    for name, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            out[name] = torch.cat([v] * k, dim=0)
        elif isinstance(v, list):
            out[name] = v * k
        else:
            out[name] = v
    return out


def label_probs(adapter, task: TaskSpec, batch: dict) -> torch.Tensor:
    """[B, n_labels] probabilities of the task's labels (softmax, or exp of label-word log-probs)."""
    logits = adapter.logits(batch, task).float()
    return logits.exp() if adapter.logits_are_logprobs else logits.softmax(-1)


def objective_gold(adapter, task, batch, spec):
    if "labels" not in batch:
        raise MtpruneError(f"the examples of {task.name} have no labels: use --unsupervised")
    p = label_probs(adapter, task, batch)
    return p.gather(1, batch["labels"].view(-1, 1).to(p.device))


def objective_gold_log(adapter, task, batch, spec):
    """log P(gold): its gradient is minus the cross-entropy loss's."""
    if "labels" not in batch:
        raise MtpruneError(f"the examples of {task.name} have no labels")
    logits = adapter.logits(batch, task).float()
    logp = logits if adapter.logits_are_logprobs else logits.log_softmax(-1)
    return logp.gather(1, batch["labels"].view(-1, 1).to(logp.device))


def objective_all(adapter, task, batch, spec):
    return label_probs(adapter, task, batch)


def objective_control(adapter, task, batch, spec):
    return adapter.control_logprob(batch, task, spec.seed).float().exp().view(-1, 1)


def _gate_grads(adapter, task, batch, spec, sites, objective, alphas: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """For each target of ``objective``: ``{site: d(sum_rows target)/d gate  [rows, n_units]}``
    with every gate of row r set to ``alphas[r]``. One forward; one backward per target."""
    dev = adapter.device
    rows = batch_len(batch)
    gates = {
        s.name: alphas.to(device=dev, dtype=torch.float32).view(-1, 1).expand(rows, s.n_units).clone().requires_grad_(True)
        for s in sites
    }

    def fn(site, x):
        g = gates[site.name]
        if x.dim() < 3 or x.shape[0] != rows:
            raise RuntimeError(f"unexpected activation shape {tuple(x.shape)} at {site.name} (batch {rows})")
        return x * g.view(rows, *([1] * (x.dim() - 3)), site.n_units, 1).to(x.dtype)

    names = list(gates)
    with torch.inference_mode(False), torch.enable_grad(), site_hooks(adapter.model, sites, fn):
        out = objective(adapter, task, batch, spec)  # [rows, K]
        k = out.shape[1]
        res = []
        for t in range(k):
            grads = torch.autograd.grad(out[:, t].sum(), [gates[n] for n in names],
                                        retain_graph=t < k - 1, allow_unused=True)
            res.append({n: (g if g is not None else torch.zeros_like(gates[n])).detach()
                        for n, g in zip(names, grads)})
    return res


REDUCTIONS = ("abs", "signed", "square")


def gradient_scores(adapter, task, rows, spec, sites, *, objective, alphas: Sequence[float],
                    batch_size: int = 32, progress: Progress | None = None,
                    reduce: str | None = None, fold_of: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Gradient x activation (``alphas == [1]``) or IG (``alphas = k/m``) summed over examples.

    Per example the attribution is the mean over ``alphas`` of the gate gradient. ``reduce``
    (default: the spec's variant) sums over examples its magnitude (``abs``), its value
    (``signed``) or its square (``square``: the diagonal Fisher information when the objective is
    the log-likelihood). With several targets (``--unsupervised``) the targets' scores are added:
    ``sum_c sum_b |A_bc|`` (abs) or ``sum_c |sum_b A_bc|`` (signed, Eq. 10 as written).

    ``fold_of`` (one fold index per row): the sums are kept per fold, ``{site: [folds, n_units]}``,
    from the same batches as without folds (each example's contribution goes to its fold's row),
    so folds cost nothing beyond the totals.
    """
    reduce = reduce or spec.variant
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, not {reduce!r}")
    alphas_t = torch.tensor(list(alphas), dtype=torch.float32)
    m = len(alphas_t)
    acc: dict[str, torch.Tensor] = {}
    n_folds = 1
    where: dict[int, int] = {}
    if fold_of is not None:
        if len(fold_of) != len(rows):
            raise ValueError(f"fold_of has {len(fold_of)} entries for {len(rows)} rows")
        rows = [dict(r) for r in rows]  # distinct objects: a row's fold is looked up by identity
        where = {id(r): int(f) for r, f in zip(rows, fold_of)}
        n_folds = max(fold_of) + 1 if len(fold_of) else 1
    mine = batches_for(task, rows, batch_size, adapter=adapter)
    total = sum(len(b) for b in mine)
    done = 0
    for chunk_rows in mine:
        batch = adapter.encode(chunk_rows, task)
        b = batch_len(batch)
        budget = IG_PASS_TOKENS.get(adapter.device.type, IG_PASS_TOKENS["cpu"])
        per_pass = max(1, min(m, budget // max(1, batch_tokens(batch)))) if m > 1 else 1
        pe: list[dict[str, torch.Tensor]] | None = None  # per target, per site: [b, n] sums over alphas
        for s0 in range(0, m, per_pass):
            a = alphas_t[s0 : s0 + per_pass]
            k = len(a)
            rep = _repeat_batch(batch, k)
            grads = _gate_grads(adapter, task, rep, spec, sites, objective, a.repeat_interleave(b))
            summed = [{n: g.view(k, b, -1).sum(0).double() for n, g in gt.items()} for gt in grads]
            if pe is None:
                pe = summed
            else:
                for t, gt in enumerate(summed):
                    for n in gt:
                        pe[t][n] += gt[n]
            if progress and m > 1 and s0 + k < m:  # IG: report within the batch, pass by pass
                progress(done + (len(chunk_rows) * (s0 + k)) // m, total)
        folds_b = torch.tensor([where.get(id(r), 0) for r in chunk_rows], dtype=torch.long)
        for t, gt in enumerate(pe):
            for n, g in gt.items():
                a_b = g / m  # per-example attribution [b, n]
                per_row = (a_b.abs() if reduce == "abs" else a_b.pow(2) if reduce == "square" else a_b).cpu()
                key = f"{n}|{t}"
                if key not in acc:
                    acc[key] = torch.zeros(n_folds, per_row.shape[1], dtype=torch.float64)
                acc[key].index_add_(0, folds_b, per_row)
        done += len(chunk_rows)
        if progress:
            progress(done, total)
    if not acc:  # this rank had no batch: contribute zeros
        n_targets = task.num_labels if spec.unsupervised else 1
        acc = {f"{s.name}|{t}": torch.zeros(n_folds, s.n_units, dtype=torch.float64)
               for s in sites for t in range(n_targets)}
    acc = distributed.all_reduce_sum(acc)
    out = {}
    for s in sites:
        per_target = [acc[k] for k in sorted((k for k in acc if k.split("|")[0] == s.name), key=lambda k: int(k.split("|")[1]))]
        stacked = torch.stack(per_target)  # [targets, folds, n]
        if reduce == "signed" and len(per_target) > 1:
            stacked = stacked.abs()
        summed = stacked.sum(0)
        out[s.name] = summed.numpy() if fold_of is not None else summed[0].numpy()
    return out
