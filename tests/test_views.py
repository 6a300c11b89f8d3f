"""What the dashboard shows, without streamlit: sidebar choices, tables, progress mapping."""

import numpy as np
import pytest

from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.tasks import BENCHMARK
from ui import views as V


def test_sidebar_choices(shared_home):
    assert V.model_options()[0] == "default" and V.model_options()[-1] == V.OTHER_MODEL
    assert V.task_options()[:6] == list(BENCHMARK)
    assert V.default_eval_split("mnli") == "validation_matched"
    assert V.unseen_targets("sst2", cross_task=False)[:2] == ["imdb", "yelp"]
    assert "scitail" in V.unseen_targets("rte", cross_task=False)
    assert V.unseen_targets("rte")[-1] == "boolq"  # then the other benchmark tasks
    assert V.task_label("sst2") == "sst2: movie review sentiment"


def test_tables_from_model_info_and_masks(tiny_multitask):
    info = tiny_multitask.info()
    assert info["units"] == {"encoder.ffn": [48, 48], "encoder.heads": [4, 4]} and info["layers"] == 2
    table = V.units_table(info)
    assert table.shape == (2, 2) and list(table.iloc[0]) == [48, 4]
    assert V.units_line(info) == "48 FFN neurons, 4 heads"
    rng = np.random.default_rng(0)
    scores = {"arrays": {"encoder.ffn": rng.random((2, 48)), "encoder.heads": rng.random((2, 4))},
              "n_units": {"encoder.ffn": [48, 48], "encoder.heads": [4, 4]}}
    m = mask_from_scores(scores, {"ffn": 0.5, "heads": 0.25})
    t = V.mask_table(m)
    assert t.iloc[0, 0] == "24 / 48" and t.iloc[0, 1] == "3 / 4"


def test_split_progress_maps_parts_onto_one_bar():
    seen = []
    a, b = V.split_progress(lambda f, t: seen.append((round(f, 3), t)), ["dense", "pruned"])
    a(5, 10)
    b(10, 10)
    assert seen == [(0.25, "dense: 5 / 10"), (1.0, "pruned: 10 / 10")]


def test_recorded_metric_reads_tasks_json(default_adapter):
    assert V.recorded_metric(default_adapter, "sst2") == pytest.approx(0.8842)
    assert V.recorded_metric(default_adapter, "imdb") == pytest.approx(0.8842)  # through sst2's head
    assert V.recorded_metric(default_adapter, "cola") is None


def test_sweep_config_from_the_sidebar_spec():
    from mtprune.attribution import AttributionSpec

    cfg = V.sweep_config(AttributionSpec("rte", examples=32, seed=3), ["ap", "random"], [0.0, 0.5])
    assert cfg.tasks == ("rte",) and cfg.examples == (32,) and cfg.seed == 3 and cfg.sparsities == (0.0, 0.5)
    with pytest.raises(MtpruneError, match="unknown method"):
        V.sweep_config(AttributionSpec("rte"), ["nope"], [0.5])
