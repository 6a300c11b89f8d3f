"""``activation``: how strongly a unit fires on the task's examples."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import Method, register_method


@dataclass(frozen=True)
class MeanActivation(Method):
    """Mean ``|h|`` over examples and non-padding tokens (and, for a head, over its dimensions)."""

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        import torch

        from mtprune import distributed
        from mtprune.batching import batches_for, token_masks
        from mtprune.units import site_hooks

        sums = {s.name: torch.zeros(s.n_units, dtype=torch.float64) for s in sites}
        counts = {s.name: torch.zeros(1, dtype=torch.float64) for s in sites}

        with token_masks(adapter, sites) as masks:
            def fn(site, x):
                a = x.detach().abs().float().mean(-1)  # [..., n_units]
                m = masks.get(site.stack)
                if m is not None and a.dim() == 3 and tuple(m.shape) == tuple(a.shape[:2]):
                    w = m.to(device=a.device, dtype=a.dtype)
                    sums[site.name] += (a * w.unsqueeze(-1)).sum((0, 1)).double().cpu()
                    counts[site.name] += float(w.sum())
                else:
                    flat = a.reshape(-1, site.n_units)
                    sums[site.name] += flat.sum(0).double().cpu()
                    counts[site.name] += flat.shape[0]
                return None

            mine = batches_for(task, rows, batch_size, adapter=adapter)
            total = sum(len(b) for b in mine)
            done = 0
            with torch.no_grad(), site_hooks(adapter.model, sites, fn):
                for chunk in mine:
                    adapter.logits(adapter.encode(chunk, task), task)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        red = distributed.all_reduce_sum({**{f"s|{k}": v for k, v in sums.items()},
                                          **{f"c|{k}": v for k, v in counts.items()}})
        return {s.name: (red[f"s|{s.name}"] / red[f"c|{s.name}"].clamp(min=1)).numpy() for s in sites}


ACTIVATION = register_method(MeanActivation(
    "activation", label="activation", needs_labels=False, uses_variant=False, baseline=True, additive=False,
    help="the unit's mean |activation| on the task's examples (a baseline)"))
