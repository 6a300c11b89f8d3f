"""One module per CLI verb; each offers ``register(subparsers)`` and sets ``func`` on its parser."""

import json
import sys


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")


def add_model_args(p, task: bool = True) -> None:
    p.add_argument("--model", default="default", help="default, a local model directory or a hub id")
    if task:
        p.add_argument("--task", required=True, help="a task name (see `mtprune tasks`)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with a hub model")
