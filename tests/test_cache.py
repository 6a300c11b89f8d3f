"""The score cache: keys, hits, atomic writes, corrupt entries, locks across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mtprune import __version__
from mtprune import attribution as attr
from mtprune.attribution import AttributionSpec, Scores, attribute_cached, cache_key_parts
from mtprune.cache import DiskCache, make_key
from mtprune.io import atomic_write
from mtprune.errors import MtpruneError

ROOT = Path(__file__).resolve().parent.parent


def _spec(**kw):
    kw.setdefault("task", "sst2")
    kw.setdefault("examples", 6)
    return AttributionSpec(**kw)


@pytest.fixture
def rows_patch(monkeypatch):
    """Tiny models read the six conftest rows instead of the data files."""
    from tests.conftest import SST2_ROWS

    monkeypatch.setattr(attr, "sample_for", lambda spec: [dict(r) for r in SST2_ROWS][: spec.examples])


def test_key_covers_everything_the_scores_depend_on(tiny_multitask, tiny_seqcls, monkeypatch):
    base = make_key(cache_key_parts(tiny_multitask, _spec()))
    changed = [
        cache_key_parts(tiny_seqcls, _spec()),
        cache_key_parts(tiny_multitask, _spec(task="imdb")),
        cache_key_parts(tiny_multitask, _spec(split="validation")),
        cache_key_parts(tiny_multitask, _spec(method="ig")),
        cache_key_parts(tiny_multitask, _spec(variant="signed")),
        cache_key_parts(tiny_multitask, _spec(examples=5)),
        cache_key_parts(tiny_multitask, _spec(seed=1)),
        cache_key_parts(tiny_multitask, _spec(unsupervised=True)),
        cache_key_parts(tiny_multitask, _spec(kinds="ffn")),
    ]
    keys = [make_key(p) for p in changed]
    assert base not in keys and len(set(keys)) == len(keys)
    assert make_key(cache_key_parts(tiny_multitask, _spec(method="ig", steps=5))) != \
        make_key(cache_key_parts(tiny_multitask, _spec(method="ig")))
    # the same request, spelled differently, is the same key
    assert make_key(cache_key_parts(tiny_multitask, _spec(split="train", steps=3))) == base
    parts = cache_key_parts(tiny_multitask, _spec())
    assert parts["version"] == __version__ and parts["model"] == tiny_multitask.fingerprint()
    monkeypatch.setattr(attr, "__version__", "9.9.9")
    assert make_key(cache_key_parts(tiny_multitask, _spec())) != base
    # a changed weight is another model
    with torch.no_grad():
        tiny_multitask.model.encoder.layer[0].output.dense.weight[0, 0] += 1
    tiny_multitask._fingerprint = None
    monkeypatch.undo()
    assert make_key(cache_key_parts(tiny_multitask, _spec())) != base


def test_hit_is_fast_and_identical(tiny_multitask, rows_patch, tmp_path):
    s1, hit1, p1 = attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)
    t0 = time.perf_counter()
    s2, hit2, p2 = attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert (hit1, hit2) == (False, True) and p1 == p2 and p1.is_file()
    assert p1.parent == tmp_path / "scores"
    for g in s1.groups:
        np.testing.assert_array_equal(s1.arrays[g], s2.arrays[g])
    assert s2.spec == _spec()
    # MTPRUNE_CACHE is the default root (conftest points it at a fresh folder)
    _, hit, p = attribute_cached(tiny_multitask, _spec())
    assert not hit and p.parent == Path(os.environ["MTPRUNE_CACHE"]) / "scores"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_entry_is_recomputed(tiny_multitask, rows_patch, tmp_path, damage):
    s1, _, path = attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 100])
    elif damage == "flip":
        b = bytearray(data)
        b[-50] ^= 0x55
        path.write_bytes(bytes(b))
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    else:
        path.write_bytes(b"")
    s2, hit, path2 = attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)
    assert not hit and path2 == path
    np.testing.assert_array_equal(s2.arrays["encoder.ffn"], s1.arrays["encoder.ffn"])
    assert Scores.load(path).model_fingerprint == tiny_multitask.fingerprint()  # repaired
    assert attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)[1]


def test_entry_of_another_key_is_not_served(tiny_multitask, rows_patch, tmp_path):
    _, _, p_abs = attribute_cached(tiny_multitask, _spec(), cache_dir=tmp_path)
    _, _, p_signed = attribute_cached(tiny_multitask, _spec(variant="signed"), cache_dir=tmp_path)
    p_signed.write_bytes(p_abs.read_bytes())  # a valid file under the wrong name
    s, hit, _ = attribute_cached(tiny_multitask, _spec(variant="signed"), cache_dir=tmp_path)
    assert not hit and (s.arrays["encoder.ffn"] < 0).any()


def test_not_writable_cache_dir(tiny_multitask, rows_patch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(MtpruneError, match="not writable"):
        attribute_cached(tiny_multitask, _spec(), cache_dir=blocker / "cache")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_dir(tiny_multitask, rows_patch, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(MtpruneError, match="not writable"):
            attribute_cached(tiny_multitask, _spec(), cache_dir=ro)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def half(tmp):
        tmp.write_bytes(b"new but not fin")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_lock_released_after_failed_compute(tmp_path):
    cache = DiskCache(tmp_path, namespace="t")
    key = make_key({"x": 1})

    def boom():
        raise MtpruneError("bad")

    with pytest.raises(MtpruneError):
        cache.get_or_compute(key, boom, reader=lambda p: p.read_bytes(), writer=lambda v, p: p.write_bytes(v))
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("lock still held")))
    signal.alarm(5)
    try:
        v, hit, path = cache.get_or_compute(key, lambda: b"ok", reader=lambda p: p.read_bytes(),
                                            writer=lambda v, p: p.write_bytes(v))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert (v, hit) == (b"ok", False) and path.read_bytes() == b"ok"
    assert cache.entries() == [path]


# ----------------------------------------------------------------------------------------------
# real processes

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import torch
    torch.set_num_threads(1)
    from transformers import BertModel
    from mtprune import attribution as attr
    from mtprune.checkpoints import adapter_for
    from tests.conftest import SST2_ROWS, make_tokenizer, tiny_bert_config

    log = sys.argv[1]

    from mtprune.methods import Method, get_method, register_method

    class SlowAP(Method):
        def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
            with open(log, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(float(os.environ.get("SLOW", "0")) / 6)  # SLOW seconds over the six folds
            return get_method("ap").attribute(adapter, task, rows, spec, sites, batch_size=batch_size)

    register_method(SlowAP("slow-ap"))

    attr.sample_for = lambda spec: [dict(r) for r in SST2_ROWS]
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = BertModel(tiny_bert_config(tok), add_pooling_layer=True)
    heads = {{"sst2": torch.nn.Linear(32, 2)}}
    adapter = adapter_for(model, tok, "tiny", heads=heads)
    adapter.fingerprint()
    spec = attr.AttributionSpec("sst2", method="slow-ap", examples=6)
    t0 = time.perf_counter()
    scores, hit, path = attr.attribute_cached(adapter, spec, cache_dir=sys.argv[2])
    print(json.dumps({{"hit": hit, "seconds": time.perf_counter() - t0, "path": str(path),
                      "sum": float(scores.arrays["encoder.ffn"].sum())}}))
""")


def _script(tmp_path) -> Path:
    p = tmp_path / "worker.py"
    p.write_text(SCRIPT.format(root=str(ROOT)))
    return p


def _env(**kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", **kw)
    return env


def test_processes_share_the_cache(tmp_path):
    """Two processes started together compute the key once; a third one later is a hit in < 1 s."""
    script, log, cache = _script(tmp_path), tmp_path / "log", tmp_path / "cache"
    cmd = [sys.executable, str(script), str(log), str(cache)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(SLOW="2"))
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    calls = log.read_text().split()  # one line per fold: six examples, six folds
    assert len(calls) == 6 and len(set(calls)) == 1  # one computation, by one process
    assert sorted(o["hit"] for o in outs) == [False, True]
    assert outs[0]["sum"] == outs[1]["sum"]
    entries = DiskCache(cache).entries()
    assert len(entries) == 1 and not list((cache / "scores").glob(".*tmp"))
    third = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert third.returncode == 0, third.stderr
    c = json.loads(third.stdout)
    assert c["hit"] and c["seconds"] < 1.0 and c["path"] == outs[0]["path"] and c["sum"] == outs[0]["sum"]
    assert log.read_text().split() == calls  # the third read it: no call more
