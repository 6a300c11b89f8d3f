"""``mtprune eval``: a model's metrics on a task split (or a JSONL file of the task's schema)."""

from mtprune.commands.common import add_model_args, print_json, progress_bar
from mtprune.errors import MtpruneError


def register(sub):
    p = sub.add_parser("eval", help="evaluate a model on a task split")
    add_model_args(p)
    p.add_argument("--split", default=None, help="default: the task's validation split")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-file", default=None, help="a JSONL file of the task's schema to evaluate instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    from mtprune.checkpoints import load_adapter
    from mtprune.evaluation import evaluate
    from mtprune.tasks import get_task, load_rows, rows_as_list

    task = get_task(args.task)
    if args.limit is not None and args.limit < 1:
        raise MtpruneError(f"--limit must be at least 1, not {args.limit}")
    split = args.split or task.default_split
    ds = load_rows(task, split, data_file=args.data_file)
    adapter = load_adapter(args.model, device=args.device, trust_remote_code=args.trust_remote_code,
                           precision=args.precision)
    adapter.head_for(task)
    rows = rows_as_list(ds, args.limit)
    with progress_bar(f"eval {task.name}/{split}", total=len(rows)) as progress:
        res = evaluate(adapter, task, split, rows=rows, batch_size=args.batch_size, progress=progress)
    if args.json:
        print_json(res.to_dict())
    else:
        def with_interval(m):
            lo, hi = res.interval(m)
            return f"{m} {res.metrics[m]:.4f} (95% {lo:.4f}-{hi:.4f})"

        print(f"{res.task}/{res.split}  n={res.n}  " + "  ".join(with_interval(m) for m in res.metrics)
              + f"  ({res.seconds:.1f} s, model {res.model}, head {res.head})")
    return 0
