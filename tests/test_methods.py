"""The method registry: every method's facts, and a method of the user's own, registered from a
plugin module, working in `mtprune attribute`, `mtprune sweep` and the dashboard."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtprune import plugins
from mtprune.cli import main
from mtprune.errors import MtpruneError
from mtprune.methods import Method, all_methods, get_method, method_names, register_method
from mtprune.methods import base as registry

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = textwrap.dedent('''
    """A user's own scores: keep the lowest-numbered units of every layer."""
    import numpy as np

    from mtprune.methods import Method, register_method


    class FirstUnits(Method):
        def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
            return {s.name: -np.arange(s.n_units, dtype=float) for s in sites}


    register_method(FirstUnits("first-units", label="first units (mine)", help="keeps the lowest-numbered units",
                               needs_data=False, uses_variant=False, uses_seed=False))
''')


def test_every_method_carries_its_facts():
    m = all_methods()
    assert list(m)[:6] == ["ap", "ig", "random-label", "activation", "random", "magnitude"]
    assert m["ap"].unsupervised and not m["ap"].baseline and m["ap"].needs_labels
    assert m["ig"].uses_steps and not m["ap"].uses_steps
    assert m["activation"].repeats_over_trials and not m["activation"].uses_variant
    assert m["random"].repeats_over_trials and not m["random"].needs_data and not m["random"].needs_labels
    assert not m["magnitude"].uses_seed and not m["magnitude"].repeats_over_trials
    assert m["random-label"].baseline and not m["random-label"].needs_labels
    assert not m["svd"].scores and m["svd"].reference == "ap" and "svd" not in method_names(scores=True)
    assert all(x.label and x.help for x in m.values())
    with pytest.raises(MtpruneError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(MtpruneError, match="baseline without scores"):
        get_method("svd", scores=True)


def test_a_method_object_is_validated_and_registered_once():
    with pytest.raises(ValueError, match="letters"):
        Method("two words")
    with pytest.raises(ValueError, match="reference"):
        Method("standin", scores=False)
    assert Method("x", needs_data=False).needs_labels is False  # no data, no labels
    with pytest.raises(ValueError, match="registered already"):
        register_method(Method("ap"))
    with pytest.raises(TypeError):
        register_method(lambda *a: None)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``my_methods.py`` on the path and named in MTPRUNE_PLUGINS; the registry restored after."""
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MTPRUNE_PLUGINS", "my_methods")
    saved, loaded = dict(registry.METHODS._items), set(plugins._loaded)
    yield tmp_path
    registry.METHODS._items.clear()
    registry.METHODS._items.update(saved)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    sys.modules.pop("my_methods", None)


@pytest.fixture
def tiny_dir(tiny_multitask, tmp_path):
    from mtprune.checkpoints import save_model

    return save_model(tiny_multitask, tmp_path / "tiny")


def test_a_plugin_method_works_in_attribute_and_sweep(plugin, tiny_dir, tmp_path, capsys, shared_home):
    assert "first-units" in method_names(scores=True)
    csv = tmp_path / "scores.csv"
    assert main(["attribute", "--model", str(tiny_dir), "--task", "sst2", "--method", "first-units", "--json",
                 "--device", "cpu", "--out-csv", str(csv)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "first-units" and info["examples"] == 0  # it reads no data
    df = pd.read_csv(csv)
    ffn = df[df.group == "encoder.ffn"]
    np.testing.assert_array_equal(ffn["score"], -ffn["unit"])
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "--model", str(tiny_dir), "--tasks", "sst2", "--methods", "first-units,random",
                 "--sparsities", "0.5", "--trials", "1", "--limit", "8", "--no-plot", "--device", "cpu",
                 "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    mine = rows[rows.method == "first-units"]
    assert len(mine) == 1 and mine["kept_units"].iloc[0] == 48 + 8 and mine["trial"].iloc[0] == 0  # + heads
    assert "first-units" in capsys.readouterr().out  # in the summary table


def test_a_plugin_method_in_the_cli_help_of_a_new_process(plugin):
    env = dict(os.environ, PYTHONPATH=f"{plugin}{os.pathsep}{ROOT}", MTPRUNE_PLUGINS="my_methods")
    res = subprocess.run([sys.executable, "-m", "mtprune", "attribute", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "first-units: keeps the lowest-numbered units" in " ".join(res.stdout.split())
    bad = subprocess.run([sys.executable, "-m", "mtprune", "tasks"], capture_output=True, text=True, timeout=120,
                         env=dict(env, MTPRUNE_PLUGINS="no_such_module"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "could not import the plugin 'no_such_module'" in bad.stderr


def test_a_plugin_method_in_the_dashboards_list(plugin, shared_home, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    assert not at.exception, at.exception
    box = at.sidebar.selectbox(key="sb.method")
    assert "first units (mine)" in box.options  # options show the method's label
    box.set_value("first-units").run()
    assert not at.exception
    assert at.sidebar.number_input(key="sb.examples").disabled  # it reads no examples


def test_gradient_folds_in_one_pass_equal_the_folds_read_one_by_one(tiny_multitask):
    """ap keeps each example's contribution in its fold's row within shared batches; the result is
    what the plain method computes fold by fold (the default ``attribute_folds`` of a plugin)."""
    from mtprune.attribution import AttributionSpec
    from mtprune.methods import Method, get_method
    from mtprune.units import select_sites

    rows = [{"sentence": s, "label": i % 2} for i, s in enumerate(
        ["a good movie", "bad", "an awful, boring film", "fine", "great acting and a great story", "meh", "ok", "no"])]
    spec = AttributionSpec(task="sst2", method="ap", examples=8, kinds="all")
    sites = select_sites(tiny_multitask.unit_sites(), "all")
    fold_of = [0, 0, 0, 1, 1, 2, 2, 2]
    ap = get_method("ap")
    fast = ap.attribute_folds(tiny_multitask, spec.task_spec, rows, spec, sites, fold_of, batch_size=3)
    slow = Method.attribute_folds(ap, tiny_multitask, spec.task_spec, rows, spec, sites, fold_of, batch_size=3)
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow):
        for name in s:
            np.testing.assert_allclose(f[name], s[name], rtol=1e-5, atol=1e-9)
    whole = ap.attribute(tiny_multitask, spec.task_spec, rows, spec, sites, batch_size=8)
    for name in whole:
        np.testing.assert_allclose(sum(f[name] for f in fast), whole[name], rtol=1e-5, atol=1e-9)
