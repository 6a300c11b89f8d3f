"""``t5``: T5 text-to-text. ``"sst2 sentence: ..."`` in, each label's words scored out."""

from __future__ import annotations

import torch

from mtprune.formats.base import LabelWordAdapter, fields_text, register_format
from mtprune.tasks import TaskSpec
from mtprune.units import AttentionSpec, FFNSpec, StackSpec, build_sites, register_head_rewrite

T5_TYPES = ("t5", "mt5", "umt5")
HEAD_REWRITE = "t5-shared-bias"


class _KeptHeads:
    """A T5 self-attention that lost heads. ``kept_heads`` (a saved buffer) are the stack's original
    heads it still has. T5 computes one relative position bias for all heads in the stack's first
    layer and passes it from layer to layer; this module takes its kept heads' slice of that bias
    and passes the whole bias on, so every layer may keep different heads. With no head left it
    adds nothing (its out projection of an empty input) and still passes the bias on."""

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        full = position_bias if position_bias is not None else self._full_bias(hidden_states, key_value_states, cache)
        if self.kept_heads.numel() == 0:
            return self.o(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), full, None
        out, _, weights = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                          position_bias=full.index_select(1, self.kept_heads), cache=cache, **kwargs)
        return out, full, weights

    def _full_bias(self, hidden_states, key_value_states, cache):
        """The bias of every head of the stack, as the unpruned module computes it."""
        q_len = hidden_states.shape[1]
        past = cache.get_seq_length(self.layer_idx) if cache is not None else 0
        k_len = key_value_states.shape[1] if key_value_states is not None else q_len + past
        if not self.has_relative_attention_bias:
            return torch.zeros((1, self.config.num_heads, q_len, k_len), device=hidden_states.device,
                               dtype=hidden_states.dtype)
        return self.compute_bias(q_len, k_len, device=hidden_states.device, past_seen_tokens=past)


_KEPT_CLASSES: dict[type, type] = {}


def _kept_class(base: type) -> type:
    if base not in _KEPT_CLASSES:
        _KEPT_CLASSES[base] = type(f"{base.__name__}KeptHeads", (_KeptHeads, base), {"__module__": __name__})
    return _KEPT_CLASSES[base]


def remove_heads(model, site, keep_units: torch.Tensor) -> None:
    """Keep ``keep_units`` (indices among the site's current heads) of a T5 self-attention whose
    projections :func:`mtprune.pruning.shrink_site` has sliced: the module becomes a
    :class:`_KeptHeads` one that slices the shared position bias to the heads it keeps."""
    attn = model.get_submodule(site.attn_module)
    if isinstance(attn, _KeptHeads):
        before = attn.kept_heads.cpu()
    else:
        before = torch.arange(site.n_units)
        attn.__class__ = _kept_class(type(attn))
    kept = before[keep_units.to(torch.long).cpu()].clone().to(attn.o.weight.device)
    attn.register_buffer("kept_heads", kept, persistent=True)
    attn.n_heads = int(kept.numel())
    attn.inner_dim = attn.n_heads * attn.key_value_proj_dim


register_head_rewrite(HEAD_REWRITE, remove_heads)


def t5_sites(model) -> list:
    cfg = model.config
    ffn_in = ("wi_0", "wi_1") if bool(getattr(cfg, "is_gated_act", False)) else ("wi",)
    # T5 shares one relative position bias across a stack's layers: removing heads slices it per
    # layer (remove_heads). UMT5 has a table per layer and a forward of its own: masked only.
    soft = "UMT5's per-layer position bias tables are not sliced by mtprune" if cfg.model_type == "umt5" else ""
    attention = AttentionSpec(q="layer.0.SelfAttention.q", k="layer.0.SelfAttention.k", v="layer.0.SelfAttention.v",
                              o="layer.0.SelfAttention.o", module="layer.0.SelfAttention", residual="layer.0",
                              head_dim=cfg.d_kv, head_rewrite=HEAD_REWRITE, soft_reason=soft)
    stacks = []
    for stack, ffn_layer in (("encoder", 1), ("decoder", 2)):
        ff = f"layer.{ffn_layer}.DenseReluDense"
        stacks.append(StackSpec(
            stack=stack, layers=tuple(f"{stack}.block.{i}" for i in range(len(model.get_submodule(f"{stack}.block")))),
            ffn=FFNSpec(in_proj=tuple(f"{ff}.{n}" for n in ffn_in), out_proj=f"{ff}.wo", residual=f"layer.{ffn_layer}",
                        output_norm=""),
            attention=attention,
        ))
    return build_sites(model, stacks)


@register_format
class T5Adapter(LabelWordAdapter):
    """T5 text-to-text: the task's prefix and fields in, each label's words scored out."""

    format = "t5"
    detect_order = 20
    description = "T5 text-to-text: the log-probability of each label's words after the task prefix"
    auto_class = "AutoModelForSeq2SeqLM"

    @classmethod
    def detect(cls, cfg, files):
        archs = " ".join(cfg.get("architectures") or [])
        return cfg.get("model_type") in T5_TYPES or "ConditionalGeneration" in archs

    @classmethod
    def matches(cls, model):
        return bool(getattr(model.config, "is_encoder_decoder", False))

    def prompt(self, task: TaskSpec, row: dict) -> str:
        order = task.t5_field_order or task.fields
        prefix = task.t5_prefix or (task.task_heads[0] if task.label_source else task.name)
        fields = dict(zip(task.fields, fields_text(task, row)))
        return prefix + " " + " ".join(f"{f}: {fields[f]}" for f in order)

    def _eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    def encode(self, rows, task):
        enc = self.tokenizer([self.prompt(task, r) for r in rows], truncation=True,
                             max_length=self.max_length, padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], device=self.device)
        return batch

    def _target_logprob(self, batch, enc_out, targets: list[list[int]]) -> torch.Tensor:
        """Sum of log-probs of ``targets[b]`` as the decoder's output for example ``b``."""
        b = batch["input_ids"].shape[0]
        t = max(len(x) for x in targets)
        pad = self.model.config.pad_token_id or 0
        lab = torch.full((b, t), -100, dtype=torch.long, device=self.device)
        for i, ids in enumerate(targets):
            lab[i, : len(ids)] = torch.tensor(ids, device=self.device)
        dec_in = self.model._shift_right(lab.masked_fill(lab == -100, pad))
        out = self.model(encoder_outputs=enc_out, attention_mask=batch["attention_mask"],
                         decoder_input_ids=dec_in)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        mask = lab != -100
        tok = logp.gather(2, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (tok * mask).sum(1)

    def _encoder(self, batch):
        return self.model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def logits(self, batch, task):
        enc_out = self._encoder(batch)
        b = batch["input_ids"].shape[0]
        cols = [self._target_logprob(batch, enc_out, [ids + self._eos()] * b) for ids in self.label_word_ids(task)]
        return torch.stack(cols, dim=1)

    def control_logprob(self, batch, task, seed):
        enc_out = self._encoder(batch)
        ids = self.control_ids(task, batch["input_ids"].shape[0], seed)
        return self._target_logprob(batch, enc_out, [[i] for i in ids])

    @classmethod
    def model_sites(cls, model):
        return t5_sites(model)
