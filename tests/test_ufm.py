import math

import numpy as np
import pytest
import torch

from ncutils import config, store, ufm

LAM = (5e-3, 5e-3, 5e-3)


def _zeros(K, n, d):
    z = dict(dtype=torch.float64)
    return torch.zeros(K, d, **z), torch.zeros(d, n * K, **z), torch.zeros(K, **z)


def test_objective_matches_a_cross_entropy_reference():
    W, H, b = ufm.init(3, 4, 5, seed=1)
    y = ufm.labels(3, 4)
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ref = (torch.nn.functional.cross_entropy(H.T @ W.T + b, y)
           + 0.5 * (0.1 * W.square().sum() + 0.2 * H.square().sum() + 0.3 * b.square().sum()))
    torch.testing.assert_close(ufm.objective(W, H, b, 0.1, 0.2, 0.3), ref, rtol=1e-14, atol=0)


@pytest.mark.parametrize("K,n,d,lw,lh,lb", [
    (4, 5, 6, 5e-3, 5e-3, 5e-3), (3, 4, 5, 1e-2, 1e-3, 0.0), (5, 3, 4, 2e-3, 2e-2, 1e-2),
    (4, 5, 3, 0.05, 0.05, 0.01)])
def test_solver_meets_the_closed_form(K, n, d, lw, lh, lb):
    W, H, b = ufm.fit(K, n, d, lw, lh, lb, seed=0)
    a, s = ufm.closed_form_optimum(K, n, lw, lh)
    assert math.sqrt(n * lw * lh) < 1 / K and a > 0
    np.testing.assert_allclose(W.square().sum(1).numpy(), a, rtol=1e-6)
    np.testing.assert_allclose((H.norm(dim=0) / W.norm(dim=1).repeat_interleave(n)).numpy(), s, rtol=1e-6)
    torch.testing.assert_close(H, s * W.T.repeat_interleave(n, 1), rtol=0, atol=1e-6 * math.sqrt(a))
    cos = (W @ W.T) / a
    torch.testing.assert_close(cos, (K * torch.eye(K, dtype=cos.dtype) - 1) / (K - 1), rtol=0, atol=1e-6)
    assert float(ufm.objective(W, H, b, lw, lh, lb)) == pytest.approx(
        ufm.global_min_value(K, n, lw, lh), rel=1e-12)
    if lb > 0:
        assert float(b.abs().max()) < 1e-6
    else:  # lambda_b = 0: any constant bias b 1 is optimal
        assert float(b.std()) < 1e-6


def test_above_the_threshold_the_minimizer_is_zero():
    K, n = 4, 5
    lam = 1.2 / (K * math.sqrt(n))  # c = sqrt(n) lam = 1.2 / K
    assert ufm.closed_form_optimum(K, n, lam, lam)[0] == 0.0
    assert ufm.global_min_value(K, n, lam, lam) == pytest.approx(math.log(K))
    W, H, b = ufm.fit(K, n, 6, lam, lam, lam, seed=3)
    assert float(W.norm()) < 1e-6 and float(H.norm()) < 1e-6
    assert ufm.origin_min_eig(K, n, lam, lam) > 0


def test_closed_form_is_a_critical_point_and_continuous_at_the_threshold():
    K, n, d = 5, 3, 7
    W, H, b = ufm.etf_optimum(K, n, d, 1e-2, 3e-2, seed=2)
    assert ufm.gradient_norm(W, H, b, 1e-2, 3e-2, 1e-2) < 1e-12
    assert float(ufm.objective(W, H, b, 1e-2, 3e-2, 1e-2)) == pytest.approx(
        ufm.global_min_value(K, n, 1e-2, 3e-2), rel=1e-13)
    for scale in (0.9, 1.1):  # the norm is optimal along the ETF family
        assert float(ufm.objective(scale * W, H, b, 1e-2, 3e-2, 1e-2)) > ufm.global_min_value(K, n, 1e-2, 3e-2)
    at = 1 / (K * math.sqrt(n))  # lambda_W = lambda_H = at gives c = 1/K exactly
    below, above = ufm.global_min_value(K, n, at * 0.999999, at), ufm.global_min_value(K, n, at, at)
    assert below == pytest.approx(above, abs=1e-9) and above == pytest.approx(math.log(K))
    assert ufm.origin_min_eig(K, n, 0.999 * at, at) < 0 < ufm.origin_min_eig(K, n, 1.001 * at, at)


