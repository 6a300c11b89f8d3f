"""The run history: rows kept on disk per model, concurrent appends, a corrupt file set aside."""

import threading

import pandas as pd

from mtprune.history import RunHistory


def test_append_load_and_survive_a_new_instance(tmp_path):
    h = RunHistory.for_model("abcdef0123456789ff", tmp_path)
    assert h.load().empty and h.path == tmp_path / "history" / "abcdef0123456789.csv"
    h.append({"task": "sst2", "metric": "accuracy", "value": 0.85, "low": 0.82, "high": 0.87})
    h.append({"task": "sst2", "metric": "accuracy", "value": 0.80, "how": "ffn 70%"})
    again = RunHistory.for_model("abcdef0123456789ff", tmp_path).load()
    assert list(again["value"]) == [0.85, 0.80] and again["how"].iloc[1] == "ffn 70%"
    assert pd.read_csv(h.path).shape[0] == 2 and b"sst2" in h.csv_bytes()


def test_two_writers_at_once_keep_both_rows(tmp_path):
    h1, h2 = RunHistory.for_model("m" * 16, tmp_path), RunHistory.for_model("m" * 16, tmp_path)
    threads = [threading.Thread(target=lambda h=h, i=i: [h.append({"task": "sst2", "metric": "accuracy",
                                                                   "value": i, "session": f"s{i}-{k}"})
                                                         for k in range(10)])
               for i, h in enumerate((h1, h2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    df = h1.load()
    assert len(df) == 20 and df["session"].nunique() == 20


def test_a_corrupt_history_is_set_aside(tmp_path):
    h = RunHistory.for_model("c" * 16, tmp_path)
    h.path.parent.mkdir(parents=True)
    h.path.write_text("this is, not\na history\x00\n")
    assert h.load().empty and "moved to" in h.notice
    aside = [p for p in h.path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text().startswith("this is")
    h.append({"task": "cb", "metric": "accuracy", "value": 0.5})
    assert len(h.load()) == 1
