"""Runs kept whole on disk (mtprune.runs): a run written and read back is the same evaluation,
listed newest first, deleted, refused for another model with one line; two runs compared; and
the speed-ups behind them: pruned models evaluated sliced, dense logits kept on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mtprune.errors import MtpruneError
from mtprune.evaluation import evaluate
from mtprune.masks import mask_from_scores
from mtprune.runs import Run, RunStore, compare_runs, mask_difference, run_id
from tests.conftest import random_scores


def _mask(adapter, sparsity, seed=0):
    return mask_from_scores(random_scores(adapter, seed), {"ffn": sparsity, "heads": 0.25}, scope="layer")


def _run(adapter, rows, sparsity=0.5, seed=0, **kw) -> Run:
    mask = _mask(adapter, sparsity, seed)
    dense = evaluate(adapter, "sst2", "validation", rows=rows)
    pruned = evaluate(adapter, "sst2", "validation", rows=rows, mask=mask, prune="hard")
    rid = run_id({"model": adapter.fingerprint(), "digest": mask.digest(), "seed": seed})
    return Run(id=rid, fingerprint=adapter.fingerprint(), model="tiny", task="sst2", split="validation",
               limit=len(rows), results={"dense": dense, "pruned": pruned}, mask=mask,
               settings={"how": f"ffn{round(sparsity * 100)}", "method": "random"},
               reliability={"examples": 0, "reliability": None}, **kw)


def test_a_run_written_and_read_back_is_the_same_evaluation(tiny_multitask, sst2_rows, tmp_path):
    run = _run(tiny_multitask, sst2_rows, repair={"solver": "lsq", "summary": "repair lsq: 2 of 4 sites"})
    store = RunStore(tiny_multitask.fingerprint(), tmp_path)
    path = store.save(run)
    assert path == tmp_path / "runs" / tiny_multitask.fingerprint()[:16] / f"{run.id}.safetensors"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    from safetensors import safe_open  # plain tensors and a JSON header: nothing to unpickle

    with safe_open(str(path), framework="np") as f:
        assert json.loads(f.metadata()["run"])["id"] == run.id and "r1.probs" in f.keys()
    back = RunStore(tiny_multitask.fingerprint(), tmp_path).load(run.id)
    assert back.id == run.id and back.created == run.created and back.repair["summary"].startswith("repair lsq")
    assert back.mask == run.mask and back.mask_digest == run.mask.digest()
    for name in ("dense", "pruned"):
        a, b = run.results[name], back.results[name]
        assert (b.accuracy, b.n, b.metrics, b.intervals) == (a.accuracy, a.n, a.metrics, a.intervals)
        np.testing.assert_array_equal(b.predictions.pred, a.predictions.pred)
        np.testing.assert_allclose(b.predictions.probs, a.predictions.probs, rtol=0, atol=1e-7)
    assert back.comparisons()["pruned"] == run.comparisons()["pruned"]
    # the whole run as JSON data and back
    again = Run.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.mask == run.mask and again.final.accuracy == run.final.accuracy
    np.testing.assert_array_equal(again.final.predictions.gold, run.final.predictions.gold)


def test_list_newest_first_by_task_and_delete(tiny_multitask, sst2_rows, tmp_path):
    store = RunStore(tiny_multitask.fingerprint(), tmp_path)
    first = _run(tiny_multitask, sst2_rows, 0.3, created="2026-01-01 10:00:00")
    second = _run(tiny_multitask, sst2_rows, 0.7, seed=1, created="2026-01-02 10:00:00")
    assert first.id != second.id
    store.save(first)
    store.save(second)
    infos = store.list("sst2")
    assert [i.id for i in infos] == [second.id, first.id]
    assert infos[0].settings["how"] == "ffn70" and infos[0].final == ("pruned", pytest.approx(second.final.accuracy))
    assert second.id in infos[0].label() and "6 rows" in infos[0].label()
    assert store.list("cb") == []
    store.delete(first.id)
    assert [i.id for i in store.list()] == [second.id]
    with pytest.raises(MtpruneError, match="no run .* it was deleted"):
        store.load(first.id)
    with pytest.raises(MtpruneError, match="no run"):
        store.delete(first.id)


def test_another_models_run_a_bad_id_and_a_damaged_file_are_one_line(tiny_multitask, tiny_seqcls, sst2_rows,
                                                                      tmp_path):
    run = _run(tiny_multitask, sst2_rows)
    RunStore(tiny_multitask.fingerprint(), tmp_path).save(run)
    other = RunStore(tiny_seqcls.fingerprint(), tmp_path)
    with pytest.raises(MtpruneError, match=r"made with another model \(tiny\): choose that model") as exc:
        other.load(run.id)
    assert "\n" not in str(exc.value)
    with pytest.raises(MtpruneError, match="another model"):
        other.save(run)
    with pytest.raises(MtpruneError, match="not a run id"):
        other.load("../../etc/passwd")
    # a file that is not a whole run: one line, and the list leaves it out
    store = RunStore(tiny_multitask.fingerprint(), tmp_path)
    store.path("0123456789ab").write_bytes(b"\x00" * 40)
    with pytest.raises(MtpruneError, match="run 0123456789ab does not read"):
        store.load("0123456789ab")
    assert [i.id for i in store.list()] == [run.id]


def test_a_run_refuses_results_on_other_rows(tiny_multitask, sst2_rows):
    dense = evaluate(tiny_multitask, "sst2", rows=sst2_rows)
    fewer = evaluate(tiny_multitask, "sst2", rows=sst2_rows[:4])
    with pytest.raises(MtpruneError, match="not on the dense result's rows"):
        Run(id="0" * 12, fingerprint="f" * 32, model="m", task="sst2", split="validation", limit=None,
            results={"dense": dense, "pruned": fewer})
    with pytest.raises(MtpruneError, match="dense result and at least one other"):
        Run(id="0" * 12, fingerprint="f" * 32, model="m", task="sst2", split="validation", limit=None,
            results={"dense": dense})


def test_two_runs_compared_and_their_masks_per_layer(tiny_multitask, sst2_rows):
    a = _run(tiny_multitask, sst2_rows, 0.3)
    b = _run(tiny_multitask, sst2_rows, 0.9, seed=1)
    both = compare_runs(a, b)
    pa, pb = a.final.predictions, b.final.predictions
    assert both.comparison.a_only == int((pa.correct & ~pb.correct).sum())
    assert both.comparison.b_only == int((~pa.correct & pb.correct).sum())
    assert list(both.differ) == list(np.flatnonzero(pa.pred != pb.pred))
    diff = both.masks["encoder.ffn"]
    n = a.mask.n_units["encoder.ffn"]
    assert [x + y for x, y in zip(diff["both"], diff["only_a"])] == a.mask.kept_per_layer("encoder.ffn")
    assert [x + y for x, y in zip(diff["both"], diff["only_b"])] == b.mask.kept_per_layer("encoder.ffn")
    assert diff["n_units"] == n and sum(diff["only_a"]) > 0
    assert mask_difference(a.mask, a.mask)["encoder.ffn"]["only_a"] == [0] * len(n)
    fewer = Run(id="1" * 12, fingerprint=a.fingerprint, model="tiny", task="sst2", split="validation", limit=4,
                results={"dense": evaluate(tiny_multitask, "sst2", rows=sst2_rows[:4]),
                         "pruned": evaluate(tiny_multitask, "sst2", rows=sst2_rows[:4], mask=a.mask)})
    with pytest.raises(MtpruneError, match="not on the same rows"):
        compare_runs(a, fewer)


# ----------------------------------------------------------------------------------------------
# speed: sliced models and dense logits on disk


def test_hard_and_soft_pruned_evaluations_agree(tiny_multitask, sst2_rows):
    mask = _mask(tiny_multitask, 0.6)
    soft = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=mask, prune="soft")
    hard = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=mask, prune="hard")
    auto = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=mask, prune="auto")
    assert (soft.how, hard.how, auto.how) == ("soft", "hard", "hard")
    np.testing.assert_allclose(hard.predictions.probs, soft.predictions.probs, atol=1e-5)
    assert not tiny_multitask.model._forward_hooks  # the dense model is left as it was
    with pytest.raises(MtpruneError, match="prune must be one of"):
        evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=mask, prune="sliced")


def test_grouped_query_heads_fall_back_to_hooks(tokenizer, sst2_rows):
    from tests.conftest import make_grouped

    adapter = make_grouped("llama", tokenizer)
    mask = mask_from_scores(random_scores(adapter), {"heads": 0.25})  # single query heads: masked only
    res = evaluate(adapter, "sst2", rows=sst2_rows, mask=mask, prune="auto")
    assert res.how == "soft"


def test_dense_logits_are_kept_on_disk(tiny_multitask, sst2_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("MTPRUNE_CACHE", str(tmp_path))
    first = evaluate(tiny_multitask, "sst2", "validation", rows=sst2_rows, cache_logits=True)
    files = list((tmp_path / "logits").glob("*.safetensors"))
    assert first.how == "dense" and len(files) == 1
    seen = []
    again = evaluate(tiny_multitask, "sst2", "validation", rows=sst2_rows, cache_logits=True,
                     progress=lambda d, t: seen.append((d, t)))
    assert again.how == "cached" and seen == [(6, 6)]
    np.testing.assert_array_equal(again.predictions.probs, first.predictions.probs)
    # other rows are another entry; a damaged entry is computed again
    evaluate(tiny_multitask, "sst2", "validation", rows=sst2_rows[:3], cache_logits=True)
    assert len(list((tmp_path / "logits").glob("*.safetensors"))) == 2
    files[0].write_bytes(b"not safetensors")
    third = evaluate(tiny_multitask, "sst2", "validation", rows=sst2_rows, cache_logits=True)
    assert third.how == "dense" and third.accuracy == first.accuracy


def test_an_unwritable_cache_still_evaluates(tiny_multitask, sst2_rows, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    monkeypatch.setenv("MTPRUNE_CACHE", str(blocked))  # a file, not a folder
    res = evaluate(tiny_multitask, "sst2", rows=sst2_rows, cache_logits=True)
    assert res.n == 6 and res.how == "dense"
    assert os.path.isfile(blocked)


def test_the_history_keeps_a_run_id_of_digits_as_text(tmp_path):
    from mtprune.history import RunHistory

    h = RunHistory.for_model("d" * 16, tmp_path)
    h.append({"task": "sst2", "metric": "accuracy", "value": 0.8, "run": "012345678901"})
    h.append({"task": "sst2", "metric": "accuracy", "value": 0.7})  # a row from before runs were kept
    runs = RunHistory.for_model("d" * 16, tmp_path).load()["run"]
    assert runs.iloc[0] == "012345678901" and runs.isna().iloc[1]
