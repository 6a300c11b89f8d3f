"""What the dashboard shows, without streamlit: sidebar choices, tables, progress mapping."""

import numpy as np
import pytest

from mtprune.costs import Budget
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


def test_recorded_accuracy_of_dense_and_pruned_models(default_adapter, tiny_multitask, tmp_path):
    assert V.recorded_accuracy(default_adapter, "sst2") == (pytest.approx(0.8842),
                                                            "recorded at training (validation split)")
    assert V.recorded_accuracy(default_adapter, "imdb")[0] == pytest.approx(0.8842)  # through sst2's head
    assert V.recorded_accuracy(default_adapter, "cola") == (None, "no head")
    # a pruned model: what was measured on it, or "not measured", never the source's figure
    from mtprune.checkpoints import load_adapter, save_model
    from mtprune.evaluation import evaluate
    from mtprune.pruning import hard_prune
    from tests.conftest import SST2_ROWS, random_scores

    a = tiny_multitask
    a.tasks_meta = {"tasks": {"sst2": {"validation_accuracy": 0.9}, "cb": {"validation_accuracy": 0.8}}}
    small = hard_prune(a, mask_from_scores(random_scores(a), 0.5))
    res = evaluate(small, "sst2", rows=[dict(r) for r in SST2_ROWS])
    back = load_adapter(str(save_model(small, tmp_path / "p", measured={"sst2": res})))
    assert V.recorded_accuracy(back, "sst2") == (res.accuracy, "measured on this pruned model (6 validation rows)")
    assert V.recorded_accuracy(back, "cb") == (None, "not measured on this pruned model")
    assert back.tasks_meta["tasks"]["sst2"]["validation_accuracy"] is None


def test_sweep_config_from_the_sidebar_spec():
    from mtprune.attribution import AttributionSpec

    cfg = V.sweep_config(AttributionSpec("rte", examples=32, seed=3), ["ap", "random"], [0.0, 0.5])
    assert cfg.tasks == ("rte",) and cfg.examples == (32,) and cfg.seed == 3 and cfg.sparsities == (0.0, 0.5)
    with pytest.raises(MtpruneError, match="unknown method"):
        V.sweep_config(AttributionSpec("rte"), ["nope"], [0.5])


def test_percentages_as_the_sliders_show_them():
    assert V.parse_percentages("0, 20, 40%, 40 ,60") == (0.0, 0.2, 0.4, 0.6)
    for bad, msg in (("0, 200", "outside"), ("ten", "not a number"), (" , ", "at least one")):
        with pytest.raises(MtpruneError, match=msg):
            V.parse_percentages(bad)


def test_mask_slugs_say_the_mask():  # export names: mtprune.export.default_name (tests/test_export.py)
    sparsity = {"mode": "sparsity", "sparsity": {"ffn": 0.7, "heads": 0.25}, "scope": "layer"}
    assert V.mask_slug(sparsity) == "ffn70-heads25"
    assert V.mask_slug({**sparsity, "sparsity": {"ffn": 0.7, "heads": 0.0}}) == "ffn70"
    assert V.mask_slug({"mode": "budget", "budget": Budget("flops", 0.6)}) == "flops60"
    assert V.mask_slug({"mode": "budget", "budget": Budget("params", 0.35)}) == "params35"
    assert V.per_layer_label(3, 12) == "3 of 12 heads per layer pruned (25%)"
    assert V.per_layer_label(1, 8, "key/value groups") == "1 of 8 key/value groups per layer pruned (12%)"


def _result(task, gold, pred, probs):
    from mtprune.evaluation import EvalResult, Predictions, compute_metrics, intervals

    gold, pred = np.array(gold), np.array(pred)
    m = compute_metrics(task, pred, gold)
    return EvalResult(task.name, "validation", len(gold), m["accuracy"], m, intervals=intervals(task, pred, gold),
                      predictions=Predictions(gold, pred, np.array(probs)))


