"""Repair solvers: each against numpy on synthetic sums, the registry every verb, config and page
reads, and a toy solver registered in a test and run through repair and a sweep."""


import numpy as np
import pytest
import torch

from mtprune.errors import MtpruneError
from mtprune.repair import RepairSettings, _error, _Stats
from mtprune.solvers import Solver, all_solvers, check_solvers, get_solver, register_solver, solver_names
from mtprune.solvers.scale import ScaleSolver
from tests.test_repair import synthetic

LSQ, SCALE = get_solver("lsq"), get_solver("scale")


def test_lsq_is_least_squares_and_damping_pulls_to_the_old_weights():
    X, T, st = synthetic()
    G, C = st.all()
    X1 = np.hstack([X, np.ones((len(X), 1))])
    want = np.linalg.lstsq(X1, T, rcond=None)[0].T
    W0 = torch.zeros(3, 6, dtype=torch.float64)
    np.testing.assert_allclose(LSQ.fit(G, C, W0, width=1, damping=0.0).numpy(), want, atol=1e-5)  # sums in float32 per batch
    far = LSQ.fit(G, C, W0, width=1, damping=1e6).numpy()
    assert np.abs(far).max() < 1e-3  # a huge damping keeps the unrepaired (zero) weights
    # the error from the sums is the error of the predictions
    W = torch.tensor(want)
    direct = float(((X1 @ want.T - T) ** 2).sum())
    assert _error(W, G, C, float((T ** 2).sum())) == pytest.approx(direct, rel=1e-4)


def test_scale_and_bias_solve_their_own_problems():
    rng = np.random.default_rng(1)
    n, k, d = 300, 4, 3
    X = rng.normal(size=(n, k))
    W0 = rng.normal(size=(d, k))
    s_true = np.array([1.5, 0.5, -1.0, 2.0])
    b0 = rng.normal(size=d)
    T = X @ (W0 * s_true).T + b0
    st = _Stats(k, d)
    st.add(torch.tensor(X), torch.tensor(T), held_out=False)
    G, C = st.all()
    W0b = torch.tensor(np.hstack([W0, b0[:, None]]))
    W = SCALE.fit(G, C, W0b, width=1, damping=0.0)
    np.testing.assert_allclose(W[:, :k].numpy(), W0 * s_true, atol=1e-5)
    np.testing.assert_allclose(W[:, k].numpy(), b0)  # the bias stays
    assert ScaleSolver("scale", max_scale=1.9).fit(G, C, W0b, width=1, damping=0.0) is None  # a scale of 2 is outside the bound
    # heads: a scale per block of `width` columns
    Wh = SCALE.fit(G, C, W0b, width=2, damping=0.0)
    assert torch.allclose(Wh[:, 0] / W0b[:, 0], Wh[:, 1] / W0b[:, 1])
    # bias: the mean of t - W x
    Wb = get_solver("bias").fit(G, C, W0b, width=1, damping=None)
    np.testing.assert_allclose(Wb[:, k].numpy(), (T - X @ W0.T).mean(0), atol=1e-5)


def test_the_registry_names_every_solver_once_and_refuses_strangers():
    assert solver_names()[:4] == ["none", "bias", "scale", "lsq"]
    assert not get_solver("none").refits and all(s.refits for n, s in all_solvers().items() if n != "none")
    assert check_solvers("lsq, none,lsq") == ("lsq", "none")
    with pytest.raises(MtpruneError, match="unknown repair 'magic'; repairs: none, bias, scale, lsq"):
        RepairSettings("magic")
    with pytest.raises(MtpruneError, match="no repair given"):
        check_solvers("")
    with pytest.raises(ValueError, match="registered already"):
        register_solver(Solver("lsq", help="another lsq"))
