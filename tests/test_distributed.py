"""Experiments under torchrun (mtprune.distributed + experiments.core.run_points): two CPU
processes give the rows of one process, row for row; a run killed mid-way keeps its finished rows
and a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["sweep", "--model", "default", "--methods", "ap,random", "--sparsities", "0,0.5", "--examples", "8",
         "--limit", "16", "--trials", "1", "--no-plot", "--device", "cpu"]
VOLATILE = ["eval_seconds", "model"]  # timings; the model column names the same model either way


def _torchrun(args, script=None, **kw):
    """torchrun over ``python -m mtprune``, or over ``script`` (which runs the CLI itself); the
    processes import the mtprune this test imported."""
    import mtprune

    where = str(Path(mtprune.__file__).resolve().parent.parent)
    path = os.pathsep.join([where, *filter(None, [os.environ.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *([str(script)] if script else ["-m", "mtprune"]), *map(str, args)]
    return cmd, dict(cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path), **kw)


# the CLI, except that the first time a table is saved (by rank 0, after the first round) the
# process stops there for good: the run cannot finish before the test kills it. torchrun starts its
# workers in sessions of their own, so killing it leaves them running: each one exits when its
# parent (torchrun) is gone, and leaves its pid for the test to check
STOP_AFTER_FIRST_SAVE = """
import os
import sys
import threading
import time
from pathlib import Path

Path(__file__).with_name("worker." + os.environ["RANK"] + ".pid").write_text(str(os.getpid()))
PARENT = os.getppid()


def die_with_the_run():
    while os.getppid() == PARENT:
        time.sleep(0.1)
    os._exit(1)


threading.Thread(target=die_with_the_run, daemon=True).start()

from mtprune.experiments import core

_save = core.ResultTable.save


def save(self):
    _save(self)
    threading.Event().wait()


core.ResultTable.save = save

from mtprune.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _end_workers(folder: Path, wait: float = 30.0) -> None:
    """Wait for the killed run's workers to exit (they watch their parent), then kill any left."""
    pids = [int(f.read_text()) for f in folder.glob("worker.*.pid")]
    deadline = time.time() + wait
    while time.time() < deadline and any(_running(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if _running(p):
            os.kill(p, signal.SIGKILL)


def _rows(path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in VOLATILE if c in df.columns]).sort_values("key").reset_index(drop=True)


def test_a_sweep_over_two_processes_equals_one(shared_home, tmp_path, capsys):
    from mtprune.cli import main

    ddp, one = tmp_path / "ddp.csv", tmp_path / "one.csv"
    cmd, kw = _torchrun([*SWEEP, "--tasks", "rte,cb", "--out", ddp])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mean accuracy over sparsities") == 1  # rank 0 alone reports
    assert main([*SWEEP, "--tasks", "rte,cb", "--out", str(one)]) == 0
    capsys.readouterr()
    a, b = _rows(ddp), _rows(one)
    assert len(a) == 2 * 2 * 2  # 2 tasks x 2 methods x 2 sparsities
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_a_killed_run_keeps_its_rows_and_resumes(shared_home, tmp_path, capsys):
    from mtprune.cli import main

    out = tmp_path / "killed.csv"
    script = tmp_path / "stop_after_first_save.py"
    script.write_text(STOP_AFTER_FIRST_SAVE)
    args = [*SWEEP, "--tasks", "rte,cb,mrpc,sst2", "--out", out]
    cmd, kw = _torchrun(args, script=script)
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, **kw)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not out.exists():
            time.sleep(0.2)
        # rank 0 stops in its first save: the run is still going, with the first round's rows saved
        assert out.exists() and proc.poll() is None, (proc.poll(), log.read_text()[-3000:])
    finally:
        if proc.poll() is None:  # kill torchrun (its workers follow)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        _end_workers(tmp_path)
    saved = pd.read_csv(out)
    assert len(saved) == 2 * 2  # the first round: one group (a task and method, both sparsities) per rank
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written
    assert main([str(a) for a in args]) == 0  # a rerun (one process) resumes
    err = capsys.readouterr().err
    done = _rows(out)
    assert len(done) == 4 * 2 * 2
    assert set(saved["key"]) <= set(done["key"]) and "rows" in err