def test_flips_table_and_confusion_by_hand():
    from mtprune.tasks import get_task

    t = get_task("sst2")
    rows = [{"sentence": s, "label": g} for s, g in (("good", 1), ("bad", 0), ("fine", 1), ("awful", 0))]
    dense = _result(t, [1, 0, 1, 0], [1, 0, 0, 0], [[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    pruned = _result(t, [1, 0, 1, 0], [0, 0, 1, 0], [[0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    df = V.flips_table(rows, t, dense, pruned)
    assert list(df["what changed"]) == ["right -> wrong", "both right", "wrong -> right", "both right"]
    assert list(df["pruned"]) == ["negative", "negative", "positive", "negative"]
    np.testing.assert_allclose(df["change in P(gold)"], [-0.4, -0.1, 0.3, -0.15])
    assert list(df["text"]) == ["good", "bad", "fine", "awful"]
    c = V.confusion_frame(dense, t)
    assert c.loc["positive", "negative"] == 1 and c.loc["negative", "negative"] == 2 and c.to_numpy().sum() == 4
    with pytest.raises(MtpruneError, match="same rows"):
        V.flips_table(rows[:3], t, dense, pruned)


def test_tokens_are_escaped_and_shaded_by_activation():
    html = V.tokens_html(["[CLS]", "<b>", "##ad", "Ġword"], [0.0, 2.0, -4.0, 1.0])
    assert "&lt;b&gt;" in html and "<b>" not in html  # a token is text, never markup
    assert "rgba(231, 111, 81, 0.50)" in html and "rgba(231, 111, 81, 1.00)" in html  # |-4| is the peak
    assert ">ad</span>" in html and " <span" in html  # a word piece joins its word; a new word gets a space


def test_one_unit_in_every_task_and_picked_points():
    class S:
        def __init__(self, a):
            self.arrays = {"encoder.ffn": np.array(a, dtype=float)}

    t = V.unit_task_table({"sst2": S([[1, 5, 3], [0, 0, 0]]), "rte": S([[9, 1, 2], [0, 0, 0]]), "cb": None},
                          "encoder.ffn", 0, 1, selected="sst2")
    assert list(t["rank in layer"][:2]) == [1, 3] and list(t["percentile"][:2]) == [100.0, 0.0]
    assert np.isnan(t["score"].iloc[2]) and bool(t["selected"].iloc[0])
    assert V.picked_unit([{"x": 4, "y": 2, "customdata": [17, 3, 0.5]}]) == (2, 17)
    assert V.picked_unit([{"x": 4, "customdata": [9.0, 1]}], layer=5) == (5, 9)
    # what the browser sends for a float32 typed array's row
    assert V.picked_unit([{"x": 548, "y": 2, "customdata": {"0": 548, "1": 544, "2": 0.66}}]) == (2, 548)
    assert V.picked_unit([]) is None and V.picked_unit([{"x": 1, "y": 2}]) is None


def test_history_points_and_eta():
    import pandas as pd

    df = pd.DataFrame([{"task": "sst2", "split": "validation", "metric": "accuracy", "sparsity": 0.7, "value": 0.8,
                        "low": 0.7, "high": 0.9, "method": "ap", "how": "ffn70", "rows": 100, "repair": "none"},
                       {"task": "sst2", "split": "validation", "metric": "accuracy", "sparsity": None, "value": 0.8,
                        "low": 0.7, "high": 0.9, "method": "ap", "how": "flops60", "rows": 100, "repair": "lsq"}])
    pts = V.history_points(df, "sst2", "validation")
    assert list(pts["sparsity"]) == [0.7] and pts["label"].iloc[0] == "ap · ffn70 · 100 rows"
    assert V.history_points(df, "rte", "validation").empty
    assert V.eta_text(10, 40, 5.0) == "10 / 40 · about 15 s left"
    assert V.eta_text(0, 40, 0.0) == "0 / 40"


def _scores_with_folds(seed: int = 0, noise: float = 0.1):
    from mtprune.attribution import AttributionSpec, Scores

    rng = np.random.default_rng(seed)
    true = rng.random((2, 40))
    folds = {"encoder.ffn": (true[None] / 8 + noise * rng.standard_normal((8, 2, 40))).astype(np.float32)}
    arrays = {g: f.sum(0) for g, f in folds.items()}
    return Scores(AttributionSpec("sst2", examples=64), "fp", arrays, {"encoder.ffn": [40, 40]},
                  meta={"examples": 64}, folds=folds)


def test_reliability_words_warning_and_a_units_intervals():
    from dataclasses import replace

    s = _scores_with_folds()
    rel = V.reliabilities(s)
    line = V.reliability_line(s, rel, "encoder.ffn")
    assert line.startswith(f"reliability {rel['encoder.ffn'].spearman:.2f}: another draw of 64 examples would rank "
                           "these neurons with Spearman")
    assert V.layer_reliability(rel, "encoder.ffn") == list(rel["encoder.ffn"].per_layer)
    noisy = _scores_with_folds(noise=1.0)
    low = V.low_reliability(V.reliabilities(noisy))
    assert list(low) == ["ffn"] and "these maps are mostly the draw of examples" in V.low_reliability_warning(low, 64)
    assert V.reliability_line(replace(s, folds=None), {}, "encoder.ffn").startswith("reliability unknown")
    unit = V.unit_line(s, "encoder.ffn", 1, 5, "sst2", 0.5)
    df = s.to_frame()
    r = df[(df["layer"] == 1) & (df["unit"] == 5)].iloc[0]
    assert f"rank {r['rank']}, 95% {r['rank_low']}-{r['rank_high']} of 40 in its layer for sst2" in unit
    assert "Kept in " in unit and "% of draws of as many examples at 50% pruned per layer" in unit
    assert "interval is unknown" in V.unit_line(replace(s, folds=None), "encoder.ffn", 1, 5, "sst2", 0.5)
    assert V.doublings(64, 1024) == [64, 128, 256, 512, 1024] and V.doublings(16, 40) == [16, 32, 40]
    series = V.reliability_series({64: rel, 128: {}})
    assert list(series) == ["encoder FFN neurons"] and np.isnan(series["encoder FFN neurons"][1])


def test_word_pieces_show_as_whole_words_and_counts_agree_with_their_nouns():
    from mtprune.text import join_pieces, plural

    assert join_pieces(["[CLS]", "stu", "##pe", "##fying", "film", "[SEP]"]) == [
        ("[CLS]", [0]), ("stupefying", [1, 2, 3]), ("film", [4]), ("[SEP]", [5])]
    assert [w for w, _ in join_pieces(["▁stu", "pe", "fying", "▁film", "."])] == ["stupefying", "film."]
    assert [w for w, _ in join_pieces(["<s>", "Ġstu", "pe", "fying", "</s>"])] == ["<s>", "stupefying", "</s>"]
    html = V.tokens_html(["[CLS]", "stu", "##pe", "##fying", "film"], [0.0, 0.1, 2.0, 0.5, 1.0])
    assert ">stupefying</span>" in html and ">stu<" not in html  # one word, not three pieces
    assert "rgba(231, 111, 81, 1.00)" in html and "stupefying: stu 0.1, ##pe 2, ##fying 0.5" in html
    assert (plural(1, "row"), plural(2, "row"), plural(1024, "example")) == ("1 row", "2 rows", "1,024 examples")
