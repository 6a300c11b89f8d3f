"""``causal``: decoder-only LMs (Llama, Qwen, Mistral, GPT-2 style): a prompt with the task's
fields, then the log-probability of each label's words."""

from __future__ import annotations

import torch

from mtprune.errors import MtpruneError
from mtprune.formats.base import LabelWordAdapter, fields_text, register_format
from mtprune.tasks import TaskSpec
from mtprune.units import AttentionSpec, FFNSpec, StackSpec, build_sites

CAUSAL_PROMPT = "{fields}\nQuestion: which label fits: {labels}?\nAnswer:"


def causal_sites(model) -> list:
    cfg = model.config
    base = getattr(model, "model", None)
    if base is not None and hasattr(base, "layers"):  # Llama, Qwen, Mistral, Gemma...
        n_heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or n_heads
        mlp = model.get_submodule("model.layers.0.mlp")
        # grouped-query attention: key/value groups are removed physically, single query heads masked
        return build_sites(model, [StackSpec(
            stack="decoder", layers=tuple(f"model.layers.{i}" for i in range(len(base.layers))),
            ffn=FFNSpec(in_proj=tuple(f"mlp.{n}" for n in ("gate_proj", "up_proj") if hasattr(mlp, n)),
                        out_proj="mlp.down_proj", residual="post_attention_layernorm", output_norm=""),
            attention=AttentionSpec(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                                    o="self_attn.o_proj", module="self_attn", residual="",
                                    head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads,
                                    query_per_kv=n_heads // kv),
        )])
    tr = getattr(model, "transformer", None)
    if tr is not None and hasattr(tr, "h"):  # GPT-2: one fused q|k|v Conv1D
        return build_sites(model, [StackSpec(
            stack="decoder", layers=tuple(f"transformer.h.{i}" for i in range(len(tr.h))),
            ffn=FFNSpec(in_proj=("mlp.c_fc",), out_proj="mlp.c_proj", residual="ln_2", output_norm=""),
            attention=AttentionSpec(qkv="attn.c_attn", o="attn.c_proj", module="attn", residual="ln_1",
                                    head_dim=cfg.n_embd // cfg.n_head),
        )])
    raise MtpruneError(f"{type(model).__name__} is not a decoder-only LM mtprune knows (Llama/Qwen/GPT-2 style)")


@register_format
class CausalLMAdapter(LabelWordAdapter):
    """Decoder-only LMs: a prompt with the task's fields, then each label's words scored."""

    format = "causal"
    detect_order = 40
    description = "a decoder-only LM: the log-probability of each label's words after a prompt"
    auto_class = "AutoModelForCausalLM"

    @classmethod
    def detect(cls, cfg, files):
        archs = " ".join(cfg.get("architectures") or [])
        return "ForCausalLM" in archs or "LMHeadModel" in archs

    @classmethod
    def matches(cls, model):
        name = type(model).__name__
        return "CausalLM" in name or "LMHead" in name

    @classmethod
    def prepare_tokenizer(cls, tokenizer):
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def prompt(self, task: TaskSpec, row: dict) -> str:
        fields = "\n".join(f"{f}: {t}" for f, t in zip(task.fields, fields_text(task, row)))
        return CAUSAL_PROMPT.format(fields=fields, labels=", ".join(task.labels))

    def label_text(self, word):
        return " " + word

    def encode(self, rows, task):
        prompts = [self.tokenizer(self.prompt(task, r), add_special_tokens=True)["input_ids"] for r in rows]
        keep = self.max_length - 8
        prompts = [p[-keep:] for p in prompts]  # keep the end: the question and "Answer:"
        batch = {"prompt_ids": prompts}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], device=self.device)
        return batch

    def _continuation_logprob(self, prompts: list[list[int]], conts: list[list[int]]) -> torch.Tensor:
        """Sum of log-probs of each continuation after its prompt, right-padded in one batch."""
        seqs = [p + c for p, c in zip(prompts, conts)]
        t = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), t), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), t), dtype=torch.long)
        tgt = torch.full((len(seqs), t), -100, dtype=torch.long)
        for i, (p, c) in enumerate(zip(prompts, conts)):
            s = p + c
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            tgt[i, len(p) - 1 : len(s) - 1] = torch.tensor(c)  # position j predicts token j+1
        ids, att, tgt = ids.to(self.device), att.to(self.device), tgt.to(self.device)
        mask = tgt != -100
        head = self._plain_lm_head()
        if head is None:
            logits = self.model(input_ids=ids, attention_mask=att).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            tok = logp.gather(2, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return (tok * mask).sum(1)
        # the vocabulary's logits only where a continuation token is predicted: a batch x length x
        # vocabulary tensor (8 GB in float32 for 8k tokens of a 128k vocabulary) is never formed
        hidden = self.model.base_model(input_ids=ids, attention_mask=att).last_hidden_state
        rows, cols = mask.nonzero(as_tuple=True)
        logp = torch.log_softmax(head(hidden[rows, cols]).float(), dim=-1)
        tok = logp.gather(1, tgt[rows, cols].unsqueeze(-1)).squeeze(-1)
        return torch.zeros(len(seqs), dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)

    def _plain_lm_head(self):
        """The output layer when logits are just it applied to the last hidden states (no scaling or
        soft-capping of the logits, a base model apart), else None."""
        cfg = self.model.config
        if any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in ("final_logit_softcapping", "logit_scale")):
            return None
        head = self.model.get_output_embeddings()
        base = getattr(self.model, "base_model", None)
        if head is None or base is None or base is self.model or not isinstance(head, torch.nn.Linear):
            return None
        return head

    def logits(self, batch, task):
        prompts = batch["prompt_ids"]
        cols = [self._continuation_logprob(prompts, [ids] * len(prompts)) for ids in self.label_word_ids(task)]
        return torch.stack(cols, dim=1)

    def control_logprob(self, batch, task, seed):
        prompts = batch["prompt_ids"]
        ids = self.control_ids(task, len(prompts), seed)
        return self._continuation_logprob(prompts, [[i] for i in ids])

    @classmethod
    def model_sites(cls, model):
        return causal_sites(model)
