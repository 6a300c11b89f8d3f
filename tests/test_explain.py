"""``mtprune.explain`` and ``mtprune explain``: one sentence through the dense, pruned and repaired
model; its predictions are the evaluation's, its word attributions add up (integrated gradients'
completeness) and cover both texts of a pair, its units' effects are the probability's derivatives;
bad input is one line and exit 2, a long text is truncated and said to be."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mtprune.checkpoints import save_model
from mtprune.errors import MtpruneError
from mtprune.evaluation import evaluate
from mtprune.explain import check_texts, explain
from mtprune.masks import mask_from_scores, save_mask
from mtprune.pipeline import prune
from mtprune.tasks import get_task
from mtprune.units import site_hooks
from tests.conftest import one_line_error, random_scores, run_cli as run


def probs_of(adapter, task, row, mask=None):
    """What the library's evaluation says of one row: every label's probability."""
    return evaluate(adapter, task, rows=[{**row, "label": 0}], mask=mask).predictions.probs[0]


def scores_with_folds(adapter, seed=0):
    """Scores of the tiny model's FFN neurons with fold sums: ranks and intervals to look up."""
    from mtprune.attribution import AttributionSpec, Scores

    rng = np.random.default_rng(seed)
    n = [s.n_units for s in adapter.unit_sites() if s.group == "encoder.ffn"]
    true = rng.random((len(n), max(n)))
    folds = {"encoder.ffn": (true[None] / 8 + 0.02 * rng.standard_normal((8, len(n), max(n)))).astype(np.float32)}
    arrays = {"encoder.ffn": folds["encoder.ffn"].sum(0)}
    return Scores(AttributionSpec("sst2", examples=64), adapter.fingerprint(), arrays, {"encoder.ffn": n},
                  meta={"examples": 64}, folds=folds)


@pytest.fixture
def tiny_dir(tiny_multitask, tmp_path):
    return save_model(tiny_multitask, tmp_path / "tiny")


# ----------------------------------------------------------------------------------------------
# the library


def test_predictions_are_the_evaluations_and_units_carry_their_derivative(tiny_multitask):
    a = tiny_multitask
    mask = mask_from_scores(random_scores(a), 0.5, kinds="all")
    scores = scores_with_folds(a)
    res = explain(a, "sst2", "  a very good movie !  ", mask=mask, scores=scores, top=3)
    row = {"sentence": "a very good movie !"}
    assert res.texts == ("a very good movie !",)
    assert res.dense.probs == pytest.approx(probs_of(a, "sst2", row).tolist(), abs=1e-6)
    assert res.pruned.probs == pytest.approx(probs_of(a, "sst2", row, mask).tolist(), abs=1e-6)
    assert res.pruned.probs != pytest.approx(res.dense.probs, abs=1e-6)
    assert [w.text for w in res.words] == ["a", "very", "good", "movie", "!"]
    # every site's top units by magnitude; kept as the mask says; ranks from the scores
    assert [s.site for s in res.sites] == ["encoder.0.ffn", "encoder.0.heads", "encoder.1.ffn", "encoder.1.heads"]
    ffn1 = res.sites[2]
    assert len(ffn1.top) == 3 and abs(ffn1.top[0].effect) >= abs(ffn1.top[1].effect) >= abs(ffn1.top[2].effect)
    u = ffn1.top[0]
    assert u.unit_id == f"encoder.1.ffn.{u.unit}" and u.kept == bool(mask.keep["encoder.ffn"][1, u.unit])
    col = scores.arrays["encoder.ffn"][1]
    assert u.rank == int((col > col[u.unit]).sum()) + 1 and u.score == pytest.approx(float(col[u.unit]))
    assert u.rank_low <= u.rank_high and 0 <= u.layer_reliability <= 1
    assert re.fullmatch(r"rank \d+ of 48 \(95% \d+-\d+\), layer reliability 0\.\d\d", u.reliability_text())
    assert res.sites[1].top[0].reliability_text() == "reliability unknown"  # no head scores
    # the effect is dP/d(scale of the unit's activation) at 1: a central difference agrees
    site = next(s for s in a.unit_sites() if s.name == "encoder.1.ffn")
    sst2 = get_task("sst2")
    batch = a.encode([row], sst2)

    def p_at(scale):
        def fn(s, x):
            x = x.clone()
            x[..., u.unit, :] *= scale
            return x

        with torch.no_grad(), site_hooks(a.model, [site], fn):
            return float(a.logits(batch, sst2).softmax(-1)[0, res.dense.index])

    eps = 1e-2
    assert (p_at(1 + eps) - p_at(1 - eps)) / (2 * eps) == pytest.approx(u.effect, rel=1e-2, abs=1e-7)


