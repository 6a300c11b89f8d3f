"""FLOPs counted by running a model: torch's FLOP counter over one forward pass, with attention's
QK^T and AV added from the head counts where the CPU's fused attention hides them. The tests and
benchmarks check the library's cost model (:mod:`mtprune.costs`) against it."""

from __future__ import annotations


def count_flops(adapter, batch: dict, task) -> int:
    """Matmul FLOPs of one forward pass of ``batch`` (``torch.utils.flop_counter`` for Linear layers
    and whatever matmuls it sees; attention's QK^T and AV added from the head counts when the CPU's
    fused attention hides them from the counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        adapter.logits(batch, task)
    counted = int(fc.get_total_flops())
    ops = {str(k) for k in fc.get_flop_counts().get("Global", {})}
    if not any("attention" in o or "bmm" in o for o in ops):
        counted += attention_flops(adapter, batch)
    return counted


def attention_flops(adapter, batch: dict) -> int:
    """FLOPs of QK^T and AV for a batch of ``input_ids``: ``4 B T^2 w`` per head."""
    b, t = batch["input_ids"].shape
    return sum(4 * b * t * t * s.n_units * s.width for s in adapter.unit_sites()
               if s.kind == "heads")  # every query head once (a grouped model's groups hold the same heads)
