"""Shared fixtures: tiny random models of every supported architecture, built in code, and the
real default model from ../shared (CI has it beside the clone)."""

from __future__ import annotations

import os
import re

import pytest
import torch

# no test reaches the Hugging Face hub (there is no network here, nor in CI): a fallback to it fails
# at once instead of after a network timeout; set before datasets and huggingface_hub load
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

WORDS = (
    "the a an it is was and or not no yes very good bad great awful movie film food book story "
    "plot actor fun boring slow fast love hate liked loved terrible wonderful sentence question "
    "passage premise hypothesis answer label which fits negative positive entailment "
    "not_entailment contradiction neutral equivalent not_equivalent true false True False "
    "does do did what who where when why how man woman dog cat runs sits eats play plays"
).split()


def make_tokenizer():
    """A word-level fast tokenizer over a small vocabulary, with pad/unk/cls/sep/eos tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)) + list(":?,.!'\n"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", eos_token="</s>", model_max_length=128,
    )


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


def _seed(s=0):
    torch.manual_seed(s)


def tiny_bert_config(tok, **kw):
    from transformers import BertConfig

    base = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=128, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id)
    base.update(kw)
    return BertConfig(**base)


@pytest.fixture
def tiny_multitask(tokenizer):
    """A 2-layer BERT with heads for sst2 (2 labels) and cb (3 labels)."""
    from transformers import BertModel

    from mtprune.checkpoints import adapter_for

    _seed(0)
    model = BertModel(tiny_bert_config(tokenizer), add_pooling_layer=True)
    heads = {"sst2": torch.nn.Linear(32, 2), "cb": torch.nn.Linear(32, 3), "rte": torch.nn.Linear(32, 2)}
    return adapter_for(model, tokenizer, "tiny-multitask", heads=heads)


@pytest.fixture
def tiny_seqcls(tokenizer):
    from transformers import BertForSequenceClassification

    from mtprune.checkpoints import adapter_for

    _seed(1)
    model = BertForSequenceClassification(tiny_bert_config(tokenizer, num_labels=2))
    return adapter_for(model, tokenizer, "tiny-seqcls")


@pytest.fixture(params=["t5", "t5-gated"])
def tiny_t5(request, tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    from mtprune.checkpoints import adapter_for

    _seed(2)
    gated = request.param == "t5-gated"
    cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2,
                   num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu" if gated else "relu",
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id)
    return adapter_for(T5ForConditionalGeneration(cfg), tokenizer, f"tiny-{request.param}")


@pytest.fixture(params=["llama", "gpt2"])
def tiny_causal(request, tokenizer):
    from mtprune.checkpoints import adapter_for

    _seed(3)
    if request.param == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(cfg)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tokenizer.pad_token_id)
        model = GPT2LMHeadModel(cfg)
    return adapter_for(model, tokenizer, f"tiny-{request.param}")


def make_grouped(kind: str, tokenizer, seed: int = 4):
    """A 2-layer grouped-query decoder built in code: ``llama`` (8 query heads over 2 key/value
    heads) or ``qwen2`` (8 over 4, with q/k/v biases)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from mtprune.checkpoints import adapter_for

    _seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=8, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **common))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=4, **common))
    else:
        raise ValueError(kind)
    return adapter_for(model, tokenizer, f"tiny-{kind}-gqa")


@pytest.fixture(params=["llama", "qwen2"])
def tiny_grouped(request, tokenizer):
    return make_grouped(request.param, tokenizer)


SST2_ROWS = [
    {"sentence": "a very good movie", "label": 1},
    {"sentence": "an awful boring film", "label": 0},
    {"sentence": "i loved the story", "label": 1},
    {"sentence": "the plot is slow and bad", "label": 0},
    {"sentence": "wonderful actor great fun", "label": 1},
    {"sentence": "terrible", "label": 0},
]
CB_ROWS = [
    {"premise": "the man plays", "hypothesis": "a man plays", "label": 0},
    {"premise": "the dog sits", "hypothesis": "the dog runs", "label": 1},
    {"premise": "a cat eats", "hypothesis": "the cat is good", "label": 2},
]


@pytest.fixture
def sst2_rows():
    return [dict(r) for r in SST2_ROWS]


@pytest.fixture
def cb_rows():
    return [dict(r) for r in CB_ROWS]


@pytest.fixture(scope="session")
def shared_home():
    from mtprune import assets

    root = assets.home()
    if root is None or not (root / "models" / "minilm-l6-mt6").is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared is missing in CI")
        pytest.skip("the default model (../shared) is not here")
    return root


@pytest.fixture(scope="session")
def default_adapter(shared_home):
    """The real default model, loaded once per test session (treat it as read-only)."""
    from mtprune.checkpoints import load_adapter

    return load_adapter("default", device="cpu")


def random_scores(adapter, seed: int = 0) -> dict:
    """Seeded uniform scores in the layout of :class:`mtprune.attribution.Scores` for the
    adapter's units (NaN past a layer's units): masks that do not depend on any attribution."""
    import numpy as np

    from mtprune.units import layout

    shapes, n_units = layout(adapter.unit_sites())
    rng = np.random.default_rng(seed)
    arrays = {}
    for g, (n_layers, width) in shapes.items():
        a = np.full((n_layers, width), np.nan, dtype=np.float32)
        for layer, c in enumerate(n_units[g]):
            a[layer, :c] = rng.random(c)
        arrays[g] = a
    return {"arrays": arrays, "n_units": n_units}


@pytest.fixture(autouse=True)
def _threads(request):
    """One torch thread for tiny models (no OpenMP hand-offs for 32-wide matrices; on a shared
    2-core machine two threads spin-wait and run at a fraction of the speed); the real model gets
    the cores the load leaves free."""
    n = torch.get_num_threads()
    if "default_adapter" in request.fixturenames:
        from mtprune.attribution import threads_for_load

        torch.set_num_threads(threads_for_load())
    else:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own score cache unless it sets MTPRUNE_CACHE itself."""
    monkeypatch.setenv("MTPRUNE_CACHE", str(tmp_path_factory.mktemp("cache")))


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def hub_offline(monkeypatch) -> None:
    """The Hugging Face hub unreachable at once (as ``HF_HUB_OFFLINE=1``), instead of after a
    network timeout: for tests whose data or model falls back to the hub. The flags are read when
    the libraries load, and an earlier test may have loaded them already."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def run_cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``mtprune *argv`` in this process (argparse's own errors
    exit 2 through SystemExit: its code is returned too)."""
    from mtprune.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, pattern):
    """The CLI's bad-input contract: exit 2, one line on stderr matching ``pattern``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
