"""Batches: rows in length order, the tokens a row feeds its model, the bound on tokens a pass may
hold, this process's batches, and the padding of a pass.

Every pass that reads examples (attribution, repair's calibration, evaluation, the cost counts)
batches through here. Rows are sorted by length so that a batch pads little; a batch holds at
most ``batch_size`` rows and, given the adapter, at most :data:`PASS_TOKENS` tokens (rows x the
longest row), which is what bounds a pass's memory.

Distributed runs (torchrun) form the batches first and give every rank every N-th batch
(:func:`batches_for`), so an example is computed in the same batch, with the same padding,
whatever the number of processes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

from mtprune import distributed
from mtprune.tasks import TaskSpec

# Tokens (rows x padded length) one forward and backward pass may hold, whatever the batch size:
# activations kept for the backward pass grow with them, not with the number of examples. On the
# CPU the default never binds at batch 32 (32 x 256 tokens); a GPU takes larger passes.
PASS_TOKENS = {"cpu": 8192, "cuda": 32768}


def pass_tokens(adapter) -> int:
    return PASS_TOKENS.get(adapter.device.type, PASS_TOKENS["cpu"])


def _row_len(task: TaskSpec, row: dict) -> int:
    return sum(len(str(row.get(f, ""))) for f in task.fields)


def length_order(task: TaskSpec, rows: Sequence[dict]) -> list[int]:
    """The rows' indices, shortest text first (ties in row order)."""
    return sorted(range(len(rows)), key=lambda i: (_row_len(task, rows[i]), i))


def token_lengths(adapter, task: TaskSpec, rows: Sequence[dict], chunk: int = 256) -> list[int]:
    """The number of tokens the adapter feeds its model for each row (padding left out)."""
    out: list[int] = []
    for s in range(0, len(rows), chunk):
        batch = adapter.encode(list(rows[s: s + chunk]), task)
        if isinstance(batch.get("attention_mask"), torch.Tensor):
            out += [int(x) for x in batch["attention_mask"].sum(1).tolist()]
        elif isinstance(batch.get("prompt_ids"), list):
            out += [len(p) for p in batch["prompt_ids"]]
        else:
            out += [batch_tokens(batch) // max(1, batch_len(batch))] * batch_len(batch)
    return out


def batches_for(task: TaskSpec, rows: Sequence[dict], batch_size: int, adapter=None,
                max_tokens: int | None = None) -> list[list[dict]]:
    """This process's batches: rows sorted by length, cut into batches of at most ``batch_size``
    rows and, given the ``adapter``, at most ``max_tokens`` (default :data:`PASS_TOKENS`) tokens
    (rows x the longest row; a longer row goes alone); every N-th batch for rank r of N (all of
    them in one process)."""
    order = length_order(task, rows)
    budget = max_tokens or (pass_tokens(adapter) if adapter is not None else None)
    if budget is None or budget >= batch_size * getattr(adapter, "max_length", budget + 1):
        # the budget cannot bind: batch_size rows of the longest input fit in it
        batches = [[rows[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
        return distributed.shard(batches)
    lengths = token_lengths(adapter, task, rows)
    batches, cur, longest = [], [], 0
    for i in order:
        n = max(longest, lengths[i])
        if cur and (len(cur) + 1 > batch_size or (len(cur) + 1) * n > budget):
            batches.append(cur)
            cur, n = [], lengths[i]
        cur.append(rows[i])
        longest = n
    if cur:
        batches.append(cur)
    return distributed.shard(batches)


def batch_len(batch: dict) -> int:
    """The number of rows of an encoded batch."""
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
        if isinstance(v, (list, tuple)):
            return len(v)
    raise RuntimeError("cannot tell the batch size of an encoded batch")


def batch_tokens(batch: dict) -> int:
    """Tokens in an encoded batch, padding included (rows x length)."""
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return int(ids.numel())
    prompts = batch.get("prompt_ids")
    if isinstance(prompts, list) and prompts:
        return len(prompts) * max(len(p) for p in prompts)
    return batch_len(batch)


@contextmanager
def token_masks(adapter, sites):
    """Capture the attention mask each stack is called with: ``masks[stack]`` ([B, T] or None),
    so that sums over tokens can leave padding out."""
    model = adapter.model
    masks: dict[str, torch.Tensor | None] = {}
    stacks = {s.stack for s in sites}
    targets = {}
    if getattr(model.config, "is_encoder_decoder", False):
        if "encoder" in stacks:
            targets["encoder"] = model.get_encoder()
        if "decoder" in stacks:
            targets["decoder"] = model.get_decoder()
    else:  # the base model (a causal LM's adapter may run it without its output layer)
        base = getattr(model, "base_model", None)
        targets = {st: base if isinstance(base, torch.nn.Module) else model for st in stacks}
    handles = []

    def hook_for(stack):
        def pre(mod, args, kwargs):
            masks[stack] = kwargs.get("attention_mask")
        return pre

    try:
        for st, mod in targets.items():
            handles.append(mod.register_forward_pre_hook(hook_for(st), with_kwargs=True))
        yield masks
    finally:
        for h in handles:
            h.remove()