def test_origin_is_a_strict_saddle_with_the_predicted_curvature():
    K, n, d = 4, 3, 5
    Z = _zeros(K, n, d)
    assert ufm.gradient_norm(*Z, *LAM) < 1e-15
    eig = ufm.hessian_eigs(*Z, *LAM, k=d * (K - 1) + 1)
    expected = ufm.origin_min_eig(K, n, LAM[0], LAM[1])
    assert expected < 0
    np.testing.assert_allclose(eig[:-1], expected, rtol=1e-10)  # multiplicity d(K-1)
    assert eig[-1] > 0


@pytest.mark.parametrize("groups,rank", [([0, 0, 1, 2], None), ([0, 1, 0, 1], None),
                                         (None, 2), (None, 1)])
def test_symmetric_critical_points_are_strict_saddles(groups, rank):
    K, n, d = 4, 3, 6
    W, H, b = ufm.symmetric_critical_point(K, n, d, *LAM, groups=groups, rank=rank, seed=1)
    assert ufm.gradient_norm(W, H, b, *LAM) < 1e-7
    assert float(ufm.objective(W, H, b, *LAM)) > ufm.global_min_value(K, n, LAM[0], LAM[1]) + 1e-3
    assert ufm.hessian_eigs(W, H, b, *LAM, k=1)[0] < -1e-4
    if groups is not None:
        torch.testing.assert_close(W[0], W[groups.index(groups[0], 1)])
    if rank is not None:
        assert float(W[:, rank:].abs().max()) == 0 and float(H[rank:].abs().max()) == 0


def test_global_optimum_hessian_is_psd_up_to_rotations():
    K, n, d = 3, 3, 5
    rotations = d * (d - 1) // 2 - (d - K + 1) * (d - K) // 2  # so(d) minus the frame's stabilizer
    exact = ufm.hessian_eigs(*ufm.etf_optimum(K, n, d, *LAM[:2], seed=0), *LAM, k=rotations + 1)
    assert abs(exact[:rotations]).max() < 1e-12 and exact[rotations] > 1e-4
    solved = ufm.hessian_eigs(*ufm.fit(K, n, d, *LAM, seed=4), *LAM, k=rotations + 1)
    assert solved[0] > -1e-8 and solved[rotations] > 1e-4


def test_lanczos_agrees_with_the_dense_hessian():
    K, n, d = 3, 4, 5
    W, H, b = ufm.symmetric_critical_point(K, n, d, *LAM, rank=1)
    dense = ufm.hessian_eigs(W, H, b, *LAM, k=3)
    vals, vecs = ufm.hessian_eigs(W, H, b, *LAM, k=3, dense_max=0, vectors=True)
    np.testing.assert_allclose(vals, dense, rtol=1e-7, atol=1e-10)
    assert vecs.shape == (K * d + d * n * K + K, 3)
    np.testing.assert_allclose(ufm.hessian_eigs(W, H, b, *LAM, k=2, which="largest", dense_max=0),
                               ufm.hessian_eigs(W, H, b, *LAM, k=2, which="largest"), rtol=1e-7)


def test_gradient_descent_reaches_the_same_optimum_and_reports_iterates():
    K, n, d = 3, 4, 4
    seen = []
    W, H, b = ufm.fit(K, n, d, *LAM, method="gd", lr=5.0, max_iter=20_000, init_scale=0.1,
                      callback=lambda it, W, H, b: seen.append((it, W.shape, H.shape, b.shape)))
    assert seen[0][0] == 0 and seen[-1][0] == len(seen) - 1 and seen[0][1:] == ((K, d), (d, n * K), (K,))
    np.testing.assert_allclose(W.square().sum(1).numpy(), ufm.closed_form_optimum(K, n, *LAM[:2])[0],
                               rtol=1e-6)
    with pytest.raises(RuntimeError, match="diverged"):
        ufm.fit(K, n, d, *LAM, method="gd", lr=1e4, max_iter=100)


def test_fit_is_deterministic_for_a_seed():
    a = ufm.fit(3, 2, 3, *LAM, seed=5, max_iter=5)
    b = ufm.fit(3, 2, 3, *LAM, seed=5, max_iter=5)
    c = ufm.fit(3, 2, 3, *LAM, seed=6, max_iter=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_pack_unpack_round_trip():
    W, H, b = ufm.init(3, 2, 4, seed=0)
    for x, y in zip(ufm.unpack(ufm.pack(W, H, b), 3, 2, 4), (W, H, b)):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="theta"):
        ufm.unpack(torch.zeros(5), 3, 2, 4)


