import json

import pytest

from mtprune.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_and_models_json(capsys, shared_home):
    code, out, _ = run(capsys, "tasks", "--json")
    tasks = {t["name"]: t for t in json.loads(out)}
    assert code == 0 and tasks["mrpc"]["metrics"] == ["accuracy", "f1"]
    assert "validation" in tasks["sst2"]["local_splits"]
    code, out, _ = run(capsys, "models", "--json")
    models = json.loads(out)["models"]
    assert code == 0 and models[0]["name"] == "default" and models[0]["format"] == "multitask"
    assert "boolq" in models[0]["tasks"]


def test_eval_json(capsys, shared_home):
    code, out, _ = run(capsys, "eval", "--model", "default", "--task", "mrpc", "--limit", "50", "--json", "--device", "cpu")
    res = json.loads(out)
    assert code == 0
    assert {"task", "split", "n", "accuracy", "f1"} <= set(res)
    assert res["task"] == "mrpc" and res["split"] == "validation" and res["n"] == 50


def _one_line_error(code, err, pattern):
    import re

    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("argv,pattern", [
    (["eval", "--task", "sst3"], "unknown task 'sst3'"),
    (["eval", "--task", "sst2", "--model", "/no/such/dir"], "unknown model"),
    (["eval", "--task", "sst2", "--model", "tests"], "not a model directory"),
    (["eval", "--task", "cola"], "no head for task cola"),
    (["eval", "--task", "sst2", "--split", "dev"], "no split 'dev'"),
    (["eval", "--task", "sst2", "--limit", "0"], "at least 1"),
    (["eval", "--task", "sst2", "--device", "tpu"], "unknown device"),
    (["eval"], "required"),
])
def test_bad_input_one_line_exit_2(capsys, shared_home, argv, pattern):
    code, _, err = run(capsys, *argv)
    _one_line_error(code, err, pattern)


def test_bad_data_files(capsys, tmp_path, shared_home):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"question": "q", "label": 0}) + "\n")
    code, _, err = run(capsys, "eval", "--task", "qnli", "--data-file", str(f))
    _one_line_error(code, err, "lack the field.*sentence")
    f.write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 7}) + "\n")
    code, _, err = run(capsys, "eval", "--task", "cb", "--data-file", str(f))
    _one_line_error(code, err, "label id 7 is out of range")
    f.write_text(json.dumps({"premise": "a man plays", "hypothesis": "a man plays", "label": 0}) + "\n")
    code, out, _ = run(capsys, "eval", "--task", "cb", "--data-file", str(f), "--json")
    assert code == 0 and json.loads(out)["n"] == 1


def test_console_script_end_to_end(shared_home):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "mtprune", "eval", "--task", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == (
        "mtprune: error: unknown task 'nope'; known tasks: " + ", ".join(__import__("mtprune.tasks").tasks.TASKS)
    )
