"""Model directories: hard-pruned models of every format saved and loaded back with their
per-layer sizes, dtypes, errors that leave nothing half-written."""

import json

import pytest
import torch

from mtprune.checkpoints import load_adapter, save_model
from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.pruning import hard_prune, site_sizes
from mtprune.tasks import get_task
from tests.conftest import random_scores

SST2 = get_task("sst2")
TOL = 1e-4


def logits(adapter, rows, task=SST2):
    with torch.no_grad():
        return adapter.logits(adapter.encode(rows, task), task)


# ----------------------------------------------------------------------------------------------
# save / load


def _roundtrip(adapter, mask, rows, tmp_path):
    small = hard_prune(adapter, mask)
    expect = logits(small, rows)
    out = save_model(small, tmp_path / "pruned", mask)
    names = {f.name for f in out.iterdir()}
    assert {"config.json", "model.safetensors", "mask.json"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mtprune_pruned"]["sizes"] == site_sizes(small)
    back = load_adapter(str(out))
    assert back.format == adapter.format
    assert site_sizes(back) == site_sizes(small)
    assert (logits(back, rows) - expect).abs().max().item() < TOL
    assert back.num_parameters() == small.num_parameters()
    return out, back


def test_save_load_multitask(tiny_multitask, sst2_rows, tmp_path):
    scores = random_scores(tiny_multitask, seed=3)
    for g in scores["arrays"]:
        scores["arrays"][g][1] += 10  # layer 0 loses everything
    mask = mask_from_scores(scores, 0.5, scope="global", kinds="all")
    out, back = _roundtrip(tiny_multitask, mask, sst2_rows, tmp_path)
    assert {"heads.safetensors", "tasks.json"} <= {f.name for f in out.iterdir()}
    assert sorted(back.task_names()) == sorted(tiny_multitask.task_names())
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp dirs left
    # pruning the pruned model again, with a mask in its own (smaller) shape
    m2 = mask_from_scores(random_scores(back, seed=9), 0.5, kinds="ffn")
    assert m2.n_units["encoder.ffn"] == [0, 48]
    again = hard_prune(back, m2)
    assert site_sizes(again)["encoder.1.ffn"] == 24
    assert len(again.model.config.mtprune_pruned["history"]) == 1
    save_model(again, tmp_path / "twice", m2)
    assert site_sizes(load_adapter(str(tmp_path / "twice"))) == site_sizes(again)


def test_save_load_seqcls(tiny_seqcls, sst2_rows, tmp_path):
    _roundtrip(tiny_seqcls, mask_from_scores(random_scores(tiny_seqcls), 0.5, kinds="all", scope="global"),
               sst2_rows, tmp_path)


def test_save_load_t5(tiny_t5, sst2_rows, tmp_path):
    _roundtrip(tiny_t5, mask_from_scores(random_scores(tiny_t5), 0.7, scope="global"), sst2_rows, tmp_path)


def test_save_load_grouped(tiny_grouped, sst2_rows, tmp_path):
    scores = random_scores(tiny_grouped, seed=2)
    for g in scores["arrays"]:
        scores["arrays"][g][1] += 10  # layer 0 loses every group and neuron
    mask = mask_from_scores(scores, 0.6, kinds="all", scope="global")
    assert mask.kept_per_layer("decoder.kv")[0] == 0
    small = hard_prune(tiny_grouped, mask)
    out = save_model(small, tmp_path / "pruned", mask)
    back = load_adapter(str(out))
    # a tokenizer built in code reloads as the model type's class; the weights are what is tested
    back.tokenizer = tiny_grouped.tokenizer
    assert site_sizes(back) == site_sizes(small)
    assert (logits(back, sst2_rows) - logits(small, sst2_rows)).abs().max().item() < TOL
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mtprune_pruned"]["sizes"]["decoder.1.kv"] == mask.kept_per_layer("decoder.kv")[1]
    # sizes that do not fit together (heads not a multiple of the kept groups) are refused
    cfg["mtprune_pruned"]["sizes"]["decoder.1.heads"] -= 1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MtpruneError, match="do not fit together"):
        load_adapter(str(out))


def _old_spelling(name: str) -> str:
    """``decoder.kv`` as files before the rename named it: ``decoder.groups``."""
    return name[: -len(".kv")] + ".groups" if name.endswith(".kv") else name


