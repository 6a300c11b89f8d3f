"""Masks from scores: top-k per layer and global, p bounds, ties, round trips, bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtprune.errors import MtpruneError
from mtprune.masks import (Mask, kinds_in, load_mask, mask_from_bytes, mask_from_scores, mask_to_bytes,
                           n_pruned, save_mask)
from mtprune_dev.masks import full_mask


def _scores():
    """Two FFN layers (4 and 3 units, NaN-padded) and two head layers of 2 units."""
    nan = np.nan
    arrays = {
        "encoder.ffn": np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.7, nan]], dtype=np.float32),
        "encoder.heads": np.array([[1.0, 2.0], [4.0, 3.0]], dtype=np.float32),
    }
    return {"arrays": arrays, "n_units": {"encoder.ffn": [4, 3], "encoder.heads": [2, 2]}}


def test_layer_topk_exact():
    m = mask_from_scores(_scores(), 0.5, scope="layer", kinds="ffn")
    # layer 0: prune 2 of 4 -> keep 0.9 (1), 0.5 (2); layer 1: prune round(1.5)=2 of 3 -> keep 0.8 (0)
    assert np.flatnonzero(m.keep["encoder.ffn"][0]).tolist() == [1, 2]
    assert np.flatnonzero(m.keep["encoder.ffn"][1]).tolist() == [0]
    assert not m.keep["encoder.ffn"][1, 3]  # padding never kept
    assert m.keep["encoder.heads"].all()  # not selected: kept whole
    assert m.kept_per_layer("encoder.ffn") == [2, 1]
    assert m.selected_groups() == ["encoder.ffn"]
    assert m.actual_sparsity() == pytest.approx(4 / 7)


def test_global_topk_pools_layers_per_group():
    m = mask_from_scores(_scores(), 0.5, scope="global", kinds="all")
    # 7 FFN units, prune round(3.5)=4: keep 0.9, 0.8, 0.7 -> layer 0 unit 1, layer 1 units 0 and 2
    assert np.flatnonzero(m.keep["encoder.ffn"][0]).tolist() == [1]
    assert np.flatnonzero(m.keep["encoder.ffn"][1]).tolist() == [0, 2]
    # heads compete only with heads: keep 4.0 and 3.0, both in layer 1; layer 0 keeps none
    assert m.kept_per_layer("encoder.heads") == [0, 2]


def test_p0_keeps_all_p1_keeps_none():
    s = _scores()
    m0 = mask_from_scores(s, 0.0, kinds="all")
    assert m0.kept() == m0.total() == 11
    m1 = mask_from_scores(s, 1, kinds="all")
    assert m1.kept() == 0
    m1f = mask_from_scores(s, 1.0, kinds="ffn", scope="global")
    assert m1f.kept("encoder.ffn") == 0 and m1f.kept("encoder.heads") == 4


def test_ties_are_deterministic():
    arrays = {"decoder.ffn": np.zeros((2, 6), dtype=np.float32)}
    m = mask_from_scores({"arrays": arrays, "n_units": {"decoder.ffn": [6, 6]}}, 0.5)
    assert np.flatnonzero(m.keep["decoder.ffn"][0]).tolist() == [0, 1, 2]
    g = mask_from_scores({"arrays": arrays, "n_units": {"decoder.ffn": [6, 6]}}, 0.5, scope="global")
    assert g.kept_per_layer("decoder.ffn") == [6, 0]  # earlier layer first on ties
    again = mask_from_scores({"arrays": arrays, "n_units": {"decoder.ffn": [6, 6]}}, 0.5, scope="global")
    assert again == g


def test_nan_scores_count_lowest_and_stack_filter():
    arrays = {"encoder.ffn": np.array([[np.nan, 1.0, 2.0]]), "decoder.ffn": np.array([[3.0, 1.0, 2.0]])}
    n = {"encoder.ffn": [3], "decoder.ffn": [3]}
    m = mask_from_scores({"arrays": arrays, "n_units": n}, 1 / 3, stack="encoder")
    assert m.keep["encoder.ffn"][0].tolist() == [False, True, True]
    assert m.keep["decoder.ffn"].all()
    with pytest.raises(MtpruneError, match="no heads units"):
        mask_from_scores({"arrays": arrays, "n_units": n}, 0.5, kinds="heads")


def test_scores_object_and_meta():
    spec = SimpleNamespace(to_dict=lambda: {"task": "sst2", "method": "ap"})
    obj = SimpleNamespace(**_scores(), spec=spec, model_fingerprint="abc")
    m = mask_from_scores(obj, 0.25, kinds="heads", meta={"extra": 1})
    assert m.meta["task"] == "sst2" and m.meta["model_fingerprint"] == "abc" and m.meta["extra"] == 1
    assert m.meta["scores_spec"]["method"] == "ap"
    # n_units inferred from NaN padding when absent
    m2 = mask_from_scores({"arrays": _scores()["arrays"]}, 0.5)
    assert m2.n_units["encoder.ffn"] == [4, 3]


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "half", None, True])
def test_bad_sparsity(p):
    with pytest.raises(MtpruneError, match="sparsity"):
        mask_from_scores(_scores(), p)


def test_bad_scope_units():
    with pytest.raises(MtpruneError, match="scope"):
        mask_from_scores(_scores(), 0.5, scope="model")
    with pytest.raises(MtpruneError, match="kinds"):
        mask_from_scores(_scores(), 0.5, kinds="neurons")
    with pytest.raises(MtpruneError, match="shape"):
        Mask(keep={"encoder.ffn": np.ones((2, 3), bool)}, n_units={"encoder.ffn": [4, 3]}, sparsity=0)
    with pytest.raises(MtpruneError, match="past its"):
        Mask(keep={"encoder.ffn": np.ones((2, 4), bool)}, n_units={"encoder.ffn": [4, 3]}, sparsity=0)


def test_n_pruned_rounding():
    assert n_pruned(0.5, 1536) == 768
    assert n_pruned(0.5, 3) == 2
    assert n_pruned(0.3, 10) == 3
    assert n_pruned(1.0, 7) == 7 and n_pruned(0.0, 7) == 0


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    m = mask_from_scores(_scores(), 0.5, scope="global", kinds="all", meta={"task": "sst2", "x": [1, 2]})
    path = save_mask(m, tmp_path / f"mask{suffix}")
    back = load_mask(path)
    assert back == m
    assert back.meta == {"task": "sst2", "x": [1, 2]}
    assert all(back.keep[g].dtype == np.bool_ for g in back.groups)
    assert not list(tmp_path.glob(".*"))  # no temp file left


def test_json_is_readable(tmp_path):
    m = mask_from_scores(_scores(), 0.5)
    d = json.loads(save_mask(m, tmp_path / "m.json").read_text())
    assert d["keep"]["encoder.ffn"] == [[1, 2], [0]]
    assert d["sparsity"] == 0.5 and d["scope"] == "layer"


def test_bad_mask_files(tmp_path):
    m = mask_from_scores(_scores(), 0.5)
    with pytest.raises(MtpruneError, match="must end in .json or .safetensors"):
        save_mask(m, tmp_path / "m.txt")
    with pytest.raises(MtpruneError, match="does not exist"):
        load_mask(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MtpruneError, match="not valid JSON"):
        load_mask(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(MtpruneError, match="not an mtprune mask"):
        load_mask(tmp_path / "other.json")
    d = m.to_dict()
    d["keep"]["encoder.ffn"][0] = [0, 9]
    (tmp_path / "range.json").write_text(json.dumps(d))
    with pytest.raises(MtpruneError, match="out of range"):
        load_mask(tmp_path / "range.json")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(MtpruneError, match="does not parse"):
        load_mask(tmp_path / "bad.safetensors")
    for bad in (tmp_path / "bad.json", tmp_path / "bad.safetensors"):
        with pytest.raises(MtpruneError) as exc:
            load_mask(bad)
        assert "\n" not in str(exc.value)


def test_keep_for_sites_and_shape_check(tiny_multitask):
    sites = tiny_multitask.unit_sites()
    m = full_mask(sites)
    assert m.kept() == 2 * 48 + 2 * 4
    keep = m.keep_for_sites(sites)
    assert set(keep) == {"encoder.0.ffn", "encoder.0.heads", "encoder.1.ffn", "encoder.1.heads"}
    assert keep["encoder.0.ffn"].dtype == torch.bool and keep["encoder.0.ffn"].shape == (48,)
    m.check_matches(tiny_multitask)
    other = mask_from_scores(_scores(), 0.5)
    with pytest.raises(MtpruneError, match="made for another model.*encoder.ffn"):
        other.check_matches(tiny_multitask)
    dec = mask_from_scores({"arrays": {"decoder.ffn": np.ones((2, 48))}, "n_units": {"decoder.ffn": [48, 48]}}, 0.5)
    with pytest.raises(MtpruneError, match="has decoder.ffn units, this model has none"):
        dec.check_matches(tiny_multitask)


# ----------------------------------------------------------------------------------------------
# one sparsity per kind, digests, bytes


def _two_kind_scores(n_layers=2, ffn=48, heads=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"arrays": {"encoder.ffn": rng.random((n_layers, ffn)).astype(np.float32),
                       "encoder.heads": rng.random((n_layers, heads)).astype(np.float32)},
            "n_units": {"encoder.ffn": [ffn] * n_layers, "encoder.heads": [heads] * n_layers}}


def test_a_sparsity_per_kind():
    s = _two_kind_scores()
    m = mask_from_scores(s, {"ffn": 0.5, "heads": 0.25})
    assert m.kept("encoder.ffn") == 48 and m.kept("encoder.heads") == 6 and m.kinds == "all"
    assert m.meta["sparsity_per_kind"] == {"ffn": 0.5, "heads": 0.25} and m.sparsity == 0.5
    only = mask_from_scores(s, {"ffn": 0.75})
    assert only.kept("encoder.ffn") == 24 and only.kept("encoder.heads") == 8 and only.kinds == "ffn"
    assert kinds_in(s) == ["ffn", "heads"] and m.kinds_present() == ["ffn", "heads"]
    g = mask_from_scores(s, {"ffn": 0.5}, scope="global")
    assert g.scope == "global" and g.kept("encoder.ffn") == 48
    # the same units as one mask per kind
    same = mask_from_scores(s, 0.5, kinds="ffn")
    np.testing.assert_array_equal(m.keep["encoder.ffn"], same.keep["encoder.ffn"])
    with pytest.raises(MtpruneError, match="unknown unit kind 'neurons'"):
        mask_from_scores(s, {"neurons": 0.5})
    with pytest.raises(MtpruneError, match=r"\[0, 1\]"):
        mask_from_scores(s, {"ffn": 1.5})


def test_digest_follows_the_kept_units_only():
    s = _two_kind_scores()
    a, b = mask_from_scores(s, 0.5), mask_from_scores(s, 0.75)
    assert a.digest() != b.digest()
    again = Mask(keep=a.keep, n_units=a.n_units, sparsity=0.5, meta={"task": "other"})
    assert again.digest() == a.digest() and len(a.digest()) == 24


def test_mask_bytes_round_trip_and_bad_uploads():
    m = mask_from_scores(_two_kind_scores(), {"ffn": 0.5})
    for fmt in ("json", "safetensors"):
        assert mask_from_bytes(f"m.{fmt}", mask_to_bytes(m, fmt)) == m
    with pytest.raises(MtpruneError, match="upload a .json or .safetensors"):
        mask_from_bytes("m.csv", b"a,b")
    with pytest.raises(MtpruneError, match="bad.json"):
        mask_from_bytes("bad.json", b"[]")
    with pytest.raises(MtpruneError, match="json or safetensors"):
        mask_to_bytes(m, "pickle")


def test_masks_saved_before_the_kinds_key_load(tmp_path):
    m = mask_from_scores(_two_kind_scores(), 0.5, kinds="heads")
    d = m.to_dict()
    d["units"] = d.pop("kinds")  # the older spelling of the field
    (tmp_path / "old.json").write_text(json.dumps(d))
    back = load_mask(tmp_path / "old.json")
    assert back.kinds == "heads" and back == m


def test_a_malformed_mask_gets_a_plain_sentence(tmp_path):
    good = mask_from_scores(_scores(), 0.5).to_dict()
    short = {**good, "keep": {"encoder.ffn": good["keep"]["encoder.ffn"][:1]}}  # one layer of two
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(MtpruneError) as err:
        load_mask(tmp_path / "short.json")
    msg = str(err.value)
    assert "the mask lists kept encoder FFN neurons for 1 layer but gives unit counts for 2" in msg, msg
    assert "one list of kept units per layer, 2 lists in all" in msg
    assert "unit counts," not in msg and "layers of kept units" not in msg  # the old jargon is gone
    no_counts = {k: v for k, v in good.items() if k != "n_units"}
    (tmp_path / "none.json").write_text(json.dumps(no_counts))
    with pytest.raises(MtpruneError) as err:
        load_mask(tmp_path / "none.json")
    assert "has no 'n_units' entry" in str(err.value) and "KeyError" not in str(err.value)
    assert "the units of every layer" in str(err.value)  # says what a mask needs
    with pytest.raises(MtpruneError, match=r"unit 9 of layer 0 of its encoder FFN neurons, which is out of range: that layer has 4 units"):
        Mask.from_dict({**good, "keep": {"encoder.ffn": [[9], [0]]}})


def test_portable_keeps_names_and_drops_the_machine_paths():
    from mtprune.masks import portable

    meta = {"model": "/home/me/models/minilm-l6-mt6", "task": "sst2", "hub": "org/model",
            "nested": [{"calibration": "C:\\data\\rows.jsonl"}, "~/m/x#sst2", 3]}
    assert portable(meta) == {"model": "minilm-l6-mt6", "task": "sst2", "hub": "org/model",
                              "nested": [{"calibration": "rows.jsonl"}, "x#sst2", 3]}
