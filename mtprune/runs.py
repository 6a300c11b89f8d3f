"""Runs: evaluations kept whole on disk, so that they can be reopened, shared and compared.

A :class:`Run` is one evaluation of the dashboard's panel: the dense model and the pruned (and
repaired) ones on the same rows, every result with its metrics, intervals and per-row predictions
and probabilities, the mask (its settings, its digest and which units it keeps), how the mask was
chosen, the repair's summary and the reliability of the scores the mask came from.

:class:`RunStore` keeps a model's runs under ``<cache>/runs/<fingerprint[:16]>/<id>.safetensors``:
the arrays (gold labels, predictions, probabilities, the mask's keep arrays) as tensors and
everything else as a JSON header in the file's metadata. Nothing pickles; a run is written to a
temporary file and renamed into place (:func:`mtprune.io.atomic_write`), so a reader finds a whole
run or none. A run's id (:func:`run_id`) is a hash of what it depends on: the same evaluation asked
again has the same id and is read back instead of computed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.evaluation import EvalResult, Predictions, compare
from mtprune.io import atomic_write, stable_hash
from mtprune.masks import Mask

RUN_FORMAT = "mtprune run v1"
SUFFIX = ".safetensors"
_ID = re.compile(r"[0-9a-f]{12}")


def run_id(parts: dict) -> str:
    """The 12-hex-digit id of the run that ``parts`` (model fingerprint, task, split, rows, mask
    digest, repair...) determine."""
    return stable_hash({"what": "run", **parts}, 12)


def check_id(text) -> str:
    """``text`` as a run id, or a one-line error."""
    s = str(text or "").strip().lower()
    if not _ID.fullmatch(s):
        raise MtpruneError(f"{str(text)[:40]!r} is not a run id (a run id is 12 hex digits, as in ?run=3f2a9c0b71de)")
    return s


def _result_header(r: EvalResult) -> dict:
    return {"task": r.task, "split": r.split, "n": r.n, "accuracy": r.accuracy, "metrics": dict(r.metrics),
            "seconds": r.seconds, "model": r.model, "head": r.head,
            "intervals": {m: [float(x) for x in iv] for m, iv in r.intervals.items()}}


def _result(head: dict, gold, pred, probs) -> EvalResult:
    preds = Predictions(np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64),
                        np.asarray(probs, dtype=np.float32))
    return EvalResult(head["task"], head["split"], int(head["n"]), float(head["accuracy"]), dict(head["metrics"]),
                      float(head.get("seconds", 0.0)), head.get("model", ""), head.get("head", ""),
                      {m: tuple(float(x) for x in iv) for m, iv in head.get("intervals", {}).items()}, preds)


@dataclass(frozen=True, eq=False)
class Run:
    """One evaluation, whole: ``results`` maps a model's name (``dense``, ``pruned``,
    ``pruned + lsq``) to its :class:`~mtprune.evaluation.EvalResult` with predictions; the first
    is the dense reference."""

    id: str
    fingerprint: str
    model: str
    task: str
    split: str
    limit: int | None
    results: dict
    mask: Mask | None = None
    settings: dict = field(default_factory=dict)  # how the mask was chosen (method, how, sparsity, budget...)
    repair: dict | None = None  # solver, calibration rows, summary, the report
    reliability: dict | None = None  # of the scores the mask came from (Scores.reliability_summary)
    created: str = ""
    session: str = ""

    def __post_init__(self):
        object.__setattr__(self, "id", check_id(self.id))
        if not self.fingerprint:
            raise MtpruneError("a run needs its model's fingerprint")
        if not isinstance(self.results, dict) or "dense" not in self.results or len(self.results) < 2:
            raise MtpruneError("a run needs the dense result and at least one other")
        if self.mask is not None and not isinstance(self.mask, Mask):
            raise MtpruneError("a run's mask must be a Mask")
        if self.limit is not None and int(self.limit) < 1:
            raise MtpruneError(f"a run's row limit must be positive, not {self.limit}")
        dense = self.results["dense"]
        for name, r in self.results.items():
            if not isinstance(r, EvalResult) or r.predictions is None:
                raise MtpruneError(f"the run's result {name!r} has no per-row predictions")
            if (r.task, r.split) != (self.task, self.split):
                raise MtpruneError(f"the run's result {name!r} is of {r.task}/{r.split}, not {self.task}/{self.split}")
            if r.n != dense.n or not np.array_equal(r.predictions.gold, dense.predictions.gold):
                raise MtpruneError(f"the run's result {name!r} is not on the dense result's rows")
        object.__setattr__(self, "results", dict(self.results))
        object.__setattr__(self, "settings", dict(self.settings or {}))
        object.__setattr__(self, "created", self.created or time.strftime("%Y-%m-%d %H:%M:%S"))

    # -- facts ----------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.results["dense"].n

    @property
    def dense(self) -> EvalResult:
        return self.results["dense"]

    @property
    def others(self) -> dict:
        """Every result but the dense one, in order (pruned, then repaired)."""
        return {k: v for k, v in self.results.items() if k != "dense"}

    @property
    def final_name(self) -> str:
        """The last model of the run: the repaired one when there is one, else the pruned one."""
        return list(self.others)[-1]

    @property
    def final(self) -> EvalResult:
        return self.results[self.final_name]

    @property
    def mask_digest(self) -> str | None:
        return self.mask.digest() if self.mask is not None else None

    def comparisons(self) -> dict:
        """``{name: Comparison}`` of every other model against the dense one (McNemar, verdict)."""
        return {k: compare(self.dense, v) for k, v in self.others.items()}

    def label(self) -> str:
        """``3f2a9c0b71de · 2026-05-01 12:00 · ffn70 (layer) · ap · 32 rows · pruned 0.812``."""
        how = self.settings.get("how") or (f"mask {self.mask_digest[:8]}" if self.mask is not None else "")
        parts = [self.id, self.created[:16], how, self.settings.get("method") or "",
                 f"{self.n} {'row' if self.n == 1 else 'rows'}",
                 f"{self.final_name} {self.final.accuracy:.3f}"]
        return " · ".join(p for p in parts if p)

    # -- serialising ----------------------------------------------------------------------------
    def header(self) -> dict:
        """Everything but the arrays, JSON-ready."""
        return {"format": RUN_FORMAT, "id": self.id, "fingerprint": self.fingerprint, "model": self.model,
                "task": self.task, "split": self.split, "limit": self.limit, "n": self.n,
                "created": self.created, "session": self.session, "settings": _jsonable(self.settings),
                "repair": _jsonable(self.repair), "reliability": _jsonable(self.reliability),
                "mask": self.mask.to_header() if self.mask is not None else None,
                "mask_digest": self.mask_digest, "results": [[k, _result_header(v)] for k, v in self.results.items()]}

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-row predictions of every result and the mask's keep arrays."""
        out = {}
        for i, r in enumerate(self.results.values()):
            p = r.predictions
            out[f"r{i}.gold"] = np.ascontiguousarray(p.gold, dtype=np.int64)
            out[f"r{i}.pred"] = np.ascontiguousarray(p.pred, dtype=np.int64)
            out[f"r{i}.probs"] = np.ascontiguousarray(p.probs, dtype=np.float32)
        if self.mask is not None:
            for g, k in self.mask.keep.items():
                out[f"mask.{g}"] = np.ascontiguousarray(k, dtype=np.uint8)
        return out

    def to_dict(self) -> dict:
        """The whole run as JSON-ready data (the arrays as lists)."""
        d = self.header()
        d["arrays"] = {k: v.tolist() for k, v in self.arrays().items()}
        return d

    @classmethod
    def from_parts(cls, header: dict, arrays: dict) -> "Run":
        if not isinstance(header, dict) or header.get("format") != RUN_FORMAT:
            raise MtpruneError(f"not an mtprune run (expected format {RUN_FORMAT!r})")
        try:
            results = {name: _result(h, arrays[f"r{i}.gold"], arrays[f"r{i}.pred"], arrays[f"r{i}.probs"])
                       for i, (name, h) in enumerate(header["results"])}
            mask = None
            if header.get("mask") is not None:
                m = header["mask"]
                keep = {g: np.asarray(arrays[f"mask.{g}"]).astype(bool) for g in m["n_units"]}
                mask = Mask(keep=keep, n_units=m["n_units"], sparsity=m["sparsity"], scope=m.get("scope", "layer"),
                            kinds=m.get("kinds", "ffn"), stack=m.get("stack", "all"), meta=m.get("meta") or {})
                if header.get("mask_digest") and mask.digest() != header["mask_digest"]:
                    raise MtpruneError("the run's mask does not match its digest")
            return cls(id=header["id"], fingerprint=header["fingerprint"], model=header.get("model", ""),
                       task=header["task"], split=header["split"], limit=header.get("limit"), results=results,
                       mask=mask, settings=header.get("settings") or {}, repair=header.get("repair"),
                       reliability=header.get("reliability"), created=header.get("created", ""),
                       session=header.get("session", ""))
        except MtpruneError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MtpruneError(f"the run is malformed: {type(exc).__name__}: {exc}") from None

    @classmethod
    def from_dict(cls, d: dict) -> "Run":
        if not isinstance(d, dict) or not isinstance(d.get("arrays"), dict):
            raise MtpruneError("not an mtprune run: no arrays")
        return cls.from_parts({k: v for k, v in d.items() if k != "arrays"},
                              {k: np.asarray(v) for k, v in d["arrays"].items()})


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_default)) if obj is not None else None


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------------------------
# files