def test_old_spelling_of_key_value_groups_loads(tokenizer, sst2_rows, tmp_path):
    """Masks (JSON, safetensors) and pruned models that name ``decoder.groups`` / ``kinds: groups``
    (the kind's old spelling) load as ``decoder.kv`` / ``kv``."""
    import numpy as np
    from safetensors.numpy import save

    from mtprune.masks import load_mask
    from tests.conftest import make_grouped

    a = make_grouped("llama", tokenizer)
    mask = mask_from_scores(random_scores(a, seed=3), 0.5, kinds="kv")
    d = mask.to_dict()
    assert d["kinds"] == "kv" and "decoder.kv" in d["n_units"]
    old = {**d, "kinds": "groups", "n_units": {_old_spelling(g): v for g, v in d["n_units"].items()},
           "keep": {_old_spelling(g): v for g, v in d["keep"].items()}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    header = {k: v for k, v in old.items() if k != "keep"}
    tensors = {f"keep.{_old_spelling(g)}": np.ascontiguousarray(k, dtype=np.uint8) for g, k in mask.keep.items()}
    (tmp_path / "old.safetensors").write_bytes(save(tensors, metadata={"mtprune_mask": json.dumps(header)}))
    for f in ("old.json", "old.safetensors"):
        back = load_mask(tmp_path / f)
        assert back == mask and back.kinds == "kv" and "decoder.kv" in back.groups
    assert mask_from_scores(random_scores(a, seed=3), 0.5, kinds="groups") == mask  # the old filter too
    # a pruned model whose config records its sizes by the old names
    small = hard_prune(a, mask)
    out = save_model(small, tmp_path / "pruned", mask)
    cfg = json.loads((out / "config.json").read_text())
    cfg["mtprune_pruned"]["sizes"] = {_old_spelling(k) if k.endswith(".kv") else k: v
                                      for k, v in cfg["mtprune_pruned"]["sizes"].items()}
    assert "decoder.1.groups" in cfg["mtprune_pruned"]["sizes"]
    (out / "config.json").write_text(json.dumps(cfg))
    back = load_adapter(str(out))
    back.tokenizer = a.tokenizer
    assert site_sizes(back) == site_sizes(small)
    assert (logits(back, sst2_rows) - logits(small, sst2_rows)).abs().max().item() < TOL


def test_save_load_causal(tiny_causal, sst2_rows, tmp_path):
    _roundtrip(tiny_causal, mask_from_scores(random_scores(tiny_causal), 0.5, kinds="all", scope="global"),
               sst2_rows, tmp_path)


def test_save_errors_write_nothing_half(tiny_multitask, tmp_path, monkeypatch):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5)
    small = hard_prune(tiny_multitask, mask)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MtpruneError, match="not empty"):
        save_model(small, tmp_path / "full", mask)
    with pytest.raises(MtpruneError, match="does not describe this model"):
        save_model(tiny_multitask, tmp_path / "dense", mask)  # the mask belongs to the pruned one
    with pytest.raises(MtpruneError, match="dtype"):
        save_model(small, tmp_path / "d", mask, dtype="int8")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(small.tokenizer, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(small, tmp_path / "half", mask)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["full"]
    monkeypatch.undo()
    save_model(small, tmp_path / "full", mask, overwrite=True)
    assert (tmp_path / "full" / "mask.json").is_file() and not (tmp_path / "full" / "x").exists()


def test_save_float16(tiny_multitask, sst2_rows, tmp_path):
    small = hard_prune(tiny_multitask, mask_from_scores(random_scores(tiny_multitask), 0.5))
    out32 = save_model(small, tmp_path / "f32")
    out16 = save_model(small, tmp_path / "f16", dtype="float16")
    s32, s16 = ((o / "model.safetensors").stat().st_size for o in (out32, out16))
    assert s16 < 0.6 * s32
    back = load_adapter(str(out16))
    assert next(back.model.parameters()).dtype == torch.float32
    assert (logits(back, sst2_rows) - logits(small, sst2_rows)).abs().max() < 5e-2


def test_load_bad_pruned_dirs(tiny_multitask, tmp_path):
    small = hard_prune(tiny_multitask, mask_from_scores(random_scores(tiny_multitask), 0.5))
    out = save_model(small, tmp_path / "p")
    cfg = json.loads((out / "config.json").read_text())
    cfg["mtprune_pruned"]["sizes"]["encoder.0.ffn"] = 30  # weights have 24
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MtpruneError, match="could not load the pruned model|does not match"):
        load_adapter(str(out))
    cfg["mtprune_pruned"]["sizes"]["encoder.0.ffn"] = 99  # more than the config allows
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MtpruneError, match="99 units"):
        load_adapter(str(out))
    cfg["mtprune_pruned"] = "junk"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MtpruneError, match="malformed mtprune_pruned"):
        load_adapter(str(out))


def test_zip_model_loads_back(tiny_multitask, tmp_path, sst2_rows):
    import io
    import zipfile

    from mtprune.checkpoints import zip_model
    from mtprune.pruning import soft_prune

    mask = mask_from_scores(random_scores(tiny_multitask), {"ffn": 0.5})
    data = zip_model(hard_prune(tiny_multitask, mask), mask)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert {"pruned/config.json", "pruned/model.safetensors", "pruned/mask.json"} <= set(names)
        z.extractall(tmp_path)
    small = load_adapter(str(tmp_path / "pruned"))
    assert [s.n_units for s in small.unit_sites() if s.kind == "ffn"] == [24, 24]
    with torch.no_grad(), soft_prune(tiny_multitask, mask):
        want = logits(tiny_multitask, sst2_rows)
    assert (logits(small, sst2_rows) - want).abs().max().item() < TOL


def test_dense_save_is_a_plain_hugging_face_directory(tiny_seqcls, tmp_path, sst2_rows):
    """Without a mask and unpruned, no mtprune entry: transformers' own class loads it."""
    from transformers import AutoModelForSequenceClassification

    out = save_model(tiny_seqcls, tmp_path / "dense")
    assert "mtprune_pruned" not in json.loads((out / "config.json").read_text())
    stock = AutoModelForSequenceClassification.from_pretrained(str(out))
    batch = tiny_seqcls.encode(sst2_rows, SST2)
    with torch.no_grad():
        got = stock(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert (got - logits(tiny_seqcls, sst2_rows)).abs().max().item() < 1e-6
    assert load_adapter(str(out)).format == "seqcls"


def test_list_models_and_signatures(shared_home, tmp_path, monkeypatch):
    from mtprune.checkpoints import list_models, source_signature

    models = {m["name"]: m for m in list_models()}
    assert models["default"]["format"] == "multitask" and "sst2" in models["default"]["tasks"]
    with pytest.raises(MtpruneError, match="unknown model"):
        source_signature("no-such-model")
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    first = source_signature(str(d))[1]
    (d / "config.json").write_text('{"a": 1}')
    assert source_signature(str(d))[1] != first
