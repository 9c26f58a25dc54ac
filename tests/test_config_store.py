import json

import numpy as np
import pytest

from ncutils import config, store


def test_presets_exist_and_unknown_ones_are_refused():
    for preset in config.PRESET_NAMES:
        cfg = config.get_preset("terminal_phase", preset)
        assert cfg["momentum"] == 0.9 and cfg["weight_decay"] == 5e-4 and cfg["batch_size"] == 128
    with pytest.raises(ValueError, match="preset must be one of"):
        config.get_preset("terminal_phase", "huge")
    with pytest.raises(ValueError, match="experiment must be one of"):
        config.get_preset("nope", "cpu")


def test_paper_preset_follows_the_published_protocol():
    cfg = config.get_preset("terminal_phase", "paper")
    assert cfg["epochs"] == 350
    assert [int(f * cfg["epochs"]) for f in cfg["lr_milestones"]] == [116, 233]
    grid = config.paper_lr_grid()
    assert len(grid) == 25 and grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(0.25)
    assert all(any(a["lr"] == pytest.approx(g) for g in grid) for a in cfg["per_arch"].values())


def test_config_hash_is_stable_and_order_free():
    a = {"b": 1, "a": [1, 2.5, None], "c": {"x": (1, 2)}}
    b = {"c": {"x": [1, 2]}, "a": [1, 2.5, None], "b": 1}
    assert config.config_hash(a) == config.config_hash(b)
    assert config.config_hash(a) != config.config_hash({**a, "b": 2})
    assert config.config_hash({"lr": 0.1}) == "9c9ba942d8"  # pinned: committed results are found by this hash
    with pytest.raises(TypeError, match="JSON-like"):
        config.config_hash({"x": object()})


def test_snapshot_epochs_are_log_spaced_and_cover_the_ends():
    eps = config.snapshot_epochs(350, 40)
    assert eps[0] == 1 and eps[-1] == 350 and eps == sorted(set(eps))
    assert sum(e <= 10 for e in eps) > sum(e > 175 for e in eps)  # denser early, as log-spacing is


def test_run_roundtrip_and_load_or_run_never_recomputes(results_dir):
    calls = []

    def work(run):
        calls.append(1)
        run.save_table("history", [{"epoch": 1, "nc1": 0.5}, {"epoch": 2, "nc1": 0.25}])
        run.save_arrays("arrays", w=np.eye(3))
        return {"answer": 42}

    run = store.load_or_run("exp", "cpu", {"lr": 0.1}, work, label="mnist mlp")
    again = store.load_or_run("exp", "cpu", {"lr": 0.1}, work, label="mnist mlp")
    assert len(calls) == 1 and again.path == run.path and run.complete
    assert list(run.table("history")["nc1"]) == [0.5, 0.25]
    assert np.array_equal(run.arrays("arrays")["w"], np.eye(3))
    info = json.loads((run.path / "run.json").read_text())
    for key in ("config", "preset", "commit", "device", "torch", "wall_seconds", "summary"):
        assert key in info
    assert info["summary"] == {"answer": 42}
    assert [r.path for r in store.list_runs("exp")] == [run.path]
    store.load_or_run("exp", "cpu", {"lr": 0.1}, work, label="mnist mlp", force=True)
    assert len(calls) == 2


def test_interrupted_work_is_not_marked_complete(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.2}, lambda r: {"complete": False})
    assert not run.complete


def test_unknown_preset_and_missing_table_are_refused(results_dir):
    with pytest.raises(ValueError, match="preset must be one of"):
        store.Run("exp", "laptop", {})
    with pytest.raises(FileNotFoundError, match="no table 'history'"):
        store.Run("exp", "cpu", {}).table("history")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "a.txt"
    store.atomic_write(target, "one")

    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        store.atomic_write(target, 123)  # not bytes/str: the old file must survive untouched
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_ci_guard_refuses_to_compute_missing_results(results_dir, monkeypatch):
    monkeypatch.setenv("NCUTILS_REQUIRE_RESULTS", "1")
    with pytest.raises(RuntimeError, match="NCUTILS_REQUIRE_RESULTS=1"):
        store.load_or_run("exp", "cpu", {"lr": 0.3}, lambda r: {})
    assert store.load_or_run("exp", "smoke", {"lr": 0.3}, lambda r: {}).complete