def write_run(run: Run, path: str | Path) -> Path:
    """``run`` as one safetensors file (arrays, and the header in its metadata), atomically."""
    from safetensors.numpy import save_file

    meta = {"format": RUN_FORMAT, "run": json.dumps(run.header(), sort_keys=True)}
    arrays = run.arrays()
    return atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=meta))


def read_header(path: str | Path) -> dict:
    """A run file's header only (the arrays are not read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
    if meta.get("format") != RUN_FORMAT:
        raise MtpruneError(f"{Path(path).name} is not an mtprune run")
    return json.loads(meta["run"])


def read_run(path: str | Path) -> Run:
    from safetensors.numpy import load_file

    header = read_header(path)
    return Run.from_parts(header, load_file(str(path)))


@dataclass(frozen=True)
class RunInfo:
    """What a list of runs shows of one, read from its header."""

    id: str
    created: str
    task: str
    split: str
    n: int
    model: str
    settings: dict
    accuracy: dict  # model name -> accuracy
    repair: str | None = None

    @property
    def final(self) -> tuple[str, float]:
        name = list(self.accuracy)[-1]
        return name, self.accuracy[name]

    def label(self) -> str:
        name, acc = self.final
        parts = [self.id, self.created[:16], self.settings.get("how") or "", self.settings.get("method") or "",
                 f"{self.n} {'row' if self.n == 1 else 'rows'}", f"{name} {acc:.3f}"]
        return " · ".join(p for p in parts if p)


class RunStore:
    """The runs of one model (by fingerprint): save, load, list and delete."""

    def __init__(self, fingerprint: str, root: str | Path | None = None):
        if not fingerprint:
            raise MtpruneError("runs are kept per model: a fingerprint is needed")
        self.fingerprint = fingerprint
        self.base = (Path(root) if root is not None else assets.cache_dir()) / "runs"
        self.root = self.base / fingerprint[:16]

    def path(self, rid: str) -> Path:
        return self.root / f"{check_id(rid)}{SUFFIX}"

    def exists(self, rid: str) -> bool:
        return self.path(rid).is_file()

    def save(self, run: Run) -> Path:
        if run.fingerprint != self.fingerprint:
            raise MtpruneError(f"run {run.id} was made with another model than this store's")
        return write_run(run, self.path(run.id))

    def load(self, rid: str) -> Run:
        """The run ``rid`` of this model; one line when it was deleted, made with another model or
        does not read."""
        path = self.path(rid)
        if not path.is_file():
            raise MtpruneError(self._missing(check_id(rid)))
        try:
            run = read_run(path)
        except MtpruneError as exc:
            raise MtpruneError(f"run {rid} does not read: {exc}") from None
        except Exception as exc:  # a damaged file: safetensors and json raise many kinds
            raise MtpruneError(f"run {rid} does not read ({type(exc).__name__}: {exc})") from None
        if run.fingerprint != self.fingerprint:
            raise MtpruneError(f"run {rid} was made with another model ({run.model or run.fingerprint[:16]}): "
                               "choose that model in the sidebar to reopen it")
        return run

    def _missing(self, rid: str) -> str:
        for other in sorted(self.base.glob(f"*/{rid}{SUFFIX}")) if self.base.is_dir() else []:
            try:
                model = read_header(other).get("model") or other.parent.name
            except Exception:
                model = other.parent.name
            return f"run {rid} was made with another model ({model}): choose that model in the sidebar to reopen it"
        return f"there is no run {rid} of this model: it was deleted, or made on another machine"

    def list(self, task: str | None = None) -> list[RunInfo]:
        """This model's runs (of ``task``), newest first; files that do not read are left out."""
        out = []
        for p in self.root.glob(f"*{SUFFIX}") if self.root.is_dir() else []:
            if p.name.startswith("."):
                continue
            try:
                h = read_header(p)
                info = RunInfo(h["id"], h.get("created", ""), h["task"], h["split"], int(h["n"]), h.get("model", ""),
                               h.get("settings") or {}, {k: float(r["accuracy"]) for k, r in h["results"]},
                               (h.get("repair") or {}).get("solver"))
            except Exception:
                continue
            if task is None or info.task == task:
                out.append(info)
        return sorted(out, key=lambda i: (i.created, i.id), reverse=True)

    def delete(self, rid: str) -> None:
        path = self.path(rid)
        try:
            path.unlink()
        except FileNotFoundError:
            raise MtpruneError(self._missing(check_id(rid))) from None


