"""Scale: bounded memory of attribution, half-precision scores, memory checks before loading, and
the scale benchmark on a decoder of a small shape (random weights, built in code)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mtprune.attribution import AttributionSpec, attribute
from mtprune.errors import MtpruneError
from mtprune import batching
from mtprune.memory import check_fits, checkpoint_parameters, parse_bytes
from mtprune_dev.memory import PeakMemory
from mtprune_dev.synthetic import build_decoder, parameter_count, random_rows, shape_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = AttributionSpec(task="sst2", method="ap", examples=64, kinds="all")
# the stated bound: with passes of 512 tokens, attribution of every unit of the tiny decoder holds
# at most this many times the model's own size beyond it, however many examples it reads
PEAK_MULTIPLE = 10


@pytest.fixture(scope="module")
def tiny_decoder():
    return build_decoder("tiny")


def _model_bytes(adapter) -> int:
    return sum(p.numel() * p.element_size() for p in adapter.model.parameters())


def test_shapes_are_the_released_models():
    cfg = shape_config("llama-1b")
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (16, 8192, 32, 8)
    assert 1.23e9 < parameter_count(cfg) < 1.25e9  # Llama-3.2-1B: 1.24B
    assert 0.49e9 < parameter_count(shape_config("qwen-0.5b")) < 0.50e9  # Qwen2.5-0.5B: 0.494B
    with pytest.raises(MtpruneError, match="unknown config 'llama-2b'; configs: tiny, small"):
        shape_config("llama-2b")


def test_attribution_memory_is_bounded_by_the_token_budget(tiny_decoder, monkeypatch):
    a = tiny_decoder
    model = _model_bytes(a)
    monkeypatch.setitem(batching.PASS_TOKENS, "cpu", 512)
    peaks = {}
    for n in (192, 768):  # folds of 24 and 96 rows: each fold's batches meet the budget (about 12 rows)
        rows = random_rows("sst2", n, 32, 2000, seed=n)
        with PeakMemory("cpu") as pm:
            scores = attribute(a, SPEC, rows=rows, batch_size=1024)
        peaks[n] = pm.peak
        assert set(scores.arrays) == {"decoder.ffn", "decoder.heads", "decoder.kv"}
    assert 0 < peaks[768] <= PEAK_MULTIPLE * model, (peaks, model)
    assert peaks[768] < 1.15 * peaks[192]  # four times the examples, the same memory
    # without the budget, one pass of every row of a fold (96): the profiler sees the activations grow
    monkeypatch.setitem(batching.PASS_TOKENS, "cpu", 10**9)
    with PeakMemory("cpu") as pm:
        attribute(a, SPEC, rows=random_rows("sst2", 768, 32, 2000, seed=768), batch_size=1024)
    assert pm.peak > 3 * peaks[768]


def test_token_budget_batches(tiny_decoder):
    from mtprune.tasks import get_task

    rows = random_rows("sst2", 40, 30, 2000)
    task = get_task("sst2")
    lengths = batching.token_lengths(tiny_decoder, task, rows)
    assert min(lengths) > 30  # the prompt's words come on top of the row's 30
    batches = batching.batches_for(task, rows, 1024, adapter=tiny_decoder, max_tokens=4 * max(lengths))
    assert sum(len(b) for b in batches) == 40 and max(len(b) for b in batches) == 4
    assert len(batching.batches_for(task, rows, 16, adapter=tiny_decoder, max_tokens=10**9)) == 3


def test_bf16_scores_rank_units_like_fp32(tiny_decoder, tokenizer):
    from tests.conftest import make_grouped

    for a in (tiny_decoder, make_grouped("qwen2", tokenizer)):
        rows = random_rows("sst2", 64, 24, 2000, seed=3) if a is tiny_decoder else None
        if rows is None:
            from tests.conftest import SST2_ROWS

            rows = [dict(r) for r in SST2_ROWS] * 4
        f32 = attribute(a, SPEC, rows=rows, batch_size=16)
        half = a.copy()
        half.model.to(torch.bfloat16)
        bf16 = attribute(half, SPEC, rows=rows, batch_size=16)
        for g in f32.arrays:
            x, y = f32.arrays[g].ravel(), bf16.arrays[g].ravel()
            ok = ~np.isnan(x)
            assert spearmanr(x[ok], y[ok]).statistic > 0.99, g


def test_a_model_larger_than_memory_stops_before_loading(default_adapter, monkeypatch, shared_home):
    path = Path(default_adapter.source)
    counts = checkpoint_parameters(path)
    assert sum(counts.values()) >= default_adapter.num_parameters() - 10
    monkeypatch.setenv("MTPRUNE_MEMORY_LIMIT", "20MB")
    with pytest.raises(MtpruneError, match=r"needs about \d+ MB to load .* and cpu has 20 MB free"):
        check_fits(path, torch.device("cpu"), "float32")
    monkeypatch.setenv("MTPRUNE_MEMORY_LIMIT", "4GB")
    assert check_fits(path, torch.device("cpu"), "float32") > 4 * 22_000_000
    assert parse_bytes("1.5GB") == int(1.5 * 1024**3) and parse_bytes("512mb") == 512 * 1024**2
    with pytest.raises(MtpruneError, match="memory size"):
        parse_bytes("lots")


def test_cli_refuses_a_model_larger_than_memory(shared_home, tmp_path):
    env = {"MTPRUNE_MEMORY_LIMIT": "20MB", "PATH": "/usr/bin:/bin", "MTPRUNE_HOME": str(shared_home)}
    r = subprocess.run([sys.executable, "-m", "mtprune", "eval", "--model", "default", "--task", "sst2", "--limit", "8"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs about" in lines[0] and "20 MB free" in lines[0], r.stderr


def test_bench_scale_runs_a_small_config():
    r = subprocess.run([sys.executable, "benchmarks/bench_scale.py", "--config", "tiny", "--examples", "24",
                        "--length", "24", "--calib", "16", "--json", "--no-peak", "--threads", "1"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["mlp_neurons"] == 512 and out["kv_groups"] == 4 and out["query_heads"] == 16
    assert out["attribute_s"] > 0 and out["examples_per_s"] > 0
    assert 0.45 <= out["flops_kept"] <= 0.5 and out["parameters_pruned"] < out["parameters"]
    assert out["repair_sites"] >= 1
    bad = subprocess.run([sys.executable, "benchmarks/bench_scale.py", "--config", "llama-2b"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "error: unknown config 'llama-2b'; configs: tiny, small, qwen-0.5b, llama-1b, llama-8b"
    big = subprocess.run([sys.executable, "benchmarks/bench_scale.py", "--config", "llama-8b"], cwd=ROOT,
                         capture_output=True, text=True, env={"MTPRUNE_MEMORY_LIMIT": "8GB", "PATH": "/usr/bin:/bin"})
    assert big.returncode == 2 and "llama-8b needs about" in big.stderr and "8.0 GB free" in big.stderr
