"""``mtprune export``: a model (dense or pruned) and one task as a directory that runs without the
rest: ONNX (onnxruntime, or any ONNX runtime), or a model directory holding that task's head alone;
both named after the model, task, method, mask and repair, both with a model card (README.md)."""

from mtprune.commands.common import add_model_args, print_json


def register(sub):
    p = sub.add_parser(
        "export", help="export a model and one task's head: ONNX, or a one-task model directory, with a model card",
        description="--format onnx writes OUT with model.onnx (token ids in, the task's logits out; dynamic batch "
                    "and sequence axes; a pruned model's own layer sizes), the tokenizer, mtprune_onnx.json (task, "
                    "labels, mask, the logit check against PyTorch, the accuracy measured on the graph) and "
                    "README.md. --format model writes a model directory with the task's head alone (a stock "
                    "sequence classifier where the model allows), its config, the mask and README.md (source, "
                    "mask, repair, measured accuracy with its 95% interval, parameters and FLOPs kept, how to "
                    "load it). OUT defaults to the export's name, as minilm-l6-mt6-sst2-ap-flops50-lsq.")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=("onnx", "model"),
                   help="onnx (default) or model: a model directory with the task's head alone")
    p.add_argument("--out", default=None,
                   help="the output directory (default: the export's name, model-task-method-mask-repair, with "
                        "-onnx for ONNX, in the current directory)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--optimize", action="store_true",
                   help="ONNX: run onnxruntime's transformer optimizer (BERT fusions) on the graph; measured like "
                        "the rest")
    p.add_argument("--quantize", default=None, choices=("int8",), help="ONNX: dynamic int8 quantisation of the weights")
    p.add_argument("--no-eval", action="store_true",
                   help="do not measure the export's accuracy (the model card then says not measured, unless the "
                        "model's config records a measurement of it)")
    p.add_argument("--eval-limit", type=int, default=None, help="measure on the first N validation rows only")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args):
    from pathlib import Path

    from mtprune.checkpoints import load_adapter
    from mtprune.errors import MtpruneError
    from mtprune.experiments.core import check_at_least
    from mtprune.export import default_name
    from mtprune.tasks import get_task

    task = get_task(args.task)
    if args.eval_limit is not None:
        check_at_least(args.eval_limit, "--eval-limit")
    if args.format == "model" and (args.optimize or args.quantize):
        raise MtpruneError("--optimize and --quantize apply to --format onnx only")
    adapter = load_adapter(args.model, device="cpu", trust_remote_code=args.trust_remote_code)
    log = (lambda m: None) if args.json else print
    if args.out is None and getattr(adapter, "format", "") == "onnx":
        raise MtpruneError("this model is already an ONNX export")
    out = Path(args.out) if args.out else Path(default_name(adapter, task) + ("-onnx" if args.format == "onnx" else ""))
    return (_onnx if args.format == "onnx" else _model)(adapter, task, out, args, log)


def _onnx(adapter, task, out, args, log) -> int:
    import json

    from mtprune.export import export_onnx
    from mtprune.formats.onnxrt import META_FILE

    out = export_onnx(adapter, task, out, overwrite=args.overwrite, optimize=args.optimize,
                      quantize=args.quantize, evaluate=not args.no_eval, evaluate_limit=args.eval_limit, log=log)
    meta = json.loads((out / META_FILE).read_text())
    if args.json:
        print_json({"out": str(out), **meta})
    else:
        size = (out / "model.onnx").stat().st_size
        print(f"wrote {out} (model.onnx {size / 1e6:.1f} MB, README.md); run it: mtprune eval --model {out} "
              f"--task {task.name}")
    return 0


def _model(adapter, task, out, args, log) -> int:
    from mtprune.checkpoints import check_out_dir
    from mtprune.export import export_model
    from mtprune.formats import prunable

    prunable(adapter)
    check_out_dir(out, args.overwrite)  # before the evaluation: a taken --out fails at once
    measured = None
    if not args.no_eval:
        from mtprune.evaluation import evaluate

        res = evaluate(adapter, task, limit=args.eval_limit)
        log(f"measured {task.name}/{res.split}: accuracy {res.describe()}")
        measured = {task.name: res}
    out = export_model(adapter, task, out, measured=measured, overwrite=args.overwrite, log=log)
    if args.json:
        print_json({"out": str(out), "files": sorted(p.name for p in out.iterdir()),
                    "measured": {t: r.to_dict() for t, r in (measured or {}).items()}})
    else:
        print(f"run it: mtprune eval --model {out} --task {task.name} (README.md says how to load it without mtprune)")
    return 0
