"""Decoders of today's shapes with random weights, and random token data: what the scale benchmark
(``benchmarks/bench_scale.py``) and the memory tests run on, with nothing downloaded.

``SHAPES`` names configurations shaped like released models (``llama-1b`` is Llama-3.2-1B's:
16 layers, 2048 wide, 8192 MLP neurons, 32 query heads over 8 key/value heads, a 128k
vocabulary); :func:`build_decoder` builds one with random weights behind the causal-LM adapter and a
word-level tokenizer whose words are the vocabulary (``w0``, ``w1``...), so that a row of ``n`` random
words is ``n`` tokens.
"""

from __future__ import annotations

import random

from mtprune.errors import MtpruneError

# name -> (architecture, config). Sizes of the released models' config.json files.
SHAPES: dict[str, tuple[str, dict]] = {
    "tiny": ("llama", dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
                           num_key_value_heads=2, vocab_size=2000)),
    "small": ("llama", dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=2, vocab_size=8000)),
    "qwen-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                tie_word_embeddings=True, rope_theta=1000000.0)),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                               tie_word_embeddings=True, rope_theta=500000.0)),
    "llama-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                               rope_theta=500000.0)),
}
SPECIALS = ["[PAD]", "[UNK]", "</s>"]


def shape_config(name: str, max_positions: int = 4096):
    """The transformers config of a named shape; one clear line for a name that is not one."""
    if name not in SHAPES:
        raise MtpruneError(f"unknown config {name!r}; configs: {', '.join(SHAPES)}")
    arch, kw = SHAPES[name]
    if arch == "llama":
        from transformers import LlamaConfig as Config
    else:
        from transformers import Qwen2Config as Config
    return Config(max_position_embeddings=max_positions, pad_token_id=0, eos_token_id=2, bos_token_id=2, **kw)


def parameter_count(config) -> int:
    """Parameters of a config's causal LM, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def word_tokenizer(vocab_size: int, words: tuple[str, ...] = ()):
    """A word-level tokenizer over ``vocab_size`` ids: the specials, ``words`` (label words), then
    ``w0``, ``w1``... up to the size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w in dict.fromkeys(words) if w not in SPECIALS])}
    i = 0
    while len(vocab) < vocab_size:
        vocab.setdefault(f"w{i}", len(vocab))
        i += 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>",
                                   model_max_length=1 << 20)


def build_decoder(name: str, device: str = "cpu", dtype: str = "float32", seed: int = 0, task: str = "sst2"):
    """The causal-LM adapter over a random model of the named shape (weights drawn on ``device`` in
    ``dtype``), with a word tokenizer that knows ``task``'s label and prompt words."""
    import torch
    from transformers import AutoModelForCausalLM

    from mtprune.checkpoints import DTYPES, adapter_for
    from mtprune.formats.causal import CAUSAL_PROMPT
    from mtprune.tasks import get_task

    cfg = shape_config(name)
    spec = get_task(task)
    prompt_words = CAUSAL_PROMPT.format(fields=" ".join(f"{f}:" for f in spec.fields),
                                        labels=", ".join(spec.labels)).replace(",", " ").split()
    tok = word_tokenizer(cfg.vocab_size, tuple(spec.labels) + tuple(prompt_words))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPES[dtype])
    return adapter_for(model.eval(), tok, f"random {name}", max_length=cfg.max_position_embeddings)


def random_rows(task: str, n: int, length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """``n`` labelled rows of ``task`` whose fields are ``length`` random vocabulary words in all."""
    from mtprune.tasks import get_task

    spec = get_task(task)
    rng = random.Random(seed)
    words = max(1, vocab_size - 200)
    per_field = max(1, length // len(spec.fields))
    return [{**{f: " ".join(f"w{rng.randrange(words)}" for _ in range(per_field)) for f in spec.fields},
             "label": rng.randrange(spec.num_labels)} for _ in range(n)]
