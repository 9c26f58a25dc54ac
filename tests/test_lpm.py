import math

import numpy as np
import pytest

pytest.importorskip("cvxpy")

from ncutils import config, lpm, store  # noqa: E402

K, K_A, E_H, E_W = 10, 5, 5.0, 1.0


@pytest.fixture(scope="module")
def balanced():
    return lpm.solve_convex(1.0, K, K_A, E_H, E_W)


def test_balanced_solution_is_a_simplex_etf(balanced):
    # the classifier Gram matrix is E_W K/(K-1) (I - 11^T/K), within 1e-4 entrywise
    np.testing.assert_allclose(balanced.classifier_gram, lpm.etf_classifier_gram(K, E_W), rtol=0, atol=1e-4)
    np.testing.assert_allclose(balanced.feature_gram, lpm.etf_classifier_gram(K, E_H), rtol=0, atol=1e-4)
    assert balanced.minority_cosine == pytest.approx(-1 / (K - 1), abs=1e-6)
    # the balanced optimum in closed form: logits sqrt(E_H E_W) (1 on the class, -1/(K-1) elsewhere)
    m = math.sqrt(E_H * E_W) * K / (K - 1)
    assert balanced.objective == pytest.approx(math.log(1 + (K - 1) * math.exp(-m)), rel=1e-7)


@pytest.mark.parametrize("R", [1.0, 10.0, 1000.0])
def test_constraints_hold_and_are_active_at_the_solution(R):
    for sol in (lpm.solve_convex(R, K, K_A, E_H, E_W), lpm.solve_first_order(R, K, K_A, E_H, E_W, restarts=1)):
        fh, fw = sol.constraint_values()
        assert fh <= E_H * (1 + 1e-8) and fw <= E_W * (1 + 1e-8), sol.method
        assert fh == pytest.approx(E_H, rel=1e-6) and fw == pytest.approx(E_W, rel=1e-6), sol.method
    X = lpm.solve_convex(R, K, K_A, E_H, E_W).gram
    assert np.linalg.eigvalsh(X).min() > -1e-8  # PSD


@pytest.mark.parametrize("R", [10.0, 100.0])
def test_convex_and_first_order_solutions_agree(R):
    conv = lpm.solve_convex(R, K, K_A, E_H, E_W)
    fo = lpm.solve_first_order(R, K, K_A, E_H, E_W, seed=1, restarts=2)
    assert fo.status == "converged"
    assert fo.objective == pytest.approx(conv.objective, rel=1e-8, abs=1e-10)
    assert fo.minority_cosine == pytest.approx(conv.minority_cosine, abs=1e-5)
    # the objective of the factored convex solution, evaluated directly, is its reported value
    assert lpm.objective(conv.H, conv.W, R, K_A) == pytest.approx(conv.objective, rel=1e-7)


def test_per_sample_model_reaches_the_class_mean_optimum():
    # every sample its own feature (n_B = 1, n_A = 4): the optimum puts each sample at its class mean
    conv = lpm.solve_convex(4.0, K, K_A, E_H, E_W)
    fo = lpm.solve_first_order(4.0, K, K_A, E_H, E_W, n_minority=1, restarts=1)
    assert fo.objective == pytest.approx(conv.objective, rel=1e-8)
    assert fo.minority_cosine == pytest.approx(conv.minority_cosine, abs=1e-5)
    spread = fo.features - fo.H[np.repeat(np.arange(K), [4] * K_A + [1] * (K - K_A))]
    assert np.abs(spread).max() < 1e-5


def test_minority_collapse_grows_with_R_and_is_complete_at_large_R():
    cos = [lpm.solve_convex(R, K, K_A, E_H, E_W).minority_cosine for R in (1.0, 3.0, 8.0, 100.0)]
    assert cos[0] < cos[1] < cos[2] < cos[3]
    assert cos[3] > 1 - 1e-6
    # R = inf drops the minority classes from the loss, as in the authors' code
    assert lpm.class_weights(K, K_A, math.inf).tolist() == [1.0] * K_A + [0.0] * (K - K_A)


