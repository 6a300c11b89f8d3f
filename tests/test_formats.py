import pytest
import torch

from mtprune.errors import MtpruneError
from mtprune.checkpoints import load_adapter
from mtprune.tasks import get_task
from mtprune.units import active_hooks, site_hooks, soft_mask

SST2 = get_task("sst2")
CB = get_task("cb")


def _logits(adapter, rows, task):
    with torch.no_grad():
        return adapter.logits(adapter.encode(rows, task), task)


def test_multitask_logits_shape_per_head(tiny_multitask, sst2_rows, cb_rows):
    assert _logits(tiny_multitask, sst2_rows, SST2).shape == (6, 2)
    assert _logits(tiny_multitask, cb_rows, CB).shape == (3, 3)
    # imdb is read through sst2's head
    assert tiny_multitask.head_for("imdb") == "sst2"
    with pytest.raises(MtpruneError, match="no head for task boolq"):
        tiny_multitask.head_for("boolq")


def test_multitask_sites(tiny_multitask):
    sites = tiny_multitask.unit_sites()
    assert [s.name for s in sites] == ["encoder.0.ffn", "encoder.0.heads", "encoder.1.ffn", "encoder.1.heads"]
    ffn, heads = sites[0], sites[1]
    assert (ffn.n_units, ffn.width) == (48, 1)
    assert (heads.n_units, heads.width) == (4, 8)


def test_seqcls_adapter(tiny_seqcls, sst2_rows):
    assert _logits(tiny_seqcls, sst2_rows, SST2).shape == (6, 2)
    with pytest.raises(MtpruneError, match="task cb has 3"):
        tiny_seqcls.head_for("cb")
    assert len(tiny_seqcls.unit_sites()) == 4


def test_t5_scores_label_words(tiny_t5, sst2_rows, cb_rows):
    a = tiny_t5
    assert a.prompt(SST2, sst2_rows[0]) == "sst2 sentence: a very good movie"
    assert a.prompt(CB, cb_rows[0]).startswith("cb hypothesis: a man plays premise:")
    lg = _logits(a, sst2_rows, SST2)
    assert lg.shape == (6, 2)
    assert (lg < 0).all()  # log-probabilities of label words
    # scoring one label by hand: the decoder fed <pad> then the label's tokens
    ids = a.label_word_ids(SST2)[1] + [a.tokenizer.eos_token_id]
    batch = a.encode(sst2_rows[:1], SST2)
    with torch.no_grad():
        out = a.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=torch.tensor([ids]))
    assert lg[0, 1].item() == pytest.approx(-out.loss.item() * len(ids), rel=1e-4)
    sites = a.unit_sites()
    assert {s.group for s in sites} == {"encoder.ffn", "encoder.heads", "decoder.ffn", "decoder.heads"}
    assert all(s.n_units == 48 for s in sites if s.kind == "ffn")


def test_causal_scores_label_words(tiny_causal, sst2_rows):
    a = tiny_causal
    lg = _logits(a, sst2_rows, SST2)
    assert lg.shape == (6, 2) and (lg < 0).all()
    # batch-independence: right padding does not change an example's scores
    alone = _logits(a, sst2_rows[5:], SST2)
    assert torch.allclose(lg[5], alone[0], atol=1e-4)
    sites = a.unit_sites()
    assert {s.group for s in sites} == {"decoder.ffn", "decoder.heads"}


def test_control_target_is_not_a_label(tiny_t5, tiny_multitask, sst2_rows):
    ids = tiny_t5.control_ids(SST2, 50, seed=0)
    labels = {i for w in tiny_t5.label_word_ids(SST2) for i in w}
    assert not labels & set(ids)
    assert ids == tiny_t5.control_ids(SST2, 50, seed=0)
    b = tiny_multitask.encode(sst2_rows, SST2)
    with torch.no_grad():
        lp0 = tiny_multitask.control_logprob(b, SST2, 0)
        lp1 = tiny_multitask.control_logprob(b, SST2, 1)
    assert lp0.shape == (6,) and (lp0 <= 0).all() and not torch.allclose(lp0, lp1)