def test_pairs_repair_and_truncation(tiny_multitask):
    a = tiny_multitask
    res = explain(a, "cb", ["the man plays", "a dog runs"], top=2)
    assert [(w.text, w.segment) for w in res.words] == [("the", 0), ("man", 0), ("plays", 0), ("a", 1), ("dog", 1),
                                                        ("runs", 1)]
    assert res.dense.probs == pytest.approx(probs_of(a, "cb", {"premise": "the man plays",
                                                               "hypothesis": "a dog runs"}).tolist(), abs=1e-6)
    assert res.pruned is None and res.sites[0].top[0].kept is None
    assert "reliability unknown" in res.reliability
    mask = mask_from_scores(random_scores(a, 1), 0.5, kinds="ffn")
    rows = [{"sentence": s} for s in ("a very good movie", "an awful boring film", "the plot is slow", "i loved")] * 4
    done = prune(a, "sst2", mask=mask, repair_with="lsq", calibration=rows)  # the CLI test reads the task's rows
    res = explain(a, "sst2", "a very good movie", repaired=done)
    assert res.pruned is not None and res.repaired is not None and res.repair.startswith("repair lsq")
    repaired = probs_of(done.adapter, "sst2", {"sentence": "a very good movie"})
    assert res.repaired.probs == pytest.approx(repaired.tolist(), abs=1e-6)
    long = explain(a, "sst2", " ".join(["good"] * 300))
    assert long.truncated and long.n_tokens == 128 and long.n_tokens_full == 302
    assert long.notes == ("truncated to 128 tokens: the text has 302 and the model reads at most 128",)
    assert len(long.words) == 126  # the words the model read, [CLS] and [SEP] apart
    d = long.to_dict()
    assert json.loads(json.dumps(d))["truncated"] is True and d["tokens"] == 128


def test_bad_texts_are_one_line():
    with pytest.raises(MtpruneError, match="the sentence is empty"):
        check_texts("sst2", "  \n ")
    with pytest.raises(MtpruneError, match=r"mrpc reads a pair of texts \(sentence1 and sentence2\): give both"):
        check_texts("mrpc", ["only one"])
    with pytest.raises(MtpruneError, match="sentence2 is empty"):
        check_texts("mrpc", ["one", " "])
    with pytest.raises(MtpruneError, match="sst2 reads one text"):
        check_texts("sst2", ["one", "two"])


def test_the_default_model_on_a_short_sentence_and_a_pair(default_adapter):
    a = default_adapter
    text = "The film was stupefying, an utterly wonderful mess."
    res = explain(a, "sst2", text, top=2)
    assert res.dense.probs == pytest.approx(probs_of(a, "sst2", {"sentence": text}).tolist(), abs=1e-5)
    assert "stupefying" in [w.text for w in res.words]  # word pieces joined as typed
    # integrated gradients' completeness: the words add up to the change from the padded text
    ig = res.ig
    assert ig["p"] == pytest.approx(res.dense.p, abs=1e-5)
    assert abs(ig["sum"] - (ig["p"] - ig["p_baseline"])) < 0.05 * abs(ig["p"] - ig["p_baseline"]) + 0.01
    pair = explain(a, "mrpc", ["The cat sat on the mat.", "A cat was sitting on the mat."], top=1)
    assert {w.segment for w in pair.words} == {0, 1}
    assert [w.text for w in pair.words if w.segment == 1] == ["A", "cat", "was", "sitting", "on", "the", "mat", "."]
    assert len(pair.sites) == 12 and all(len(s.top) == 1 for s in pair.sites)


