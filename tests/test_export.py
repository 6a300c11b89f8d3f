"""ONNX export (mtprune.export) and the exported model run by onnxruntime (formats.onnxrt):
logits within 1e-4 of PyTorch on ragged pruned models, accuracy recorded, bad input refused."""

import json

import numpy as np
import pytest
import torch

from mtprune.checkpoints import load_adapter, save_model
from mtprune.errors import MtpruneError
from mtprune.evaluation import evaluate
from mtprune.masks import mask_from_scores
from mtprune.pruning import hard_prune
from mtprune.tasks import get_task

pytest.importorskip("onnxruntime")


def _ragged(adapter, seed=0):
    """Hard-pruned with a different number of neurons and heads in every layer (layer 0 keeps 40
    neurons and 3 heads, layer 1 keeps 20 neurons and 1 head, chosen at random)."""
    from mtprune.masks import Mask
    from mtprune_dev.masks import full_mask

    full = full_mask(adapter.unit_sites())
    rng = np.random.default_rng(seed)
    keep = {}
    for g, k in full.keep.items():
        k = np.zeros_like(k)
        for layer, n in enumerate((40, 20) if g.endswith("ffn") else (3, 1)):
            k[layer, rng.choice(k.shape[1], n, replace=False)] = True
        keep[g] = k
    return hard_prune(adapter, Mask(keep=keep, n_units=full.n_units, sparsity=0.5, kinds="all"))


def _logits(adapter, task, rows):
    with torch.inference_mode():
        return adapter.logits(adapter.encode(rows, task), task).float().numpy()


def test_a_ragged_multitask_model_exports_and_runs(tiny_multitask, sst2_rows, tmp_path):
    from mtprune.export import export_onnx

    small = _ragged(tiny_multitask)
    assert [s.n_units for s in small.unit_sites()] == [40, 3, 20, 1]  # every layer its own sizes
    out = export_onnx(small, "sst2", tmp_path / "onnx", evaluate=False)
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".json"))[:2] == ["model.onnx",
                                                                                        "mtprune_onnx.json"]
    meta = json.loads((out / "mtprune_onnx.json").read_text())
    assert meta["task"] == "sst2" and meta["labels"] == ["negative", "positive"]
    assert meta["inputs"][:2] == ["input_ids", "attention_mask"] and meta["pruned"]["sizes"]
    assert meta["check"]["max_logit_difference"] < 1e-4
    exported = load_adapter(str(out))
    assert exported.format == "onnx" and exported.task_names() == ["sst2"]
    t = get_task("sst2")
    for rows in (sst2_rows[:1], sst2_rows):  # batch 1 and a padded batch
        np.testing.assert_allclose(_logits(exported, t, rows), _logits(small, t, rows), atol=1e-4)
    # evaluation through the graph: the same predictions as the PyTorch model
    a, b = evaluate(small, "sst2", rows=sst2_rows), evaluate(exported, "sst2", rows=sst2_rows)
    assert a.accuracy == b.accuracy and (a.predictions.pred == b.predictions.pred).all()
    with pytest.raises(MtpruneError, match="no head for task cb"):
        evaluate(exported, "cb", rows=[{"premise": "a", "hypothesis": "b", "label": 0}])
    # an evaluate-only adapter: no torch module, no units; what needs them says so in one line
    from mtprune.attribution import AttributionSpec, attribute
    from mtprune.formats import EvalAdapter, ModelAdapter

    assert isinstance(exported, EvalAdapter) and not isinstance(exported, ModelAdapter)
    assert not hasattr(exported, "unit_sites") and not hasattr(exported, "model")
    with pytest.raises(MtpruneError, match="no units to score or prune"):
        attribute(exported, AttributionSpec(task="sst2", method="random"))
    with pytest.raises(MtpruneError, match="already an ONNX export"):
        export_onnx(exported, "sst2", tmp_path / "again", evaluate=False)
    assert exported.info()["units"] == {} and exported.num_parameters() > 0


