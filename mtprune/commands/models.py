"""``mtprune models``: the models under MTPRUNE_HOME/models, their format and tasks."""

from mtprune.commands.common import print_json


def register(sub):
    p = sub.add_parser("models", help="list the models under MTPRUNE_HOME/models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args):
    from mtprune import assets
    from mtprune.checkpoints import list_models

    models = list_models()
    if args.json:
        print_json({"home": str(assets.home()) if assets.home() else None, "models": models})
        return 0
    if not models:
        print("no models found: set MTPRUNE_HOME to a folder with models/")
        return 0
    for m in models:
        print(f"{m['name']:16}{m['format']:11}{','.join(m['tasks']):40}{m['path']}")
    return 0
