"""``seqcls``: any ``AutoModelForSequenceClassification`` checkpoint, as a one-task model; and the
unit sites of BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM..., DistilBERT), which the
multi-task format shares."""

from __future__ import annotations

from torch import nn

from mtprune.errors import MtpruneError
from mtprune.formats.base import ClassifierAdapter, config_attr, register_format
from mtprune.tasks import TASKS, get_task
from mtprune.units import AttentionSpec, FFNSpec, StackSpec, UnitSite, build_sites


def encoder_sites(model: nn.Module, prefix: str = "") -> list[UnitSite]:
    """Sites of a BERT-family encoder or DistilBERT (``prefix``: the base model's attribute)."""
    cfg = model.config
    p = f"{prefix}." if prefix else ""
    n_heads = config_attr(cfg, "num_attention_heads", "n_heads")
    head_dim = config_attr(cfg, "hidden_size", "dim") // n_heads
    try:
        n_layers = len(model.get_submodule(f"{p}encoder.layer"))
        return build_sites(model, [StackSpec(
            stack="encoder", layers=tuple(f"{p}encoder.layer.{i}" for i in range(n_layers)),
            ffn=FFNSpec(in_proj=("intermediate.dense",), out_proj="output.dense", residual="intermediate",
                        output_norm="output.LayerNorm"),
            attention=AttentionSpec(q="attention.self.query", k="attention.self.key", v="attention.self.value",
                                    o="attention.output.dense", module="attention.self", residual="attention.self",
                                    head_dim=head_dim),
        )])
    except AttributeError:
        pass
    try:
        n_layers = len(model.get_submodule(f"{p}transformer.layer"))
    except AttributeError:
        raise MtpruneError(
            f"{type(model).__name__} is not an encoder mtprune knows (BERT family or DistilBERT)"
        ) from None
    return build_sites(model, [StackSpec(
        stack="encoder", layers=tuple(f"{p}transformer.layer.{i}" for i in range(n_layers)),
        ffn=FFNSpec(in_proj=("ffn.lin1",), out_proj="ffn.lin2", residual="ffn", output_norm="output_layer_norm"),
        attention=AttentionSpec(q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
                                module="attention", residual="attention", head_dim=head_dim),
    )])


@register_format
class SeqClsAdapter(ClassifierAdapter):
    """Any ``AutoModelForSequenceClassification``: one task, the one it was fine-tuned for.

    The task is taken from ``config.finetuning_task`` (or ``mtprune_task``) when the config names
    one; otherwise any task with the same number of labels is accepted.
    """

    format = "seqcls"
    detect_order = 30
    description = "a sequence classifier (AutoModelForSequenceClassification), one task"
    auto_class = "AutoModelForSequenceClassification"

    @classmethod
    def detect(cls, cfg, files):
        return "ForSequenceClassification" in " ".join(cfg.get("architectures") or [])

    @classmethod
    def matches(cls, model):
        return "ForSequenceClassification" in type(model).__name__

    def task_names(self):
        cfg = self.model.config
        named = getattr(cfg, "mtprune_task", None) or getattr(cfg, "finetuning_task", None)
        if named:
            return [named] if named in TASKS else []
        return [t.name for t in TASKS.values() if not t.label_source and t.num_labels == cfg.num_labels]

    def head_for(self, task):
        task = get_task(task) if isinstance(task, str) else task
        if task.num_labels != self.model.config.num_labels:
            raise MtpruneError(
                f"model {self.display_name} has {self.model.config.num_labels} labels but task "
                f"{task.name} has {task.num_labels}"
            )
        return super().head_for(task)

    def logits(self, batch, task):
        self.head_for(task)
        return self.model(**self.inputs(batch)).logits

    def control_logprob(self, batch, task, seed):
        # the same pooled representation the classifier reads, through a seeded random head
        captured = {}
        h = self.model.classifier.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0]))
        try:
            self.model(**self.inputs(batch))
        finally:
            h.remove()
        x = captured["x"]
        if x.dim() == 3:  # RoBERTa-style heads take the whole sequence; use <s>
            x = x[:, 0]
        return self.control_from_pooled(x, batch, task, seed)

    @classmethod
    def model_sites(cls, model):
        return encoder_sites(model, model.base_model_prefix)


__all__ = ["SeqClsAdapter", "encoder_sites"]
