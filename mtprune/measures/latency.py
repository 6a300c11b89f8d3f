"""``latency``: seconds per example, from a table measured on this machine (:func:`latency_table`:
the dense model against copies with half the FFN neurons or half the heads removed, at batch 32
and the task's average length); measured once per model, length and thread count."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from mtprune.measures.base import Measure, per_group, register_measure


def latency_table(adapter, task, seq_len: int, batch_size: int = 32, repeats: int = 5, cache: bool = True) -> dict:
    """Seconds per example of each unit kind on this machine: the dense model timed against copies
    with half of every layer's FFN neurons or heads removed (random masks, hard pruning), at
    ``batch_size`` x ``seq_len`` tokens, medians of interleaved runs. Stored in the cache folder
    per model, length and thread count, so it is measured once."""
    import os
    import platform

    import torch

    from mtprune.assets import cache_dir
    from mtprune.io import atomic_write_text, stable_hash
    from mtprune.masks import mask_from_scores
    from mtprune.pruning import hard_prune, hard_prune_problem
    from mtprune.units import KINDS, canonical_kinds, group_parts, group_sites

    ident = {"model": adapter.fingerprint(), "seq_len": int(seq_len), "batch": batch_size,
             "threads": torch.get_num_threads(), "device": str(adapter.device), "machine": platform.machine(),
             "cpus": os.cpu_count()}
    path = cache_dir() / "latency" / f"{stable_hash(ident, 24)}.json"
    if cache and path.is_file():
        try:
            table = json.loads(path.read_text())
            for k in ("seconds_per_example", "per_unit"):  # tables that name kv by its old spelling
                table[k] = {canonical_kinds(kind): v for kind, v in table[k].items()}
            return table
        except (ValueError, KeyError, AttributeError):
            pass
    rng = np.random.default_rng(0)
    shapes = {g: (len(ss), max(s.n_units for s in ss)) for g, ss in group_sites(adapter.unit_sites()).items()}
    scores = {"arrays": {g: rng.random(sh) for g, sh in shapes.items()},
              "n_units": {g: [s.n_units for s in ss] for g, ss in group_sites(adapter.unit_sites()).items()}}
    rows = [{f: " ".join(["word"] * max(1, int(seq_len) - 2)) for f in task.fields} | {"label": 0}
            for _ in range(batch_size)]
    batch = adapter.encode(rows, task)
    models = {"dense": adapter}
    removed = {}
    for kind in KINDS:
        if kind not in [group_parts(g)[1] for g in shapes]:
            continue
        mask = mask_from_scores(scores, 0.5, kinds=kind)
        if hard_prune_problem(adapter, mask):
            continue
        models[kind] = hard_prune(adapter, mask)
        removed[kind] = mask.total() - mask.kept()
    times = {k: [] for k in models}

    def once(a):
        with torch.inference_mode():
            t0 = time.perf_counter()
            a.logits(batch, task)
            return time.perf_counter() - t0

    for a in models.values():
        once(a)  # warm-up
    for _ in range(repeats):
        for k, a in models.items():
            times[k].append(once(a))
    med = {k: float(np.median(v)) / batch_size for k, v in times.items()}
    per_unit = {k: max(med["dense"] - med[k], 0.0) / removed[k] for k in removed}
    table = {"seconds_per_example": med, "per_unit": per_unit, **ident}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=1))
    return table


@dataclass(frozen=True)
class Latency(Measure):
    def costs(self, adapter, seq_len=None, task=None, *, table: dict | None = None, **options):
        """``table``: a :func:`latency_table` already measured (else it is measured for ``task``)."""
        if table is None:
            if task is None or seq_len is None:
                raise ValueError("latency costs need a latency table, or a task and a length to measure one at")
            table = latency_table(adapter, task, int(round(seq_len)))
        return per_group(adapter, lambda s: table["per_unit"][s.kind])


register_measure(Latency("latency", label="latency", help="seconds per example, measured on this machine",
                         measured=True))
