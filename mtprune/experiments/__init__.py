"""Experiments over many masks: sweeps and baselines (SVD...), the paper's settings, unseen domains,
task overlap and multi-task parameter quotas. Everything here returns pandas tables; the CLI verbs
``sweep``, ``overlap``, ``unseen``, ``quota`` and ``transfer`` and the dashboard are thin layers over it.

* :mod:`.core` - parsing, result tables (CSV, keyed rows, resume), :class:`EvalSettings`, the
  :class:`Runner`, and :func:`run_points`: the one place a row is made, keyed, reused or evaluated;
* :mod:`.sweep` - metric against sparsity per task and method (:class:`SweepConfig`,
  :func:`run_sweep`), the paper's settings (:func:`setting_config`), :func:`summarize`, :func:`compare`;
* :mod:`.unseen` - masks from one task evaluated on another set through the same head;
* :mod:`.quota` - one mask for several tasks under a shared parameter quota against an ensemble
  (``mtprune quota``, once ``budget``; not a :class:`mtprune.costs.Budget`);
* :mod:`.overlap` - Jaccard similarity of kept units per layer and task x task;
* :mod:`.transfer` - every task's mask evaluated on every task (does A's mask serve B?).

Every experiment takes a frozen config (validated on construction) and an :class:`EvalSettings`.
"""

from mtprune.experiments.core import (EvalSettings, Group, Point, ResultTable, Runner, parse_methods, parse_sparsities,
                                      read_table, run_points, write_table)
from mtprune.experiments.overlap import (OverlapConfig, OverlapResult, compare_masks, jaccard, layer_jaccard,
                                         mean_layer_jaccard, model_jaccard, overlap_by_layer, overlap_matrix,
                                         random_jaccard, run_overlap)
from mtprune.experiments.quota import (TASK_NORMALISATIONS, QuotaConfig, combine_scores, kept_params, mask_for_quota,
                                       normalise_scores, parse_quota, prunable_params, quota_table, run_quota)
from mtprune.experiments.sweep import (SweepConfig, compare, curves, format_compare, format_summary, plan_runs,
                                       run_sweep, series_label, setting_config, summarize)
from mtprune.experiments.transfer import TransferConfig, format_transfer, run_transfer, transfer_matrix
from mtprune.experiments.unseen import (PAPER_PAIRS, UnseenConfig, parse_pairs, resolve_pair, run_unseen,
                                        unseen_bars, unseen_summary)

__all__ = [
    "PAPER_PAIRS", "TASK_NORMALISATIONS", "EvalSettings", "Group", "OverlapConfig", "OverlapResult", "Point",
    "QuotaConfig", "ResultTable", "Runner", "SweepConfig", "TransferConfig", "UnseenConfig", "format_transfer",
    "run_transfer", "transfer_matrix", "quota_table", "combine_scores", "compare",
    "compare_masks", "curves", "format_compare", "format_summary", "jaccard", "kept_params", "layer_jaccard",
    "mask_for_quota", "mean_layer_jaccard", "model_jaccard", "normalise_scores", "overlap_by_layer",
    "overlap_matrix", "parse_quota", "parse_methods", "parse_pairs", "parse_sparsities", "plan_runs",
    "prunable_params", "random_jaccard", "read_table", "resolve_pair", "run_quota", "run_overlap", "run_points",
    "run_sweep", "run_unseen", "series_label", "setting_config", "summarize", "unseen_bars",
    "unseen_summary", "write_table",
]