def test_a_sequence_classifier_exports(tiny_seqcls, sst2_rows, tmp_path):
    from mtprune.export import export_onnx

    small = _ragged(tiny_seqcls, seed=1)
    out = export_onnx(small, "sst2", tmp_path / "seqcls-onnx", evaluate=False)
    exported = load_adapter(str(out))
    t = get_task("sst2")
    np.testing.assert_allclose(_logits(exported, t, sst2_rows), _logits(small, t, sst2_rows), atol=1e-4)


def test_label_word_models_are_refused_in_one_line(tiny_t5, tmp_path):
    from mtprune.export import export_onnx

    with pytest.raises(MtpruneError, match="scores label words"):
        export_onnx(tiny_t5, "sst2", tmp_path / "t5")
    assert not (tmp_path / "t5").exists()


def test_bad_input(tiny_multitask, tmp_path):
    from mtprune.export import export_onnx

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(MtpruneError, match="exists and is not empty"):
        export_onnx(tiny_multitask, "sst2", tmp_path / "taken", evaluate=False)
    assert (tmp_path / "taken" / "x").read_text() == "mine"
    with pytest.raises(MtpruneError, match="no head for task qnli"):
        export_onnx(tiny_multitask, "qnli", tmp_path / "q", evaluate=False)
    with pytest.raises(MtpruneError, match="int8"):
        export_onnx(tiny_multitask, "sst2", tmp_path / "q", quantize="int4")
    out = export_onnx(tiny_multitask, "sst2", tmp_path / "ok", evaluate=False)
    (out / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(MtpruneError, match="does not load in onnxruntime"):
        load_adapter(str(out))
    (out / "mtprune_onnx.json").write_text("{}")
    with pytest.raises(MtpruneError, match="not an mtprune ONNX description"):
        load_adapter(str(out))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written


def test_the_default_model_dense_and_pruned(default_adapter, tmp_path):
    """Logits within 1e-4 on real rows; the recorded accuracy is the graph's own."""
    from mtprune.attribution import AttributionSpec, attribute
    from mtprune.export import export_onnx

    t = get_task("sst2")
    rows = [dict(r) for r in __import__("mtprune.evaluation", fromlist=["eval_rows"]).eval_rows(t, None, 48)]
    scores = attribute(default_adapter, AttributionSpec("sst2", examples=16))
    small = hard_prune(default_adapter, mask_from_scores(scores, {"ffn": 0.5, "heads": 0.25}))
    d = save_model(small, tmp_path / "pruned", mask_from_scores(scores, {"ffn": 0.5, "heads": 0.25}))
    small = load_adapter(str(d))
    for name, model in (("dense", default_adapter), ("pruned", small)):
        out = export_onnx(model, t, tmp_path / f"{name}-onnx", evaluate_limit=48)
        exported = load_adapter(str(out))
        np.testing.assert_allclose(_logits(exported, t, rows), _logits(model, t, rows), atol=1e-4)
        meta = json.loads((out / "mtprune_onnx.json").read_text())
        want = evaluate(model, t, limit=48)
        assert meta["measured"]["rows"] == 48 and meta["measured"]["accuracy"] == pytest.approx(want.accuracy)
        assert (meta["pruned"] is None) == (name == "dense")
    assert meta["pruned"]["mask"]["sparsity"] == 0.5 and meta["source"]["fingerprint"] == small.fingerprint()


# ----------------------------------------------------------------------------------------------
# the CLI: mtprune export, prune --onnx, eval of an export


def _run(capsys, *argv):
    from mtprune.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err, text):
    assert code == 2 and len(err.strip().splitlines()) == 1 and text in err, err


def _strings(x):
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in _strings(v)]
    return [x] if isinstance(x, str) else []


