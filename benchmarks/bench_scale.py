"""Scale: attribution, a budgeted hard prune and repair on decoders of today's shapes, random weights.

A decoder of a named shape (``--config llama-1b`` is Llama-3.2-1B's, also ``qwen-0.5b``,
``llama-8b``, and ``tiny``/``small`` for a CPU) is built with random weights on the device, in the
compute dtype (bf16 on a GPU by default), and fed rows of random vocabulary words of ``--length``
tokens. Timed, with the peak memory torch held beyond the model (CUDA's counters on a GPU,
torch's profiler on the CPU, where it slows the run: ``--no-peak`` skips it):

1. ``ap`` over every MLP neuron, query head and key/value group, ``--examples`` rows, passes of at
   most ``--pass-tokens`` tokens (examples/s);
2. a budgeted hard prune: one FLOPs budget (``--budget flops:0.5``) over MLP neurons and key/value
   groups of all layers (Kwon et al.'s search), then the layers sliced;
3. a least-squares repair of the pruned model on ``--calib`` rows.

Goal (issue 13), one H200: every MLP neuron of ``llama-1b`` attributed over 1,000 examples of 100
tokens in under 10 s, ``llama-8b`` in under 2 minutes. A model larger than the device's free memory
stops before it is built, with what it needs and what there is.

    python benchmarks/bench_scale.py --config llama-1b --examples 1000 --length 100 [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse(argv=None):
    from mtprune_dev.synthetic import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help=f"the decoder's shape: {', '.join(SHAPES)}")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="compute dtype (auto: bfloat16 on a GPU, float32 on the CPU)")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--length", type=int, default=100, help="tokens of random words per example")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per pass at most (the token budget binds first)")
    p.add_argument("--pass-tokens", type=int, default=None, help="tokens per pass (default: mtprune's for the device)")
    p.add_argument("--budget", default="flops:0.5")
    p.add_argument("--calib", type=int, default=32, help="calibration rows for the repair (0: no repair)")
    p.add_argument("--no-peak", action="store_true", help="do not measure peak memory (faster on the CPU)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def run(args) -> dict:
    import contextlib

    import torch

    from mtprune.attribution import AttributionSpec, attribute
    from mtprune.costs import search_mask, unit_costs
    from mtprune.errors import MtpruneError
    from mtprune.formats import resolve_device
    from mtprune import batching
    from mtprune.memory import GB, available_bytes, human_bytes
    from mtprune.pruning import hard_prune
    from mtprune.repair import RepairSettings, repair
    from mtprune_dev.memory import PeakMemory
    from mtprune_dev.synthetic import build_decoder, parameter_count, random_rows, shape_config

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("examples", "length", "batch_size"):
        if getattr(args, name) < 1:
            raise MtpruneError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    cfg = shape_config(args.config)
    n_params = parameter_count(cfg)
    need = n_params * (4 if dtype == "float32" else 2)
    have = available_bytes(device)
    if need * 1.2 > have:
        raise MtpruneError(f"{args.config} needs about {human_bytes(need)} for its {n_params / 1e9:.2f}B parameters in "
                           f"{dtype} (more to attribute), and {device} has {human_bytes(have)} free")
    if args.pass_tokens:
        batching.PASS_TOKENS[device.type] = args.pass_tokens
    peak = (lambda: contextlib.nullcontext(type("P", (), {"peak": None})())) if args.no_peak else \
        (lambda: PeakMemory(device))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    adapter = build_decoder(args.config, str(device), dtype)
    sync()
    build_s = time.perf_counter() - t0
    rows = random_rows("sst2", args.examples, args.length, cfg.vocab_size, seed=1)
    sites = adapter.unit_sites()
    out = {"config": args.config, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "dtype": dtype, "parameters": n_params,
           "mlp_neurons": sum(s.n_units for s in sites if s.kind == "ffn"),
           "kv_groups": sum(s.n_units for s in sites if s.kind == "kv"),
           "query_heads": sum(s.n_units for s in sites if s.kind == "heads"),
           "examples": args.examples, "length": args.length, "pass_tokens": batching.pass_tokens(adapter),
           "build_s": round(build_s, 2)}
    spec = AttributionSpec(task="sst2", method="ap", examples=args.examples, kinds="all")
    attribute(adapter, spec, rows=rows[: min(8, len(rows))], batch_size=args.batch_size)  # warm-up
    sync()
    with peak() as pm:
        t0 = time.perf_counter()
        scores = attribute(adapter, spec, rows=rows, batch_size=args.batch_size)
        sync()
        secs = time.perf_counter() - t0
    out.update(attribute_s=round(secs, 3), examples_per_s=round(args.examples / secs, 1),
               attribute_peak_gb=None if pm.peak is None else round(pm.peak / GB, 3))
    with peak() as pm:
        t0 = time.perf_counter()
        costs = unit_costs(adapter, "flops", args.length)
        mask = search_mask(scores, args.budget, costs, kinds="all")
        small = hard_prune(adapter, mask)
        sync()
        secs = time.perf_counter() - t0
    out.update(prune_s=round(secs, 3), prune_peak_gb=None if pm.peak is None else round(pm.peak / GB, 3),
               budget=args.budget, flops_kept=round(mask.meta["cost_fraction_kept"], 4),
               parameters_pruned=small.num_parameters(),
               kept={g: mask.kept(g) for g in mask.groups}, total={g: mask.total(g) for g in mask.groups})
    del small
    if args.calib:
        calib = random_rows("sst2", args.calib, args.length, cfg.vocab_size, seed=2)
        with peak() as pm:
            t0 = time.perf_counter()
            _, report = repair(adapter, mask, calib, "sst2", RepairSettings("lsq", batch_size=min(args.batch_size, 64)))
            sync()
            secs = time.perf_counter() - t0
        out.update(repair_s=round(secs, 3), repair_peak_gb=None if pm.peak is None else round(pm.peak / GB, 3),
                   repair_sites=len(report.sites), repair_refit=report.changed)
    return out


def main(argv=None) -> int:
    from mtprune.errors import MtpruneError

    args = parse(argv)
    try:
        out = run(args)
    except MtpruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['config']} on {out['device']} ({out['dtype']}, {out['threads']} threads): {out['parameters']:,} "
          f"parameters, {out['mlp_neurons']} MLP neurons, {out['kv_groups']} key/value groups, "
          f"{out['query_heads']} query heads; built in {out['build_s']} s")
    peak = (lambda k: "" if out.get(k) is None else f", peak {out[k]:.3f} GB beyond the model")
    print(f"attribution (ap, every unit): {out['examples']} examples x {out['length']} tokens in "
          f"{out['attribute_s']} s = {out['examples_per_s']} examples/s (passes of {out['pass_tokens']} tokens)"
          f"{peak('attribute_peak_gb')}")
    print(f"budgeted hard prune ({out['budget']}): {out['prune_s']} s, FLOPs kept {out['flops_kept']}, "
          f"{out['parameters']:,} -> {out['parameters_pruned']:,} parameters{peak('prune_peak_gb')}")
    if "repair_s" in out:
        print(f"repair (lsq): {out['repair_s']} s, {out['repair_refit']} of {out['repair_sites']} sites refit"
              f"{peak('repair_peak_gb')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
