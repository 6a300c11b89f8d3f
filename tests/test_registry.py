"""One registry per concept: a repair solver and a budget measure added as one plugin module each,
then offered and run by the CLI (`prune`, `sweep`) and a sweep config with no other change."""

import json
import sys
import textwrap

import pytest

from mtprune import plugins
from mtprune.checkpoints import save_model
from mtprune.cli import main
from mtprune.errors import MtpruneError
from mtprune.measures.base import MEASURES
from mtprune.registry import Registry
from mtprune.solvers.base import SOLVERS

TOY = '''
from dataclasses import dataclass

from mtprune.measures import Measure, per_group, register_measure
from mtprune.solvers import Solver, get_solver, register_solver

CALLS = []


@dataclass(frozen=True)
class Halfway(Solver):
    """Half way from the unrepaired weights to the least-squares ones."""

    def fit(self, G, C, W0, *, width, damping):
        CALLS.append(damping)
        W = get_solver("lsq").fit(G, C, W0, width=width, damping=damping)
        return None if W is None else (W + W0) / 2


@dataclass(frozen=True)
class Units(Measure):
    def costs(self, adapter, seq_len=None, task=None, **options):
        return per_group(adapter, lambda site: 1.0)


register_solver(Halfway("halfway", label="half way", help="half way to least squares", fits="the kept columns"))
register_measure(Units("units", label="units", help="every unit costs one", per_length=False))
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The toy module on MTPRUNE_PLUGINS; the registries are restored afterwards."""
    (tmp_path / "toy_registry_plugin.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "toy_registry_plugin")
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
    monkeypatch.setattr(SOLVERS, "_items", dict(SOLVERS._items))
    monkeypatch.setattr(MEASURES, "_items", dict(MEASURES._items))
    monkeypatch.delitem(sys.modules, "toy_registry_plugin", raising=False)
    plugins.load()
    return sys.modules["toy_registry_plugin"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_plugin_solver_and_measure_run_through_prune(capsys, toy_plugin, tiny_multitask, tmp_path, shared_home):
    model = save_model(tiny_multitask, tmp_path / "tiny")
    code, out, err = run(capsys, "prune", "--help")
    assert "halfway: half way to least squares" in " ".join(out.split()) and "units:0.6 (every unit costs one)" in out
    code, out, err = run(capsys, "prune", "--model", model, "--task", "sst2", "--budget", "units:0.5",
                         "--repair", "halfway", "--calib", 40, "--examples", 4, "--no-eval", "--json",
                         "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    info = json.loads(out)
    assert info["budget"] == "units:0.5" and info["repair"]["method"] == "halfway"
    n_units = sum(sum(n) for n in json.loads((tmp_path / "out" / "mask.json").read_text())["n_units"].values())
    kept = sum(sum(v) for v in info["kept"].values())
    assert kept == n_units // 2  # every unit costs one: half of them fit
    assert toy_plugin.CALLS  # the solver was asked, once per damping and site
    code, _, err = run(capsys, "prune", "--model", model, "--task", "sst2", "--budget", "bytes:0.5",
                       "--out", tmp_path / "o2")
    assert code == 2 and "unknown budget 'bytes': use flops:0.6, params:0.6, latency:0.6, units:0.6" in err


def test_a_plugin_solver_and_measure_run_through_a_sweep(capsys, toy_plugin, tiny_multitask, sst2_rows, tmp_path,
                                                         monkeypatch):
    from mtprune.experiments import core
    from mtprune.experiments.sweep import SweepConfig, run_sweep

    calib = [dict(r) for r in sst2_rows] * 5
    monkeypatch.setattr(core.Runner, "calibration", lambda self, task, n, seed=0: calib)
    cfg = SweepConfig(tasks=("sst2",), methods=("random",), sparsities=(0.0,), budgets="units:0.5,0.25",
                      repairs=("none", "halfway"), kinds="all", trials=1, examples=(4,), calib=30)
    assert [str(b) for b in cfg.budgets] == ["units:0.5", "units:0.25"]
    df = run_sweep(tiny_multitask, cfg, out=tmp_path / "s.csv", rows={"sst2": sst2_rows}, log=None)
    rows = df[df.budget.fillna("") != ""]
    assert set(rows.budget) == {"units:0.5", "units:0.25"} and set(rows.repair) == {"none", "halfway"}
    total = int(df.kept_units.max())
    assert set(rows.kept_units) == {total // 2, total // 4}
    assert toy_plugin.CALLS
    with pytest.raises(MtpruneError, match="unknown repair 'quarter'; repairs: none, bias, scale, lsq, halfway"):
        SweepConfig(tasks=("sst2",), budgets=("units:0.5",), repairs=("quarter",))


def test_a_registry_refuses_strangers_and_twins():
    class Thing:
        def __init__(self, name):
            self.name = name

    r = Registry("thing", Thing)
    one = r.register(Thing("one"))
    assert r.register(one) is one and r.names() == ["one"]
    with pytest.raises(ValueError, match="registered already"):
        r.register(Thing("one"))
    with pytest.raises(TypeError):
        r.register("two")
    with pytest.raises(MtpruneError, match="unknown thing 'two'; things: one"):
        r.get("two")
    assert len(r.all()) == 1


def test_the_readme_tables_are_written_from_the_registries():
    """The README's solver and measure tables are what scripts/docs_tables.py writes from the
    registries: a solver or measure added without them fails here."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "docs_tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    text = docs.README.read_text()
    assert docs.render(text) == text
    assert "| `lsq` | the kept columns and the bias" in text and "| `params:0.6` |" in text