def test_cli_prune_onnx_then_eval_the_export(capsys, tiny_multitask, tmp_path, shared_home):
    from mtprune.masks import save_mask

    from .conftest import random_scores

    d = save_model(tiny_multitask, tmp_path / "tiny")
    mfile = save_mask(mask_from_scores(random_scores(tiny_multitask), 0.5, kinds="all", scope="global"),
                      tmp_path / "m.json")
    out = tmp_path / "small"
    code, stdout, err = _run(capsys, "prune", "--model", d, "--task", "sst2", "--mask", mfile, "--out", out,
                             "--onnx", "--eval-limit", "16", "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["onnx"] == str(out / "onnx")
    meta = json.loads((out / "onnx" / "mtprune_onnx.json").read_text())
    assert meta["measured"]["rows"] == 16
    assert meta["optimized"] is None and meta["quantized"] is None  # neither unless asked
    # the export measures what the pruned model measures
    assert meta["measured"]["accuracy"] == pytest.approx(info["measured"]["sst2"]["accuracy"])
    # the description and the card name the source model, never a path of this machine (the pruned
    # model's config recorded the absolute path it was loaded from)
    text = (out / "onnx" / "mtprune_onnx.json").read_text() + (out / "onnx" / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["mtprune_pruned"]["source"]["model"] == str(d)
    assert str(tmp_path) not in text and not [s for s in _strings(meta) if s.startswith(("/", "~"))]
    assert meta["pruned"]["source"]["model"] == "tiny"
    card = (out / "onnx" / "README.md").read_text()
    assert "InferenceSession" in card and f"{meta['measured']['accuracy']:.3f} (95% interval" in card
    code, stdout, err = _run(capsys, "eval", "--model", out / "onnx", "--task", "sst2", "--limit", "16", "--json")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(meta["measured"]["accuracy"])
    # bad input: the task the graph has no head for, an output that exists, a model that is not one
    code, _, err = _run(capsys, "eval", "--model", out / "onnx", "--task", "cb", "--limit", "4")
    _one_line(code, err, "no head for task cb")
    code, _, err = _run(capsys, "export", "--model", d, "--task", "sst2", "--out", out, "--no-eval")
    _one_line(code, err, "exists and is not empty")
    code, _, err = _run(capsys, "export", "--model", tmp_path / "nothing", "--task", "sst2", "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "export", "--model", out / "onnx", "--task", "sst2", "--out", tmp_path / "y")
    _one_line(code, err, "already an ONNX export")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_export_optimized_and_quantized(capsys, default_adapter, tmp_path):
    """Both options are recorded and measured, never silently on: the optimized export is not
    quantized, the quantized one not optimized (a plain export records neither: the tests above)."""
    opt, q8 = tmp_path / "opt", tmp_path / "q8"
    for out, extra in ((opt, ["--optimize"]), (q8, ["--quantize", "int8"])):
        code, stdout, err = _run(capsys, "export", "--model", "default", "--task", "rte", "--out", out,
                                 "--eval-limit", "32", "--json", *extra)
        assert code == 0, err
    m = {p.name: json.loads((p / "mtprune_onnx.json").read_text()) for p in (opt, q8)}
    assert m["opt"]["optimized"] and m["opt"]["quantized"] is None
    assert m["q8"]["quantized"] == "int8" and m["q8"]["optimized"] is None
    assert m["opt"]["check"]["max_logit_difference"] < 1e-3
    # int8 weights: under half the float32 bytes of the parameters the graph holds (the encoder and one head)
    assert (q8 / "model.onnx").stat().st_size < 0.5 * 4 * default_adapter.model.num_parameters()
    for meta in m.values():
        assert meta["measured"]["rows"] == 32 and 0 <= meta["measured"]["accuracy"] <= 1


def test_the_dashboard_zip_unpacks_to_a_model_that_loads(tiny_multitask, sst2_rows, tmp_path):
    """zip_onnx (the Export page's download): one folder named by the caller, which loads back
    through load_adapter and gives the PyTorch logits."""
    import io
    import zipfile

    from mtprune.export import zip_onnx

    data = zip_onnx(tiny_multitask, "sst2", "sst2-dense-onnx", evaluate=False)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        assert {"sst2-dense-onnx/model.onnx", "sst2-dense-onnx/mtprune_onnx.json"} <= names
        assert all(n.startswith("sst2-dense-onnx/") for n in names)
        z.extractall(tmp_path)
    back = load_adapter(str(tmp_path / "sst2-dense-onnx"))
    sst2 = get_task("sst2")
    assert np.abs(_logits(back, sst2, sst2_rows) - _logits(tiny_multitask, sst2, sst2_rows)).max() < 1e-4


# ----------------------------------------------------------------------------------------------
# one task's model directory, its name and its model card (mtprune.export.export_model)


def _ap_mask(adapter, method="ap", sparsity=0.5, **kw):
    from .conftest import random_scores

    spec = {"method": method, "examples": 64, "task": "sst2", "split": "train", "seed": 0}
    return mask_from_scores(random_scores(adapter, seed=1 if method == "ap" else 2), sparsity,
                            meta={"scores_spec": spec, "model": "/home/someone/models/tiny-multitask"}, **kw)


def test_exported_model_holds_one_head_loads_back_and_predicts_the_same(tiny_multitask, sst2_rows, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from mtprune.export import default_name, export_model

    mask = _ap_mask(tiny_multitask)
    small = hard_prune(tiny_multitask, mask)
    res = evaluate(small, "sst2", rows=sst2_rows)
    name = default_name(small, "sst2")
    assert name == "tiny-multitask-sst2-ap-ffn50"
    out = export_model(small, "sst2", tmp_path / name, mask=mask, measured={"sst2": res})
    files = {p.name for p in out.iterdir()}
    assert "heads.safetensors" not in files and "tasks.json" not in files and "README.md" in files
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and len(cfg["id2label"]) == 2  # sst2's head only
    assert cfg["id2label"] == {"0": "negative", "1": "positive"} and cfg["finetuning_task"] == "sst2"
    back = load_adapter(str(out))
    assert back.task_names() == ["sst2"] and not back.supports("cb")
    t = get_task("sst2")
    np.testing.assert_allclose(_logits(back, t, sst2_rows), _logits(small, t, sst2_rows), atol=1e-5)
    again = evaluate(back, "sst2", rows=sst2_rows)
    assert (again.predictions.pred == res.predictions.pred).all()
    # every layer keeps 24 FFN neurons and every head: plain transformers builds it from its config
    assert cfg["intermediate_size"] == 24
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    enc = small.tokenizer([r["sentence"] for r in sst2_rows], return_tensors="pt", padding=True)
    with torch.inference_mode():
        np.testing.assert_allclose(plain(**enc).logits.numpy(), _logits(small, t, sst2_rows), atol=1e-5)
    # the model card: source, task, mask, repair, the measured accuracy with its interval, sizes, how to load it
    card = (out / "README.md").read_text()
    lo, hi = res.interval()
    for want in (f"# {name}", "| source model | tiny-multitask", "| task | sst2", "ap scores from 64 examples of sst2/train",
                 "50% of the FFN neurons pruned in every layer", "| repair | none",
                 f"{res.accuracy:.3f} (95% interval {lo:.3f}-{hi:.3f}) on 6 rows of sst2/validation",
                 "encoder FFN neurons 48 of 96 (50%)", "| parameters |", "| FLOPs kept |", "load_adapter(",
                 "AutoModelForSequenceClassification.from_pretrained"):
        assert want in card, want
    assert "/home/someone" not in (out / "mask.json").read_text() + json.dumps(cfg)  # names, not paths
    assert json.loads((out / "mask.json").read_text())["meta"]["model"] == "tiny-multitask"


def test_a_ragged_export_says_how_to_run_it_without_mtprune_and_claims_no_accuracy(tiny_multitask, sst2_rows,
                                                                                  tmp_path):
    from mtprune.export import export_model

    small = _ragged(tiny_multitask)
    out = export_model(small, "sst2", tmp_path / "ragged")
    back = load_adapter(str(out))
    t = get_task("sst2")
    np.testing.assert_allclose(_logits(back, t, sst2_rows), _logits(small, t, sst2_rows), atol=1e-5)
    card = (out / "README.md").read_text()
    assert "| accuracy | not measured on this model" in card and "95% interval 0" not in card  # nothing invented
    assert "attention heads were pruned" in card and "--format onnx" in card
    assert "intermediate_size" not in json.loads((out / "config.json").read_text()) or \
        json.loads((out / "config.json").read_text())["intermediate_size"] == 48  # left as the stock size


def test_a_model_the_stock_classifier_cannot_copy_keeps_its_format_with_one_head(tiny_multitask, sst2_rows,
                                                                                  tmp_path, monkeypatch):
    from safetensors import safe_open

    from mtprune.errors import MtpruneError
    from mtprune.export import export_model
    from mtprune.formats import multitask

    def refuse(adapter, task):
        raise MtpruneError("no stock class")

    monkeypatch.setattr(multitask, "single_task_classifier", refuse)
    small = hard_prune(tiny_multitask, _ap_mask(tiny_multitask))
    out = export_model(small, "cb", tmp_path / "cb")
    with safe_open(str(out / "heads.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["cb.bias", "cb.weight"]
    assert list(json.loads((out / "tasks.json").read_text()).get("tasks", {"cb": 0})) == ["cb"]
    back = load_adapter(str(out))
    assert back.format == "multitask" and back.task_names() == ["cb"]
    rows = [{"premise": "the man plays", "hypothesis": "a man plays", "label": 0}]
    t = get_task("cb")
    np.testing.assert_allclose(_logits(back, t, rows), _logits(small, t, rows), atol=1e-5)
    assert "multi-task directory" in (out / "README.md").read_text()


def test_export_names_tell_the_model_task_method_mask_and_repair(tiny_multitask):
    from mtprune.costs import Budget
    from mtprune.export import default_name, export_name, mask_slug

    ap, ig = _ap_mask(tiny_multitask, "ap"), _ap_mask(tiny_multitask, "ig")
    assert default_name(tiny_multitask, "sst2", mask=ap) == "tiny-multitask-sst2-ap-ffn50"
    assert default_name(tiny_multitask, "sst2", mask=ig) == "tiny-multitask-sst2-ig-ffn50"  # never the same file
    assert default_name(tiny_multitask, "sst2", mask=ap, repair="lsq") == "tiny-multitask-sst2-ap-ffn50-lsq"
    assert default_name(tiny_multitask, "sst2") == "tiny-multitask-sst2-dense"
    per_kind = _ap_mask(tiny_multitask, sparsity={"ffn": 0.7, "heads": 0.25}, scope="global")
    assert default_name(tiny_multitask, "sst2", mask=per_kind) == "tiny-multitask-sst2-ap-ffn70-heads25-global"
    budget = {"scope": "budget", "meta": {"budget": str(Budget("flops", 0.5)), "scores_spec": {"method": "ap"}}}
    assert mask_slug(budget) == "flops50"
    assert export_name("minilm-l6-mt6", "sst2", "ap", "flops50", "lsq") == "minilm-l6-mt6-sst2-ap-flops50-lsq"
    # a pruned model names itself from its config: the source, the method, the mask, the repair
    small = hard_prune(tiny_multitask, ap)
    assert default_name(small, "sst2") == "tiny-multitask-sst2-ap-ffn50"


def test_no_verb_help_prints_a_doubled_percent():
    from mtprune.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts = {name: p.format_help() for name, p in subs.choices.items()}
    assert {"transfer", "train", "export", "quota", "prune"} <= set(texts)
    assert "%%" not in parser.format_help()
    assert not [name for name, t in texts.items() if "%%" in t], [n for n, t in texts.items() if "%%" in t]
    assert "95% interval" in texts["transfer"]


def test_cli_export_model_named_by_default(capsys, tiny_multitask, tmp_path, monkeypatch):
    mask = _ap_mask(tiny_multitask)
    d = save_model(hard_prune(tiny_multitask, mask), tmp_path / "pruned", mask)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = _run(capsys, "export", "--model", d, "--task", "sst2", "--format", "model", "--no-eval")
    assert code == 0, err
    out = tmp_path / "tiny-multitask-sst2-ap-ffn50"
    assert out.is_dir() and (out / "README.md").is_file() and load_adapter(str(out)).task_names() == ["sst2"]
    assert "not measured" in (out / "README.md").read_text()
    code, _, err = _run(capsys, "export", "--model", d, "--task", "sst2", "--format", "model", "--quantize", "int8")
    _one_line(code, err, "--format onnx only")
    code, _, err = _run(capsys, "export", "--model", d, "--task", "sst2", "--format", "model", "--no-eval")
    _one_line(code, err, "exists and is not empty")
