from mtprune import assets
from mtprune.commands import print_json


def register(sub):
    p = sub.add_parser("models", help="list the models under MTPRUNE_HOME/models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args):
    models = assets.list_models()
    for m in models:
        try:
            import json
            from pathlib import Path

            meta = json.loads((Path(m["path"]) / "tasks.json").read_text())
            m["tasks"] = list(meta.get("tasks", {}))
        except (OSError, ValueError):
            m["tasks"] = []
    if args.json:
        print_json({"home": str(assets.home()) if assets.home() else None, "models": models})
        return 0
    if not models:
        print("no models found: set MTPRUNE_HOME to a folder with models/")
        return 0
    for m in models:
        print(f"{m['name']:16}{m['format']:11}{','.join(m['tasks']):40}{m['path']}")
    return 0