def test_only_the_product_of_the_budgets_matters():
    """Scaling W by a and H by 1/a keeps every logit, so (E_H, E_W) and (E_H a^2, E_W / a^2) have
    the same optimal logits: the same objective and the same classifier cosines, W scaled by 1/a."""
    for R in (5.0, 30.0):
        a = lpm.solve_convex(R, K, K_A, E_H, E_W)
        b = lpm.solve_convex(R, K, K_A, E_H * 4.0, E_W / 4.0)
        assert abs(a.objective - b.objective) < 1e-7 and abs(a.minority_cosine - b.minority_cosine) < 1e-5
        assert np.allclose(a.W @ a.W.T / 4.0, b.W @ b.W.T, atol=1e-5)
    # a larger product delays the collapse: at R = 30 the authors' budget has merged the minority
    # classifiers, ten times the budget has not
    assert lpm.solve_convex(30.0, K, K_A, E_H, E_W).minority_cosine > 1 - 1e-6
    assert lpm.solve_convex(30.0, K, K_A, E_H * 10.0, E_W).minority_cosine < 0.9


def test_collapse_threshold_brackets_the_onset():
    r = lpm.collapse_threshold(K, K_A, E_H, E_W, lo=10.0, hi=13.0, rel_tol=1e-2)
    assert 10.0 < r <= 13.0
    assert lpm.solve_convex(r, K, K_A, E_H, E_W).minority_cosine >= lpm.COLLAPSED
    assert lpm.solve_convex(r / 1.02, K, K_A, E_H, E_W).minority_cosine < lpm.COLLAPSED


def test_minority_cosine_of_known_vectors():
    W = np.array([[1.0, 0], [0, 1], [1, 0], [1, 1e-9], [2, 0]])
    assert lpm.minority_cosine(W, 2) == pytest.approx(1.0)
    assert lpm.minority_cosine(lpm.etf_classifier_gram(6, 2.0), 2, gram=True) == pytest.approx(-0.2)


@pytest.mark.parametrize("kwargs,name", [
    (dict(R=0.5), "R"), (dict(R=float("nan")), "R"), (dict(R="10"), "R"), (dict(R=2.0, K=1), "K"),
    (dict(R=2.0, K_A=11), "K_A"), (dict(R=2.0, E_H=0.0), "E_H"), (dict(R=2.0, E_W=-1.0), "E_W"),
    (dict(R=2.0, E_W=math.inf), "E_W")])
def test_bad_arguments_are_refused_naming_the_argument(kwargs, name):
    for solve in (lpm.solve_convex, lpm.solve_first_order):
        with pytest.raises(ValueError, match=rf"^{name} "):
            solve(**kwargs)


def test_bad_solver_arguments_are_refused():
    with pytest.raises(ValueError, match="^dim "):
        lpm.solve_first_order(2.0, dim=0)
    with pytest.raises(ValueError, match="n_minority"):
        lpm.solve_first_order(2.5, n_minority=1)  # 2.5 majority samples
    with pytest.raises(ValueError, match="^R must be finite"):
        lpm.solve_first_order(math.inf)
    with pytest.raises(ValueError, match="^hi must be > lo"):
        lpm.collapse_threshold(lo=10.0, hi=5.0)
    with pytest.raises(ValueError, match="minority rows"):
        lpm.minority_cosine(np.eye(3), 2)


def test_model_experiment_at_smoke(results_dir):
    cfg = config.get_preset("minority_collapse", "smoke")["model"]
    run = store.load_or_run("minority_collapse", "smoke", cfg, lambda r: lpm.model_experiment(r, cfg),
                            label="model")
    sweep, checks = run.table("sweep"), run.table("first_order")
    assert list(sweep["R"]) == list(cfg["ratios"])
    assert len(checks) == 2 * len(cfg["check_ratios"])
    assert run.info["summary"]["max_objective_gap"] < 1e-8
    assert run.info["summary"]["max_cosine_gap"] < 1e-5
    assert 10 < run.info["summary"]["collapse_threshold"] < 10 ** 1.1
