import json
from collections import Counter

import pytest

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.tasks import BENCHMARK, TASKS, get_task, load_rows, parse_tasks, sample_rows


def test_registry_covers_the_issue():
    for name in [*BENCHMARK, "cola", "mnli", "ag_news", "imdb", "yelp", "amazon", "mr", "cr",
                 "vader_movie", "vader_amazon", "vader_nyt", "vader_tweets", "scitail", "sick"]:
        assert name in TASKS
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    assert get_task("cola").metrics == ("accuracy", "mcc")
    assert get_task("imdb").task_heads == ("sst2",) and get_task("imdb").suite == "unseen"
    assert get_task("scitail").task_heads == ("rte", "qnli")
    assert get_task("sick").task_heads == ("cb",)
    assert get_task("qnli").fields == ("question", "sentence")
    assert get_task("cb").labels == ("entailment", "contradiction", "neutral")
    assert get_task("mnli").default_split == "validation_matched"
    assert get_task("scitail").train_split == "test"


def test_unknown_task():
    with pytest.raises(MtpruneError, match="unknown task 'sst3'"):
        get_task("sst3")
    with pytest.raises(MtpruneError, match="no tasks"):
        parse_tasks(" , ")


def test_local_data_loads_with_its_schema(shared_home):
    ds = load_rows("rte", "validation")
    assert len(ds) == 277
    assert Counter(ds["label"]) == {0: 138, 1: 139}
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds[0]["sentence1"].startswith("Traditional performances in Jakarta")
    with pytest.raises(MtpruneError, match="no split 'dev'"):
        load_rows("rte", "dev")


def test_class_balanced_sampling(shared_home):
    ds = load_rows("cb", "train")  # 115 / 119 / 16
    rows = sample_rows(ds, 30, seed=0)
    assert Counter(r["label"] for r in rows) == {0: 10, 1: 10, 2: 10}
    assert [r["idx"] for r in rows] == [r["idx"] for r in sample_rows(ds, 30, seed=0)]
    assert [r["idx"] for r in rows] != [r["idx"] for r in sample_rows(ds, 30, seed=1)]
    # a rare class runs out: the rest is filled from the others
    rows = sample_rows(ds, 90, seed=0)
    assert Counter(r["label"] for r in rows)[2] == 16 and len(rows) == 90
    with pytest.raises(MtpruneError, match="only 250"):
        sample_rows(ds, 251)
    with pytest.raises(MtpruneError, match="at least 1"):
        sample_rows(ds, 0)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_data_file_checked_against_schema(tmp_path):
    good = _write(tmp_path / "good.jsonl", [{"sentence": "fine", "label": 1}])
    assert len(load_rows("sst2", data_file=good)) == 1
    missing = _write(tmp_path / "missing.jsonl", [{"text": "fine", "label": 1}])
    with pytest.raises(MtpruneError, match="lack the field.*sentence"):
        load_rows("sst2", data_file=missing)
    out_of_range = _write(tmp_path / "oor.jsonl", [{"sentence": "x", "label": 2}])
    with pytest.raises(MtpruneError, match="label id 2 is out of range"):
        load_rows("sst2", data_file=out_of_range)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"sentence": "x", "label": 1}\n{not json\n')
    with pytest.raises(MtpruneError, match="could not read"):
        load_rows("sst2", data_file=broken)
    with pytest.raises(MtpruneError, match="does not exist"):
        load_rows("sst2", data_file=tmp_path / "nope.jsonl")


def test_home_from_env(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.setenv("MTPRUNE_HOME", str(tmp_path))
    assert assets.home() == tmp_path.resolve()
    assert assets.resolve_model("mine") == str(tmp_path / "models" / "mine")
    with pytest.raises(MtpruneError, match="default model is not here"):
        assets.resolve_model("default")
    assert assets.resolve_model("someone/some-model") == "someone/some-model"  # a hub id
    monkeypatch.setenv("MTPRUNE_HOME", str(tmp_path / "nope"))
    with pytest.raises(MtpruneError, match="not a directory"):
        assets.home()


def test_hub_path_offline_is_one_clear_error(tmp_path, monkeypatch):
    """With no local copy, data comes from the hub through the same loader; offline, one line."""
    from tests.conftest import hub_offline

    monkeypatch.setenv("MTPRUNE_HOME", str(tmp_path))
    hub_offline(monkeypatch)
    with pytest.raises(MtpruneError, match=r"could not read sst2/validation from nyu-mll/glue"):
        load_rows("sst2", "validation")
