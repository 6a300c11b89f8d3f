"""Experiments over many masks: sweeps and baselines (SVD...), the paper's settings, unseen domains,
task overlap and multi-task budgets. Everything here returns pandas tables; the CLI verbs
``sweep``, ``overlap``, ``unseen`` and ``budget`` and the dashboard are thin layers over it.

* :mod:`.core` - parsing, atomic result tables (CSV, keyed rows, resume), the :class:`Runner`;
* :mod:`.sweep` - metric against sparsity per task and method (:func:`run_sweep`), the paper's
  settings (:func:`setting_config`), :func:`summarize`;
* :mod:`.overlap` - Jaccard similarity of kept units per layer and task x task;
* :mod:`.unseen` - masks from one task evaluated on another set through the same head;
* :mod:`.budget` - one mask for several tasks under a parameter budget against an ensemble.
"""

from mtprune.experiments.budget import (combine_scores, kept_params, mask_for_budget, normalise_scores,
                                        parse_budget, prunable_params, run_budget, unit_costs)
from mtprune.experiments.core import (ResultTable, Runner, parse_methods, parse_sparsities, read_table,
                                      write_table)
from mtprune.experiments.overlap import (jaccard, layer_jaccard, model_jaccard, overlap_by_layer,
                                         overlap_matrix, random_jaccard)
from mtprune.experiments.sweep import (SweepConfig, compare, curves, format_compare, format_summary, plan_runs,
                                       run_sweep, setting_config, summarize)
from mtprune.experiments.unseen import PAPER_PAIRS, parse_pairs, resolve_pair, run_unseen, unseen_summary

__all__ = [
    "PAPER_PAIRS", "ResultTable", "Runner", "SweepConfig", "combine_scores", "compare", "curves", "format_compare",
    "format_summary",
    "jaccard", "kept_params", "layer_jaccard", "mask_for_budget", "model_jaccard", "normalise_scores",
    "overlap_by_layer", "overlap_matrix", "parse_budget", "parse_methods", "parse_pairs",
    "parse_sparsities", "plan_runs", "prunable_params", "random_jaccard", "read_table", "resolve_pair",
    "run_budget", "run_sweep", "run_unseen", "setting_config", "summarize", "unit_costs",
    "unseen_summary", "write_table",
]
