"""``t5``: T5 text-to-text. ``"sst2 sentence: ..."`` in, each label's words scored out."""

from __future__ import annotations

import torch

from mtprune.formats.base import LabelWordAdapter, fields_text, register_format
from mtprune.tasks import TaskSpec
from mtprune.units import sites_for_layers

T5_TYPES = ("t5", "mt5", "umt5")


def t5_sites(model) -> list:
    cfg = model.config
    ffn_in = ("wi_0", "wi_1") if bool(getattr(cfg, "is_gated_act", False)) else ("wi",)
    sites = []
    for stack, ffn_layer in (("encoder", 1), ("decoder", 2)):
        blocks = model.get_submodule(f"{stack}.block")
        layers = [f"{stack}.block.{i}" for i in range(len(blocks))]
        sites += sites_for_layers(
            model, stack, layers,
            (tuple(f"layer.{ffn_layer}.DenseReluDense.{n}" for n in ffn_in), f"layer.{ffn_layer}.DenseReluDense.wo",
             f"layer.{ffn_layer}", ""),
            (tuple(f"layer.0.SelfAttention.{n}" for n in "qkv"), "layer.0.SelfAttention.o", "layer.0.SelfAttention",
             "layer.0"),
            cfg.d_kv,
            # T5 shares one relative position bias across layers: whole heads can be masked and
            # attributed, but not physically removed per layer.
            hard_heads=False,
        )
    return sites


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
