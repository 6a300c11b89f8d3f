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
    # the export measures what the pruned model measures
    assert meta["measured"]["accuracy"] == pytest.approx(info["measured"]["sst2"]["accuracy"])
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
    """Both options are recorded and measured, never silently on."""
    plain, opt, q8 = tmp_path / "plain", tmp_path / "opt", tmp_path / "q8"
    for out, extra in ((plain, []), (opt, ["--optimize"]), (q8, ["--quantize", "int8"])):
        code, stdout, err = _run(capsys, "export", "--model", "default", "--task", "rte", "--out", out,
                                 "--eval-limit", "32", "--json", *extra)
        assert code == 0, err
    m = {p.name: json.loads((p / "mtprune_onnx.json").read_text()) for p in (plain, opt, q8)}
    assert m["plain"]["optimized"] is None and m["plain"]["quantized"] is None
    assert m["opt"]["optimized"] and m["q8"]["quantized"] == "int8"
    assert m["opt"]["check"]["max_logit_difference"] < 1e-3
    assert (q8 / "model.onnx").stat().st_size < 0.5 * (plain / "model.onnx").stat().st_size
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
