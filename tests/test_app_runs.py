"""Runs on Prune and evaluate, under streamlit.testing's AppTest: an evaluation is kept whole on
disk, a new session reopens it from its address (?run=<id>) without evaluating anything, two runs
are compared (the paired test, the rows where they differ, the masks per layer), and a link to a
deleted run, another model's run or no run at all is one st.error line. The default model, 16
attribution examples, 16 evaluation rows."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_app import (APP, EXAMPLES, app, charts, compute_scores, frame, goto, metric,  # noqa: F401
                            module_cache, ok)

ROWS = 16


def _param(at, name: str):
    v = at.query_params.get(name)
    return v[0] if isinstance(v, list) else v


def _evaluate(at, ffn: int) -> str:
    at.slider(key="prune.ffn").set_value(ffn).run()
    at.number_input(key="prune.limit").set_value(ROWS)
    at.button(key="prune.evaluate").click().run()
    ok(at)
    rid = _param(at, "run")
    assert rid and len(rid) == 12, at.query_params
    return rid


def _every_row(at):
    return [d.value for d in at.dataframe if "what changed" in d.value.columns][0]


def _fresh(params: dict):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    for k, v in {"sb.examples": str(EXAMPLES), **params}.items():
        at.query_params[k] = v
    at.run()
    return goto(at, "prune")


def _fingerprint(at) -> str:
    return next(iter(at.session_state["_state.stores"]["scores"]))[0]


def test_a_run_reopens_from_its_address_in_a_new_session(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    rid = _evaluate(at, 70)
    dense, pruned = metric(at, "Dense accuracy"), metric(at, "Pruned accuracy")
    rows = _every_row(at)
    assert len(rows) == ROWS
    # the file on disk: the run's results with per-row predictions
    from mtprune.runs import RunStore

    run = RunStore(_fingerprint(at)).load(rid)
    assert run.n == ROWS and run.settings["how"] == "ffn70 (layer)" and run.mask.kept("encoder.ffn") == 2766
    assert f"{run.final.accuracy:.3f}" == pruned
    assert run.reliability is not None and run.reliability["examples"] == EXAMPLES
    # a reload with nothing but the run's address (the sliders at their defaults): the whole panel
    fresh = _fresh({"run": rid})
    ok(fresh)
    assert fresh.slider(key="prune.ffn").value == 50
    assert (metric(fresh, "Dense accuracy"), metric(fresh, "Pruned accuracy")) == (dense, pruned)
    assert any(f"Run `{rid}`" in m.value and "ffn70 (layer)" in m.value for m in fresh.markdown)
    assert any("This run's mask is not the one the settings above make now" in c.value for c in fresh.caption)
    assert any(f"?run={rid}" in c.value for c in fresh.caption)
    verdicts = [m.value for m in (*fresh.info, *fresh.warning, *fresh.success) if "McNemar" in m.value]
    assert len(verdicts) == 1 and f"on {ROWS} rows" in verdicts[0]
    again = _every_row(fresh)
    assert list(again["text"]) == list(rows["text"]) and list(again["pruned"]) == list(rows["pruned"])
    confusions = [f for f in charts(fresh) if f["layout"]["title"]["text"].startswith(("dense:", "pruned:"))]
    assert len(confusions) == 2
    assert not fresh.session_state["_state.stores"]["evals"]  # read back, nothing evaluated
    # the run history lists it; the list below it reopens it in yet another session
    assert rid in set(frame(fresh, "how", "verdict", "run")["run"])
    other = _fresh({})
    assert "Pruned accuracy" not in [m.label for m in other.metric]
    other.selectbox(key="prune.reopen").set_value(rid).run()
    ok(other)
    assert metric(other, "Pruned accuracy") == pruned and _param(other, "run") == rid
    # moving a slider goes back to the settings' own evaluation
    other.slider(key="prune.ffn").set_value(35).run()
    assert "Pruned accuracy" not in [m.label for m in other.metric] and "run" not in other.query_params


def test_the_same_settings_read_their_run_back(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    rid = _evaluate(at, 60)
    from mtprune.runs import RunStore

    path = RunStore(_fingerprint(at)).path(rid)
    written = path.stat().st_mtime_ns
    fresh = _fresh({"prune.ffn": "60", "prune.limit": str(ROWS)})  # the settings, not the run
    ok(fresh)
    assert _param(fresh, "run") == rid and metric(fresh, "Pruned accuracy") == metric(at, "Pruned accuracy")
    rows = len(frame(fresh, "how", "verdict", "run"))
    fresh.button(key="prune.evaluate").click().run()  # evaluating again reads it too, and says so in the history
    ok(fresh)
    assert path.stat().st_mtime_ns == written and len(frame(fresh, "how", "verdict", "run")) == rows + 1
    evals = fresh.session_state["_state.stores"]["evals"]
    assert {r.how for r in evals.values()} == {""}  # the run's results, read from disk (not "dense"/"hard")
    fresh.run()  # the sidebar, drawn before the page, says the measured accuracy from then on
    assert "sst2/validation accuracy, measured" in fresh.sidebar.caption[0].value


def _foreign_run(module_cache) -> str:
    """A run kept for another model (another fingerprint) in the same cache."""
    from mtprune.evaluation import EvalResult, Predictions
    from mtprune.runs import Run, RunStore

    gold = np.array([0, 1, 1, 0])

    def res(pred):
        p = np.eye(2, dtype=np.float32)[pred]
        acc = float((pred == gold).mean())
        return EvalResult("sst2", "validation", 4, acc, {"accuracy": acc},
                          intervals={"accuracy": (0.1, 0.9)}, predictions=Predictions(gold, np.asarray(pred), p))

    run = Run(id="abcdef012345", fingerprint="0" * 32, model="someone-elses-model", task="sst2",
              split="validation", limit=4, results={"dense": res(gold), "pruned": res(np.array([0, 1, 0, 0]))})
    RunStore(run.fingerprint, module_cache).save(run)
    return run.id


@pytest.mark.parametrize("link, words", [
    ("abcdef012345", "was made with another model (someone-elses-model): choose that model in the sidebar"),
    ("0123456789ab", "there is no run 0123456789ab of this model: it was deleted"),
    ("not-a-run", "is not a run id"),
])
def test_a_bad_run_link_is_one_line(app, module_cache, link, words):
    at = goto(app, "prune")
    compute_scores(at, "prune")  # the scores exist: the link is read in the page's evaluation panel
    _foreign_run(module_cache)
    fresh = _fresh({"run": link})
    assert not fresh.exception
    assert len(fresh.error) == 1 and words in fresh.error[0].value and "\n" not in fresh.error[0].value
    assert "run" not in fresh.query_params
    assert fresh.slider(key="prune.ffn").value == 50  # the page is all there
    fresh.run()
    assert not fresh.error


def test_compare_two_runs_then_delete_one(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    a = _evaluate(at, 20)
    b = _evaluate(at, 90)
    at.selectbox(key="prune.run_a").set_value(a).run()
    at.selectbox(key="prune.run_b").set_value(b).run()
    ok(at)
    assert _param(at, "compare") == f"{a},{b}"
    from mtprune.runs import RunStore

    store = RunStore(_fingerprint(at))
    ra, rb = store.load(a), store.load(b)
    verdict = [m.value for m in (*at.info, *at.warning, *at.success) if "McNemar" in m.value and "run A" in m.value]
    ca, cb = ra.final.predictions.correct, rb.final.predictions.correct
    assert len(verdict) == 1 and f"{int((ca & ~cb).sum())} flipped right -> wrong" in verdict[0]
    table = [d.value for d in at.dataframe if {"how", "pruned", "rows"} <= set(d.value.columns)][0]
    assert list(table["how"]) == ["ffn20 (layer)", "ffn90 (layer)"]
    assert table["pruned"].iloc[1].startswith(f"{rb.final.accuracy:.3f} (")
    n_differ = int((ra.final.predictions.pred != rb.final.predictions.pred).sum())
    assert any(f"**Where they differ** · {n_differ} of {ROWS} rows" in m.value for m in at.markdown)
    if n_differ:
        rows = [d.value for d in at.dataframe if {"A", "B", "text"} <= set(d.value.columns)][0]
        assert len(rows) == n_differ and (rows["A"] != rows["B"]).all()
    masks = [f for f in charts(at) if "the two masks per layer" in f["layout"]["title"]["text"]]
    ffn = [f for f in masks if "FFN" in f["layout"]["title"]["text"]][0]
    both, only_a, only_b = (np.asarray(t["y"]) for t in ffn["data"])
    assert list(both + only_a) == ra.mask.kept_per_layer("encoder.ffn")
    assert list(both + only_b) == rb.mask.kept_per_layer("encoder.ffn") and only_b.sum() == 0  # 90 % inside 20 %
    # a shared comparison reopens; once B is deleted its link says so in one line
    fresh = _fresh({"compare": f"{a},{b}"})
    ok(fresh)
    assert fresh.selectbox(key="prune.run_b").value == b
    fresh.selectbox(key="prune.reopen").set_value(b).run()
    fresh.button(key="prune.delete_run").click().run()
    ok(fresh)
    assert not store.exists(b) and b not in fresh.selectbox(key="prune.run_a").options
    gone = _fresh({"compare": f"{a},{b}"})
    assert not gone.exception and len(gone.error) == 1 and f"no run {b}" in gone.error[0].value
    assert gone.selectbox(key="prune.run_a").value == a and gone.selectbox(key="prune.run_b").value is None