# ----------------------------------------------------------------------------------------------
# two runs


def mask_difference(a: Mask, b: Mask) -> dict[str, dict[str, list[int]]]:
    """Per group and layer: units kept by both masks, by ``a`` only and by ``b`` only."""
    if a is None or b is None:
        raise MtpruneError("both runs need a mask to compare their masks")
    if a.n_units != b.n_units:
        raise MtpruneError("the two masks are of models with different units: compare runs of one model")
    out = {}
    for g in a.groups:
        ka, kb = a.keep[g], b.keep[g]
        out[g] = {"both": (ka & kb).sum(1).tolist(), "only_a": (ka & ~kb).sum(1).tolist(),
                  "only_b": (~ka & kb).sum(1).tolist(), "n_units": list(a.n_units[g])}
    return out


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: ``b`` against ``a`` on the same rows (their final models)."""

    a: Run
    b: Run
    comparison: object  # mtprune.evaluation.Comparison of a.final and b.final
    masks: dict | None  # mask_difference, None when a run has no mask
    differ: np.ndarray  # rows where the two final models predict differently


def compare_runs(a: Run, b: Run) -> RunComparison:
    """The paired test of two runs' final models (McNemar), the rows where they differ and the
    difference of their masks per layer. One line when they are not on the same rows."""
    if a.fingerprint != b.fingerprint:
        raise MtpruneError("the two runs are of different models: compare runs of one model")
    if (a.task, a.split) != (b.task, b.split) or a.n != b.n:
        raise MtpruneError(f"the two runs are not on the same rows ({a.task}/{a.split}, {a.n} rows against "
                           f"{b.task}/{b.split}, {b.n} rows): compare runs of one task, split and row count")
    cmp = compare(a.final, b.final)
    masks = mask_difference(a.mask, b.mask) if a.mask is not None and b.mask is not None else None
    differ = np.flatnonzero(a.final.predictions.pred != b.final.predictions.pred)
    return RunComparison(a, b, cmp, masks, differ)