@pytest.mark.parametrize("call,name", [
    (lambda: ufm.fit(1, 2, 3, *LAM), "K"),
    (lambda: ufm.fit(2.0, 2, 3, *LAM), "K"),
    (lambda: ufm.fit(3, 0, 3, *LAM), "n"),
    (lambda: ufm.fit(3, "2", 3, *LAM), "n"),
    (lambda: ufm.fit(3, 2, 0, *LAM), "d"),
    (lambda: ufm.fit(3, 2, True, *LAM), "d"),
    (lambda: ufm.fit(3, 2, 3, -1e-3, 1e-3, 1e-3), "lambda_W"),
    (lambda: ufm.fit(3, 2, 3, 1e-3, 0.0, 1e-3), "lambda_H"),
    (lambda: ufm.fit(3, 2, 3, 1e-3, 1e-3, -1.0), "lambda_b"),
    (lambda: ufm.fit(3, 2, 3, 1e-3, 1e-3, float("nan")), "lambda_b"),
    (lambda: ufm.fit(3, 2, 3, *LAM, method="sgd"), "method"),
    (lambda: ufm.fit(3, 2, 3, *LAM, seed=-1), "seed"),
    (lambda: ufm.closed_form_optimum(3, 2, 1e-3, "1"), "lambda_H"),
    (lambda: ufm.etf_optimum(5, 2, 3, *LAM[:2]), "d"),
    (lambda: ufm.symmetric_critical_point(3, 2, 3, *LAM, groups=[0, 2, 2]), "groups"),
    (lambda: ufm.symmetric_critical_point(3, 2, 3, *LAM, rank=4), "rank"),
    (lambda: ufm.hessian_eigs(*_zeros(3, 2, 3), *LAM, which="middle"), "which"),
    (lambda: ufm.objective(torch.zeros(3, 2), torch.zeros(2, 5), torch.zeros(3), *LAM), "H"),
])
def test_bad_input_is_refused(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_landscape_experiment_writes_every_table_at_the_smoke_preset(tmp_path):
    cfg = dict(config.get_preset("ufm", "smoke"), seed=0)
    run = store.Run("ufm", "smoke", cfg, root=tmp_path)
    threads = torch.get_num_threads()
    summary = ufm.landscape_experiment(run, cfg)
    assert torch.get_num_threads() == threads  # the one-thread setting is undone
    K, n = cfg["K"], cfg["n"]
    assert summary["f_star"] == ufm.global_min_value(K, n, cfg["lambda_W"], cfg["lambda_H"])
    assert set(summary["seconds"]) == {"path", "sweep", "seeds", "hessian", "lanczos", "slices", "dims"}
    seeds = run.table("seeds")
    assert len(seeds) == cfg["n_seeds"] + cfg["gd_seeds"]
    assert (seeds[seeds.method == "lbfgs"].gap.abs() < 1e-9).all()
    hess = run.table("hessian").set_index("point")
    origin = ufm.origin_min_eig(cfg["hess"]["K"], cfg["hess"]["n"], cfg["lambda_W"], cfg["lambda_H"])
    assert hess.min_eig["origin"] == pytest.approx(origin, rel=1e-8) and origin < 0  # CSV keeps 9 digits
    assert hess.min_eig["2 classes tied"] < 0 < hess.gap["2 classes tied"]
    assert hess.min_eig["global (closed form)"] > -1e-10 and abs(hess.gap["global (closed form)"]) < 1e-12
    assert (hess.grad_norm < 1e-6).all()
    sweep = run.table("sweep")
    assert len(sweep) == len(cfg["sweep_kc"]) * len(cfg["sweep_ratios"])
    assert (sweep[sweep.kc < 1].rel_a < 1e-6).all() and (sweep[sweep.kc > 1].w_norm_sq < 1e-8).all()
    assert len(run.table("path")) > 0 and (run.table("lanczos").min_eig < 0).all()
    assert set(run.table("dims").d) == set(cfg["dims"])
    assert run.arrays("slices")["plane"].shape == (cfg["slice_points"],) * 2
    with pytest.raises(ValueError, match="seed"):
        ufm.landscape_experiment(run, config.get_preset("ufm", "smoke"))
