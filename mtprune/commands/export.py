"""``mtprune export``: a model (dense or pruned) and one task as an ONNX directory that runs
without mtprune (onnxruntime, or any ONNX runtime)."""

from mtprune.commands.common import add_model_args, print_json


def register(sub):
    p = sub.add_parser(
        "export", help="export a model and one task's head to ONNX (mtprune eval --model OUT runs it)",
        description="Write OUT with model.onnx (token ids in, the task's logits out; dynamic batch and sequence "
                    "axes; a pruned model's own layer sizes), the tokenizer and mtprune_onnx.json (task, labels, "
                    "mask, the logit check against PyTorch, the accuracy measured on the graph).")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="the output format (onnx)")
    p.add_argument("--out", required=True, help="the output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--optimize", action="store_true",
                   help="run onnxruntime's transformer optimizer (BERT fusions) on the graph; measured like the rest")
    p.add_argument("--quantize", default=None, choices=("int8",), help="dynamic int8 quantisation of the weights")
    p.add_argument("--no-eval", action="store_true", help="do not measure the exported graph's accuracy")
    p.add_argument("--eval-limit", type=int, default=None, help="measure on the first N validation rows only")
    p.add_argument("--json", action="store_true", help="print the description (mtprune_onnx.json) as JSON")
    p.set_defaults(func=run)


def run(args):
    import json

    from mtprune.checkpoints import load_adapter
    from mtprune.experiments.core import check_at_least
    from mtprune.export import export_onnx
    from mtprune.formats.onnxrt import META_FILE
    from mtprune.tasks import get_task

    task = get_task(args.task)
    if args.eval_limit is not None:
        check_at_least(args.eval_limit, "--eval-limit")
    adapter = load_adapter(args.model, device="cpu", trust_remote_code=args.trust_remote_code)
    log = (lambda m: None) if args.json else print
    out = export_onnx(adapter, task, args.out, overwrite=args.overwrite, optimize=args.optimize,
                      quantize=args.quantize, evaluate=not args.no_eval, evaluate_limit=args.eval_limit, log=log)
    meta = json.loads((out / META_FILE).read_text())
    if args.json:
        print_json({"out": str(out), **meta})
    else:
        size = (out / "model.onnx").stat().st_size
        print(f"wrote {out} (model.onnx {size / 1e6:.1f} MB); run it: mtprune eval --model {out} --task {task.name}")
    return 0
