"""The **Your own sentences** page under AppTest: a typed sentence gives the dense and the pruned
predictions (equal to the library's), coloured words with the user's text escaped, a unit table
with addresses and ranks; an empty sentence or half a pair is one st.error line and the app keeps
running. The real default model, attribution on 16 examples (as tests/test_app.py)."""

from __future__ import annotations

import re

import pytest

from tests.test_app import app, goto, module_cache, ok  # noqa: F401  (fixtures and helpers)

PAGE = "explain"


def _type(at, *texts):
    for i, t in enumerate(texts):
        at.text_area(key=f"explain.text{i}").set_value(t)
    at.button(key="explain.run").click().run()
    return at


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_a_sentence_through_the_dense_and_pruned_model(app, default_adapter):
    at = goto(app, PAGE)
    ok(at)
    assert at.title[0].value == "Your own sentences"
    # no scores yet: the Prune page's mask needs them; computing them gives it
    at.button(key="explain.compute").click().run()
    ok(at)
    assert any("Prune and evaluate" in c.value and "pruned" in c.value for c in at.caption)
    text = "A <b>wonderful</b> & moving film"
    _type(at, text)
    ok(at)
    shown = _metrics(at)
    assert set(shown) >= {"Dense model", "Pruned model"}
    assert shown["Dense model"] in ("negative", "positive")
    # the same numbers as the library's evaluation of this row, dense and with the same mask
    from mtprune.evaluation import evaluate

    probs = at.dataframe[0].value
    dense = evaluate(default_adapter, "sst2", rows=[{"sentence": text, "label": 0}]).predictions.probs[0]
    assert probs["dense"].tolist() == pytest.approx(dense.tolist(), abs=1e-4)
    assert "pruned" in probs.columns and probs["pruned"].sum() == pytest.approx(1.0, abs=1e-3)
    # the user's text is escaped in the coloured words, never markup
    html = " ".join(m.value for m in at.markdown)
    words = re.findall(r'<span title="[^"]+" style="[^"]+">([^<]*)</span>', html)
    assert words == ["A", "&lt;", "b", "&gt;", "wonderful", "&lt;", "/", "b", "&gt;", "&amp;", "moving", "film"], words
    assert "<b>" not in html
    units = next(d.value for d in at.dataframe if "unit" in d.value.columns)
    assert len(units) == 6 * 2 * 5  # six layers, neurons and heads, five each
    assert all(re.fullmatch(r"encoder\.[0-5]\.(ffn|heads)\.\d+", u) for u in units["unit"])
    assert units["in the task's scores"].str.contains(r"rank [\d,]+ of").all()
    assert set(units["kept"]) <= {"yes", "pruned"}
    assert (units["kept"][units["kind"] == "heads"] == "yes").all()  # the Prune page's default prunes no heads


def test_bad_sentences_are_one_line_and_the_app_keeps_running(app):
    at = goto(app, PAGE)
    at.radio(key="explain.source").set_value("none").run()
    _type(at, "   ")
    assert not at.exception
    assert _errors(at) == ["the sentence is empty: type some text"]
    # a pair task wants both texts; with both, each text's words are shown
    at.sidebar.selectbox(key="sb.task").set_value("mrpc").run()
    ok(at)
    assert len(at.text_area) == 2
    _type(at, "The cat sat on the mat.", "")
    assert not at.exception and len(_errors(at)) == 1 and "give both" in _errors(at)[0]
    _type(at, "The cat sat on the mat.", "A cat was sitting on the mat.")
    ok(at)
    words = [m.value for m in at.markdown if "<span" in m.value]
    assert len(words) == 2 and "sitting" in words[1] and "sitting" not in words[0]
    # a text longer than the model reads: truncated, and said so
    _type(at, "good " * 400, "fine")
    ok(at)
    assert any(re.search(r"Truncated to 256 tokens", w.value) for w in at.warning)
