"""`mtprune attribute` as a user runs it: output, cache hits across processes, exports, bad
input, and torchrun with two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtprune.attribution import AttributionSpec, Scores, attribute
from mtprune.cache import DiskCache
from mtprune.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(default_adapter, monkeypatch, capsys):
    """Run the CLI in this process with the session's default model (loaded once)."""
    import torch

    import mtprune.checkpoints

    monkeypatch.setattr(mtprune.checkpoints, "load_adapter", lambda *a, **k: default_adapter)
    threads = torch.get_num_threads()  # the CLI sets them for the process: restore them after

    def run(*argv):
        try:
            code = main(["attribute", *argv])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    torch.set_num_threads(threads)


def _cache_entries() -> list[Path]:
    return DiskCache(os.environ["MTPRUNE_CACHE"]).entries()


def test_help_lists_the_options(capsys):
    try:
        code = main(["attribute", "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--task", "--method", "--variant", "--examples", "--samples", "--seed", "--split",
                 "--steps", "--unsupervised", "--kinds", "--units", "--batch-size", "--device", "--json", "--out-csv",
                 "--out-safetensors", "--cache-dir"):
        assert flag in out


def test_compute_export_then_hit_from_another_process(cli, tmp_path):
    csv, st = tmp_path / "s.csv", tmp_path / "s.safetensors"
    code, out, err = cli("--model", "default", "--task", "sst2", "--method", "ap", "--samples", "16",
                         "--seed", "0", "--json", "--out-csv", str(csv), "--out-safetensors", str(st))
    assert code == 0, err
    first = json.loads(out)
    assert first["cache_hit"] is False and Path(first["path"]).is_file()
    assert first["groups"] == {"encoder.ffn": [6, 1536], "encoder.heads": [6, 12]}
    assert first["examples"] == 16 and first["split"] == "train" and first["seconds"] > 0
    df = pd.read_csv(csv)
    assert len(df) == 6 * 1536 + 6 * 12 and set(df.group) == {"encoder.ffn", "encoder.heads"}
    exported, cached = Scores.load(st), Scores.load(first["path"])
    np.testing.assert_array_equal(exported.arrays["encoder.ffn"], cached.arrays["encoder.ffn"])
    # the same request from a new process: a hit, read faster than it was computed (no fixed number of
    # seconds: the machines are noisy, and a loaded one took 1.05 s for a read)
    proc = subprocess.run([sys.executable, "-m", "mtprune", "attribute", "--task", "sst2", "--samples", "16",
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert second["cache_hit"] is True and second["path"] == first["path"] and second["seconds"] < first["seconds"]


def test_text_output(cli, tmp_path):
    code, out, err = cli("--task", "sst2", "--samples", "8", "--method", "magnitude", "--units", "heads")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("scores: ") and lines[0].endswith(".safetensors")
    assert "encoder.heads 6x12" in lines[1] and "computed in" in lines[1]
    code, out, _ = cli("--task", "sst2", "--samples", "8", "--method", "magnitude", "--units", "heads")
    assert "cache hit" in out.splitlines()[1]


@pytest.mark.parametrize("argv, message", [
    (["--samples", "0"], "must be at least 1, not 0"),
    (["--samples", "-3"], "must be at least 1, not -3"),
    (["--task", "cb", "--samples", "1000"], "only 250"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "ig", "--steps", "0"], "steps) must be at least 1"),
    (["--task", "ag_news"], "no head for task ag_news"),
    (["--task", "nope"], "unknown task"),
    (["--split", "dev"], "no split 'dev'"),
    (["--variant", "square"], "unknown variant"),
    (["--method", "random", "--unsupervised"], "--unsupervised applies to"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--out-csv", "/nonexistent-dir/x.csv"], "does not exist"),
    (["--cache-dir", "{file}/cache"], "is not writable"),
    (["--units", "neurons"], "invalid choice"),
])
def test_bad_input_one_line_exit_2(cli, tmp_path, argv, message):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [a.replace("{file}", str(blocker)) for a in argv]
    base = ["--task", "sst2", "--samples", "8", "--out-safetensors", str(tmp_path / "o.safetensors")]
    code, out, err = cli(*base, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtprune: error:") and message in lines[0]
    assert out == ""
    assert _cache_entries() == [] and not (tmp_path / "o.safetensors").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_torchrun_two_processes_equal_one(default_adapter, tmp_path):
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mtprune", "attribute", "--model", "default", "--task", "sst2", "--samples", "16",
           "--batch-size", "4", "--device", "cpu", "--json", "--out-safetensors", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # rank 0 alone prints
    info = json.loads(lines[0])
    assert info["world_size"] == 2 and info["cache_hit"] is False
    ddp = Scores.load(out)
    assert ddp.meta["world_size"] == 2 and ddp.meta["examples"] == 16
    one = attribute(default_adapter, AttributionSpec("sst2", examples=16), batch_size=4)
    for g in one.groups:
        a, b = ddp.arrays[g].astype(np.float64), one.arrays[g].astype(np.float64)
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-5, g
    assert len(_cache_entries()) == 1  # rank 0 wrote the cache once


def test_examples_auto_doubles_until_the_cap_and_says_so(cli):
    code, out, err = cli("--task", "sst2", "--examples", "auto", "--reliability", "0.999", "--max-examples", "128",
                         "--device", "cpu", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["examples"] == 128 and info["auto"]["stop"] == "cap" and info["auto"]["examples"] == 128
    assert set(info["reliability"]) == {"encoder.ffn", "encoder.heads"}
    assert all(0 < r["spearman"] < 0.999 for r in info["reliability"].values())
    assert len(info["reliability"]["encoder.ffn"]["per_layer"]) == 6 and info["folds"] == 8
    entries = len(_cache_entries())
    assert entries == 2  # the draws of 64 and of 128
    code, out, err = cli("--task", "sst2", "--examples", "auto", "--reliability", "0.999", "--max-examples", "256",
                         "--device", "cpu")
    assert code == 0, err
    assert "examples auto: ffn 0." in out and "at 256 examples: the cap (--max-examples)" in out
    assert "ranks stay uncertain" in out and "reliability (expected Spearman correlation with another draw of 256" in out
    assert len(_cache_entries()) == entries + 1  # 256 extends the cached 128: one new entry
    code, out, err = cli("--task", "sst2", "--examples", "auto", "--reliability", "0.05", "--device", "cpu")
    assert code == 0 and "at 64 examples: every kind reached 0.05" in out  # the cached first draw is enough


def test_examples_auto_bad_input(cli):
    for argv, pattern in ((("--reliability", "1.5"), "--reliability is a number in \\(0, 1\\)"),
                          (("--reliability", "0"), "--reliability is a number in \\(0, 1\\)"),
                          (("--max-examples", "10"), "--max-examples must be at least 64")):
        code, out, err = cli("--task", "sst2", "--examples", "auto", *argv, "--device", "cpu")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert __import__("re").search(pattern, err), err
    code, out, err = cli("--task", "sst2", "--examples", "many", "--device", "cpu")
    assert code == 2 and "--examples is a count or auto, not 'many'" in err
    assert not _cache_entries()  # nothing computed, nothing half-written