# ----------------------------------------------------------------------------------------------
# the command line


def test_cli_json_mask_repair_and_truncation(capsys, tiny_multitask, tiny_dir, tmp_path, shared_home):
    a = tiny_multitask
    mask = mask_from_scores(random_scores(a), 0.5, kinds="all", scope="global")
    mfile = save_mask(mask, tmp_path / "m.json")
    code, out, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--mask", mfile, "--repair", "lsq",
                         "--calib", "16", "--top", "2", "--json", "--device", "cpu", "a very good movie")
    assert code == 0, err
    d = json.loads(out)
    row = {"sentence": "a very good movie"}
    assert list(d["predictions"]) == ["dense", "pruned", "repaired"]
    dense = probs_of(a, "sst2", row)
    assert list(d["predictions"]["dense"]["probs"].values()) == pytest.approx(dense.tolist(), abs=1e-5)
    assert list(d["predictions"]["pruned"]["probs"].values()) == pytest.approx(
        probs_of(a, "sst2", row, mask).tolist(), abs=1e-5)
    assert d["repair"].startswith("repair lsq") and d["mask"]["digest"] == mask.digest()
    assert [w["text"] for w in d["words"]] == ["a", "very", "good", "movie"]
    assert all(len(s["top"]) == 2 for s in d["units"]) and d["truncated"] is False
    code, out, err = run(capsys, "explain", "--model", tiny_dir, "--task", "cb", "--device", "cpu", "the man plays",
                         " ".join(["the dog runs"] * 60))
    assert code == 0, err
    assert "note: truncated to 128 tokens: the text has 186 and the model reads at most 128" in out
    assert re.search(r"^  text 1: the\([+-]", out, re.M) and re.search(r"^  text 2: the\([+-]", out, re.M)
    assert re.search(r"^    encoder\.1\.ffn\.\d+ +[+-]\d", out, re.M)


def test_cli_bad_input_is_one_line(capsys, tiny_multitask, tiny_dir, tmp_path):
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--device", "cpu", "")
    one_line_error(code, err, "the sentence is empty: type some text")
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--device", "cpu")
    one_line_error(code, err, "sst2 reads one text")
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "rte", "--device", "cpu", "one text")
    one_line_error(code, err, "rte reads a pair of texts .*give both")
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--repair", "lsq", "a movie")
    one_line_error(code, err, "--repair lsq refits a pruned model: give its --mask too")
    other = mask_from_scores({"arrays": {"encoder.ffn": np.ones((3, 8), np.float32)},
                              "n_units": {"encoder.ffn": [8, 8, 8]}}, 0.5)
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--device", "cpu",
                       "--mask", save_mask(other, tmp_path / "other.json"), "a movie")
    one_line_error(code, err, "the mask was made for another model")
    code, _, err = run(capsys, "explain", "--model", tiny_dir, "--task", "sst2", "--top", "0", "a movie")
    one_line_error(code, err, "--top must be at least 1")


def test_cli_on_the_default_model(capsys, shared_home):
    code, out, err = run(capsys, "explain", "--task", "sst2", "--device", "cpu", "--top", "1", "a gorgeous, witty film")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "sst2: 'a gorgeous, witty film' (7 tokens)"
    assert re.fullmatch(r"dense    positive \(P 0\.\d{3}; negative 0\.\d{3}, positive 0\.\d{3}\)", lines[1])
    assert re.search(r"^  a\([+-][\d.e-]+\) gorgeous\([+-][\d.e-]+\) ,", out, re.M)
    assert "reliability unknown: no attribution scores of sst2 are cached" in out
    assert len(re.findall(r"^    encoder\.\d\.(ffn|heads)\.\d+ ", out, re.M)) == 12