def test_soft_mask_zeroing_all_ffn_equals_no_ffn(tiny_multitask, sst2_rows):
    a = tiny_multitask
    sites = [s for s in a.unit_sites() if s.kind == "ffn"]
    keep = {s.name: torch.zeros(s.n_units, dtype=torch.bool) for s in sites}
    dense = _logits(a, sst2_rows, SST2)
    with soft_mask(a.model, sites, keep):
        masked = _logits(a, sst2_rows, SST2)
        assert sorted(active_hooks(a.model)) == ["encoder.0.ffn", "encoder.1.ffn"]
    assert not torch.allclose(dense, masked)
    # the same as removing the FFN's contribution by hand: output.dense sees zeros, so its bias alone remains
    assert active_hooks(a.model) == []
    assert torch.allclose(_logits(a, sst2_rows, SST2), dense)


def test_hooks_removed_after_error(tiny_multitask, sst2_rows):
    a = tiny_multitask

    def boom(site, x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with site_hooks(a.model, a.unit_sites(), boom):
            _logits(a, sst2_rows, SST2)
    assert active_hooks(a.model) == []
    with pytest.raises(ValueError):
        with site_hooks(a.model, a.unit_sites(), lambda s, x: None):
            raise ValueError("in the block")
    assert active_hooks(a.model) == []


def test_fingerprint_changes_with_weights(tiny_multitask):
    a = tiny_multitask
    f1 = a.fingerprint()
    a._fingerprint = None
    assert a.fingerprint() == f1
    with torch.no_grad():
        a.model.encoder.layer[0].output.dense.weight[0, 0] += 1
    a._fingerprint = None
    assert a.fingerprint() != f1


def test_fingerprint_survives_a_move(default_adapter, tmp_path):
    """The same weights in another folder (CI's checkout, a copied model) keep their fingerprint,
    so cached scores and result rows still match; a changed weight does not."""
    import shutil

    copy = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(default_adapter.source, copy)
    moved = load_adapter(str(copy))
    assert moved.model.config._name_or_path != default_adapter.model.config._name_or_path
    assert moved.fingerprint() == default_adapter.fingerprint()
    with torch.no_grad():
        next(moved.model.parameters())[0, 0] += 1
    moved._fingerprint = None
    assert moved.fingerprint() != default_adapter.fingerprint()


def test_default_model(default_adapter):
    a = default_adapter
    assert a.format == "multitask"
    assert a.task_names() == ["boolq", "cb", "mrpc", "qnli", "rte", "sst2"]
    info = a.info()
    assert info["units"] == {"encoder.ffn": [1536] * 6, "encoder.heads": [12] * 6}
    assert 22_000_000 < info["parameters"] < 23_000_000


@pytest.mark.parametrize("arg,msg", [
    ("/nonexistent/model", "unknown model"),
    ("tests", "not a model directory"),
])
def test_bad_model_paths(arg, msg):
    with pytest.raises(MtpruneError, match=msg):
        load_adapter(arg)


def test_headless_encoder_is_refused(tmp_path, tokenizer):
    from transformers import BertModel

    from tests.conftest import tiny_bert_config

    BertModel(tiny_bert_config(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(MtpruneError, match="no task head"):
        load_adapter(str(tmp_path))


def test_saved_seqcls_t5_causal_roundtrip(tmp_path, tiny_seqcls, tiny_t5, tiny_causal, sst2_rows):
    for a in (tiny_seqcls, tiny_t5, tiny_causal):
        d = tmp_path / a.source
        a.model.save_pretrained(d)
        a.tokenizer.save_pretrained(d)
        b = load_adapter(str(d))
        assert b.format == a.format
        assert torch.allclose(_logits(a, sst2_rows, SST2), _logits(b, sst2_rows, SST2), atol=1e-5)


def test_hub_id_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(MtpruneError, match="could not fetch someone/tiny-model from the Hugging Face hub"):
        load_adapter("someone/tiny-model")


def test_weights_without_safetensors_are_refused(tmp_path, tiny_seqcls):
    tiny_seqcls.model.save_pretrained(tmp_path)
    tiny_seqcls.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(MtpruneError, match="no .safetensors weights"):
        load_adapter(str(tmp_path))


def test_single_task_classifier_from_default_model(default_adapter, tmp_path, shared_home):
    """The default model's sst2 head as a stock BertForSequenceClassification (format seqcls)."""
    from mtprune.formats import single_task_classifier
    from mtprune.tasks import load_rows, rows_as_list

    rows = rows_as_list(load_rows("sst2", "validation"), 16)
    one = single_task_classifier(default_adapter, "sst2")
    assert one.format == "seqcls" and type(one.model).__name__ == "BertForSequenceClassification"
    assert torch.allclose(_logits(one, rows, SST2), _logits(default_adapter, rows, SST2), atol=1e-5)
    one.model.save_pretrained(tmp_path)
    one.tokenizer.save_pretrained(tmp_path)
    back = load_adapter(str(tmp_path))
    assert back.format == "seqcls" and back.task_names() == ["sst2"]
    assert back.head_for("imdb") == "sst2"
    assert torch.allclose(_logits(back, rows, SST2), _logits(default_adapter, rows, SST2), atol=1e-5)
    with pytest.raises(MtpruneError, match="no head for task mrpc"):
        back.head_for("mrpc")


def test_layer_specs_by_name(tiny_causal, tiny_grouped):
    """A format describes its layers with named specs; build_sites turns them into sites (GPT-2's
    fused q|k|v is ``qkv``, grouped-query attention ``query_per_kv``), and a spec that names both
    or neither of q/k/v and qkv is refused."""
    from mtprune.units import AttentionSpec, FFNSpec, StackSpec, build_sites

    a = tiny_causal
    sites = a.unit_sites()
    if type(a.model).__name__.startswith("GPT2"):
        heads = next(s for s in sites if s.kind == "heads")
        assert [(ip.path, ip.chunks) for ip in heads.in_proj] == [("transformer.h.0.attn.c_attn", 3)]
    spec = StackSpec(stack="decoder", layers=("model.layers.0",),
                     ffn=FFNSpec(in_proj=("mlp.gate_proj", "mlp.up_proj"), out_proj="mlp.down_proj",
                                 residual="post_attention_layernorm", output_norm=""),
                     attention=AttentionSpec(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                                             o="self_attn.o_proj", module="self_attn", residual="", head_dim=4,
                                             query_per_kv=8 // tiny_grouped.unit_sites()[-1].n_units))
    built = build_sites(tiny_grouped.model, [spec])
    assert [s.name for s in built] == ["decoder.0.ffn", "decoder.0.heads", "decoder.0.kv"]
    assert built == [s for s in tiny_grouped.unit_sites() if s.layer == 0]
    assert built[1].view_of == "kv" and not built[1].hard_prunable and built[2].hard_prunable
    for bad in (dict(), dict(q="q", k="k", v="v", qkv="qkv"), dict(q="q", k="k")):
        with pytest.raises(ValueError, match="q, k and v, or one fused qkv"):
            AttentionSpec(o="o", module="m", residual="", head_dim=4, **bad)


def test_onnx_format_stays_registered():
    """The ONNX format is registered and detected like any other, as an evaluate-only adapter."""
    from mtprune.formats import FORMATS, EvalAdapter, ModelAdapter, detect_format, get_format

    onnx = get_format("onnx")
    assert FORMATS["onnx"] is onnx and issubclass(onnx, EvalAdapter) and not issubclass(onnx, ModelAdapter)
    assert detect_format({}, {"model.onnx", "mtprune_onnx.json"}) is onnx
    assert all(issubclass(c, ModelAdapter) for n, c in FORMATS.items() if n != "onnx")
