"""``mtprune tasks``: every task's suite, labels, local splits and metrics."""

from dataclasses import asdict

from mtprune.commands.common import print_json
from mtprune.tasks import task_table


def register(sub):
    p = sub.add_parser("tasks", help="list the tasks, their labels, splits and metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args):
    rows = task_table()
    if args.json:
        print_json([asdict(r) for r in rows])
        return 0
    print(f"{'task':14}{'suite':11}{'labels':42}{'local splits':28}metrics")
    for r in rows:
        labels = "/".join(r.labels)
        via = f" (via {'/'.join(r.task_heads)})" if r.suite == "unseen" else ""
        print(f"{r.name:14}{r.suite:11}{labels[:40]:42}{','.join(r.local_splits) or '-':28}{','.join(r.metrics)}{via}")
    return 0
