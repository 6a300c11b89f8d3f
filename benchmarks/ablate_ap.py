"""What drives ap's ranking? Gradient x activation towards other targets, side by side.

For each task and sample seed, FFN scores from the same 256 class-balanced training examples
towards:

* ``prob``      - P(gold), the paper's target and mtprune's ``ap`` (abs);
* ``logprob``   - log P(gold) (the first-order Taylor criterion of the loss);
* ``log-odds``  - log P(gold) - log P(not gold);
* ``rotated``   - P(gold) under the task's own head turned by a seeded random rotation of the
                  pooled space (same norms and bias, random direction): a control that differs
                  from ``prob`` in the direction only;
* ``random-label`` - mtprune's control (a seeded random head, N(0, 1/d) weights);
* ``activation``   - mean |h|.

Each is turned into per-layer masks at sparsities 0.1-0.9 and evaluated (hard-pruned copies) on
the first ``--limit`` validation rows; the script prints each one's mean accuracy over the
sparsities, per task and seed, and the mean per target.

    python benchmarks/ablate_ap.py --tasks sst2,qnli --seeds 0,1,2 --limit 300
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from mtprune import attribution as A
from mtprune.experiments.core import EvalSettings, Runner
from mtprune.masks import mask_from_scores
from mtprune.checkpoints import load_adapter
from mtprune.formats import MultiTaskAdapter
from mtprune.methods.engine import gradient_scores
from mtprune.tasks import get_task

SPARSITIES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _gold_logprob(adapter, task, batch):
    lp = adapter.logits(batch, task).float().log_softmax(-1)
    return lp, batch["labels"].view(-1, 1).to(lp.device)


def obj_prob(adapter, task, batch, spec):
    lp, y = _gold_logprob(adapter, task, batch)
    return lp.gather(1, y).exp()


def obj_logprob(adapter, task, batch, spec):
    lp, y = _gold_logprob(adapter, task, batch)
    return lp.gather(1, y)


def obj_log_odds(adapter, task, batch, spec):
    lp, y = _gold_logprob(adapter, task, batch)
    other = lp.scatter(1, y, float("-inf")).logsumexp(1, keepdim=True)
    return lp.gather(1, y) - other


def obj_rotated(adapter, task, batch, spec):
    pooled = adapter.pooled(batch).float()
    head = adapter.task_heads[adapter.head_for(task)]
    g = torch.Generator().manual_seed(1000 + spec.seed)
    q, _ = torch.linalg.qr(torch.randn(pooled.shape[-1], pooled.shape[-1], generator=g))
    w = head.weight.float() @ q.to(pooled.device)
    lp = torch.log_softmax(pooled @ w.T + head.bias.float(), -1)
    return lp.gather(1, batch["labels"].view(-1, 1).to(lp.device)).exp()


GRADIENT_TARGETS = {"prob": obj_prob, "logprob": obj_logprob, "log-odds": obj_log_odds, "rotated": obj_rotated}
ALL = (*GRADIENT_TARGETS, "random-label", "activation")


def scores_for(adapter, task: str, kind: str, seed: int, examples: int):
    if kind in GRADIENT_TARGETS:
        spec = A.AttributionSpec(task=task, method="ap", examples=examples, seed=seed, kinds="ffn")
        sites = A.check_supported(adapter, spec)
        rows = A.sample_for(spec)
        adapter.model.eval()
        per_site = gradient_scores(adapter, spec.task_spec, rows, spec, sites,
                                     objective=GRADIENT_TARGETS[kind], alphas=[1.0])
        return A.assemble(spec, adapter.fingerprint(), sites, per_site)
    spec = A.AttributionSpec(task=task, method=kind, examples=examples, seed=seed, kinds="ffn")
    return A.attribute(adapter, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--tasks", default="sst2,mrpc,qnli,rte")
    p.add_argument("--targets", default=",".join(ALL), help=f"comma-separated: {', '.join(ALL)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--examples", "--samples", dest="examples", type=int, default=256)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in ALL]
    if bad:
        print(f"ablate_ap: unknown target {bad[0]!r}; targets: {', '.join(ALL)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    adapter = load_adapter(args.model)
    if not isinstance(adapter, MultiTaskAdapter):
        print("ablate_ap: the targets read a classifier head: use a multi-task model", file=sys.stderr)
        return 2
    runner = Runner(adapter, EvalSettings(limit=args.limit, prune="hard"), log=None)
    means: dict[str, list[float]] = {t: [] for t in targets}
    print("| task | target | seed | mean accuracy 0.1-0.9 | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.tasks.split(","):
        task = get_task(name)
        for kind in targets:
            for seed in seeds:
                t0 = time.perf_counter()
                sc = scores_for(adapter, task.name, kind, seed, min(args.examples, 250 if task.name == "cb" else args.examples))
                accs = [runner.evaluate(task, mask_from_scores(sc, s, scope="layer", kinds="ffn")).metrics["accuracy"]
                        for s in SPARSITIES]
                m = float(np.mean(accs))
                means[kind].append(m)
                print(f"| {task.name} | {kind} | {seed} | {m:.4f} | {time.perf_counter() - t0:.0f} |", flush=True)
    print("\n| target | mean over tasks and seeds |\n| --- | --- |")
    for kind in targets:
        print(f"| {kind} | {np.mean(means[kind]):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
