"""Fault injection (issue 17): each test plants one fault and asserts what a user needs: forced
reruns that really retrain and never lose a complete run, damaged results and checkpoints refused
naming the file, strict booleans and config keys, degenerate metric inputs never read as numbers."""

import ast
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ncutils import checks, config, metrics, minority, seg, store, train, ufm
from _helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _work(tag, rows=3, calls=None):
    """A load_or_run function writing a history of ``rows`` epochs, a second table and arrays."""
    def fn(run):
        if calls is not None:
            calls.append((run.path, sorted(p.name for p in run.path.iterdir()) if run.path.exists() else []))
        run.save_table("history", [{"epoch": e, "nc1": 1.0 / e, "tag": tag} for e in range(1, rows + 1)])
        run.save_table("other", [{"x": 1}])
        run.save_arrays("geometry", w=np.eye(3) * (2.0 if tag == "new" else 1.0))
        return {"epochs_done": rows, "tag": tag}
    return fn


# ---------------------------------------------------------------- 1, 2: force retrains, keeps the old run

def test_force_retrains_from_scratch_in_a_fresh_staging_folder(real_data, results_dir):
    cfg = tiny_config(epochs=2)
    seen = []

    def fn(run):
        seen.append((run.path.name, sorted(p.name for p in run.path.iterdir()) if run.path.exists() else []))
        return train.train(run, cfg, progress=False)

    first = store.load_or_run("t", "smoke", cfg, fn, label="force")
    old_hist, old_info = first.table("history"), first.info
    assert (first.path / "checkpoint.pt").is_file()  # the final-epoch checkpoint a resume would reuse
    forced = store.load_or_run("t", "smoke", cfg, fn, label="force", force=True)
    assert forced.path == first.path
    name, content = seen[-1]
    assert name == first.path.name + ".staging" and content == []  # fresh and empty: nothing reused
    new_hist = forced.table("history")
    assert list(new_hist["epoch"]) == [1, 2]
    assert (new_hist["epoch_seconds"] != old_hist["epoch_seconds"]).all()  # every epoch trained again
    cols = [c for c in new_hist.columns if c != "epoch_seconds"]
    assert new_hist[cols].equals(old_hist[cols])  # same config, same seed: the same numbers (CPU)
    assert forced.info["finished"] >= old_info["finished"] and forced.info["files"]
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]  # no staging/old left


def test_the_segmentation_loop_forces_through_the_staging_folder(results_dir, monkeypatch):
    seen = []

    def fake(run, cfg, device=None, progress=None):
        seen.append(run.path.name)
        return _work("new")(run)

    monkeypatch.setattr(seg, "train_segmentation", fake)
    runs = seg.run_segmentation("smoke", only=["cr"])
    assert seen == [runs["cr", 0].path.name]
    seg.run_segmentation("smoke", only=["cr"], force=True)
    assert seen[-1] == runs["cr", 0].path.name + ".staging" and runs["cr", 0].complete


def test_an_interrupted_forced_rerun_leaves_the_old_run_loadable_and_resumes(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.1}, _work("old"), label="r")
    before = run.table("history")

    def crash(r):
        r.save_table("history", [{"epoch": 1, "nc1": 9.0, "tag": "partial"}])
        raise KeyboardInterrupt  # killed mid-run

    with pytest.raises(KeyboardInterrupt):
        store.load_or_run("exp", "cpu", {"lr": 0.1}, crash, label="r", force=True)
    again = store.load_or_run("exp", "cpu", {"lr": 0.1}, _work("unused"), label="r")  # no retrain
    assert again.complete and again.table("history").equals(before)
    assert [r.path for r in store.list_runs("exp")] == [run.path]  # the staging folder is no run
    calls = []
    store.load_or_run("exp", "cpu", {"lr": 0.1}, _work("new", calls=calls), label="r", force=True)
    assert calls[0][0].name.endswith(".staging") and "history.csv" in calls[0][1]  # resumed the staging
    assert list(run.table("history")["tag"]) == ["new"] * 3
    assert sorted(p.name for p in run.path.parent.iterdir()) == [run.path.name]


def test_a_swap_cut_between_its_two_renames_is_completed_on_the_next_call(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.5}, _work("old"))
    staged = run.path.with_name(run.path.name + ".staging")
    staged.mkdir()
    fake = store.Run("exp", "cpu", {"lr": 0.5})
    fake.path = staged
    _work("new")(fake)
    fake.finish(1.0, {"epochs_done": 3})
    os.replace(run.path, run.path.with_name(run.path.name + ".old"))  # crash after the first rename
    assert not run.complete
    back = store.load_or_run("exp", "cpu", {"lr": 0.5}, _work("unused"))
    assert list(back.table("history")["tag"]) == ["new"] * 3
    assert sorted(p.name for p in run.path.parent.iterdir()) == [run.path.name]


# ---------------------------------------------------------------- 3, 11: damaged results refused

def test_a_truncated_or_damaged_results_file_is_refused_naming_it(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.2}, _work("old"))
    info = run.info
    assert info["files"]["history.csv"]["rows"] == 3 and len(info["files"]["history.csv"]["sha256"]) == 64
    hist = run.path / "history.csv"
    text = hist.read_text()
    hist.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1])  # the last epoch lost
    with pytest.raises(store.ResultsError, match=r"history\.csv is truncated or damaged"):
        run.table("history")
    with pytest.raises(store.ResultsError, match=r"history\.csv"):
        store.load_or_run("exp", "cpu", {"lr": 0.2}, _work("never"))  # refused, not retrained
    hist.write_text(text.replace("0.5", "0.6"))  # same size, other numbers
    with pytest.raises(store.ResultsError, match=r"history\.csv is damaged: its sha256"):
        run.table("history")
    hist.write_text(text)
    arr = run.path / "geometry.npz"
    data = bytearray(arr.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    arr.write_bytes(bytes(data))
    with pytest.raises(store.ResultsError, match=r"geometry\.npz is damaged"):
        run.arrays("geometry")
    (run.path / "stray.csv").write_text("a\n1\n")
    with pytest.raises(store.ResultsError, match=r"stray\.csv is not part of the run"):
        run.table("stray")


def test_a_truncated_run_json_is_refused_naming_it(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.3}, _work("old"))
    file = run.path / "run.json"
    file.write_text(file.read_text()[:200])
    for action in (lambda: run.info, lambda: run.table("history"), lambda: store.list_runs("exp"),
                   lambda: store.load_or_run("exp", "cpu", {"lr": 0.3}, _work("never"))):
        with pytest.raises(store.ResultsError, match=r"run\.json is damaged or truncated"):
            action()


def _legacy(run):
    """Strip the manifest, as runs written before it existed."""
    file = run.path / "run.json"
    info = json.loads(file.read_text())
    del info["files"]
    file.write_text(json.dumps(info, indent=2))
    return file


def test_runs_without_a_manifest_load_and_a_short_history_is_refused(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.4}, _work("old"))
    _legacy(run)
    assert list(run.table("history")["epoch"]) == [1, 2, 3]
    run.save_table("history", [{"epoch": 1}, {"epoch": 2}])  # truncated: 2 rows of epochs_done = 3
    with pytest.raises(store.ResultsError, match=r"history\.csv has 2 rows, but the run's summary"):
        run.table("history")
    with pytest.raises(store.ResultsError, match=r"history\.csv"):
        store.seal_run(run)  # never seals a damaged run


def test_seal_run_adds_only_the_manifest(results_dir):
    run = store.load_or_run("exp", "cpu", {"lr": 0.7, "x": [1, 2.5]}, _work("old"))
    file = _legacy(run)
    old_text = file.read_text()
    assert store.seal_run(run) is True
    new_text = file.read_text()
    assert new_text.startswith(old_text.rstrip()[:-1].rstrip() + ",\n  \"files\": {")  # every old byte kept
    new = json.loads(new_text)
    assert {k: v for k, v in new.items() if k != "files"} == json.loads(old_text)
    assert new["files"] == store.file_manifest(run.path) and run.key == new["config_hash"]
    assert store.seal_run(run) is False  # already sealed: verified, unchanged
    assert file.read_text() == new_text


def test_committed_runs_are_sealed_and_verify():
    runs = store.list_runs()
    assert runs, "no committed runs found"
    for run in runs:
        run.verify()
        assert "files" in run.info, f"{run.path} has no manifest: run scripts/seal_results.py"


# ---------------------------------------------------------------- 4: strict booleans

@pytest.mark.parametrize("value", ["False", "True", 0, 1, None])
def test_force_must_be_a_real_bool(value, results_dir):
    with pytest.raises(ValueError, match=r"force must be True or False"):
        store.load_or_run("exp", "cpu", {"lr": 0.1}, _work("never"), force=value)
    with pytest.raises(ValueError, match=r"force must be True or False"):
        train.run_experiment("terminal_phase", "smoke", force=value)
    with pytest.raises(ValueError, match=r"force must be True or False"):
        seg.run_segmentation("smoke", force=value)
    assert not any(results_dir.rglob("*.csv"))  # nothing ran


def test_a_string_from_papermill_r_gets_a_hint():
    with pytest.raises(ValueError, match=r"-p NAME True"):
        checks.check_bool("False", "FORCE_RUN")
    assert checks.check_bool(np.bool_(True), "x") is True


def test_every_chapter_passes_force_run_only_to_checked_functions():
    checked = {"run_experiment", "run_segmentation", "load_or_run", "measure_preset", "lr_sweep", "run_model",
               "run_networks", "run_remedy_seeds", "run_nc_ood", "run_ceco", "run_landscape"}  # each calls store.load_or_run, which checks force
    for path in sorted((ROOT / "chapters").glob("[0-9]*.py")) + sorted((ROOT / "drafts").glob("[0-9]*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "FORCE_RUN" and isinstance(node.ctx, ast.Load):
                call = next((c for c in ast.walk(tree) if isinstance(c, ast.Call)
                             and any(k.value is node for k in c.keywords)), None)
                assert call is not None, f"{path.name}: FORCE_RUN used outside a force= argument"
                name = getattr(call.func, "attr", getattr(call.func, "id", None))
                assert name in checked and any(k.arg == "force" and k.value is node for k in call.keywords), \
                    f"{path.name}: FORCE_RUN passed to {name}"


# ---------------------------------------------------------------- 5: checkpoint bit rot

def _state():
    return {"epoch": 3, "model": {"w": torch.arange(1000, dtype=torch.float32)}, "config_hash": "abc"}


@pytest.mark.parametrize("where", ["payload low bit", "payload high bit", "header digest", "truncated"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, where):
    path = tmp_path / "checkpoint.pt"
    train.save_checkpoint(path, _state())
    assert torch.equal(train.load_checkpoint(path)["model"]["w"], _state()["model"]["w"])
    data = bytearray(path.read_bytes())
    if where == "truncated":
        data = data[: len(data) - 100]
    else:
        i = {"payload low bit": len(data) - 2000, "payload high bit": len(data) - 1500,
             "header digest": len(train._CKPT_MAGIC) + 5}[where]
        data[i] ^= 0x80 if where == "payload high bit" else 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(train.CheckpointError, match=rf"checkpoint {re.escape(str(path))} is damaged"):
        train.load_checkpoint(path)


def test_a_checkpoint_without_the_header_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(_state(), path)  # written by the code before the header
    assert train.load_checkpoint(path)["epoch"] == 3


def test_training_refuses_to_resume_from_a_rotten_checkpoint(real_data, tmp_path):
    cfg = tiny_config(epochs=2)
    run = store.Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False, stop_after=1)
    ckpt = run.path / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x40
    ckpt.write_bytes(bytes(data))
    with pytest.raises(train.CheckpointError, match="is damaged"):
        train.train(run, cfg, progress=False)


# ---------------------------------------------------------------- 6: every config key validated

@pytest.mark.parametrize("change, key", [
    ({"lr": math.inf}, "lr"), ({"lr": 0.0}, "lr"), ({"lr": "0.1"}, "lr"), ({"lr_gamma": -1.0}, "lr_gamma"),
    ({"lr_gamma": 0.0}, "lr_gamma"), ({"lr_gamma": 1.5}, "lr_gamma"), ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"), ({"weight_decay": -1e-4}, "weight_decay"),
    ({"weight_decay": math.nan}, "weight_decay"), ({"seed": True}, "seed"), ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"), ({"lr_milestones": (2, 1)}, "lr_milestones"),
    ({"lr_milestones": (0,)}, "lr_milestones"), ({"lr_milestones": (4,)}, "lr_milestones"),
    ({"lr_milestones": (1.5,)}, "lr_milestones"), ({"lr_milestones": "12"}, "lr_milestones"),
    ({"lr_milestones": (True,)}, "lr_milestones"), ({"lr_gama": 0.1}, "lr_gama"),
    ({"augment": True}, "augment"), ({"optimizer": "adam"}, "optimizer"), ({"amp": "yes"}, "amp"),
    ({"n_per_class": 0}, "n_per_class"), ({"etf_bias": "no"}, "etf_bias"), ({"batch_size": True}, "batch_size"),
    ({"test_per_class": "every"}, "test_per_class"), ({"test_per_class": 0}, "test_per_class"),
])
def test_bad_train_config_values_are_refused_naming_the_key(change, key, tmp_path):
    cfg = tiny_config(**change)
    with pytest.raises(ValueError, match=re.escape(key)):
        train.train(store.Run("t", "smoke", {}, root=tmp_path), cfg, progress=False)
    assert not any(tmp_path.rglob("*"))  # refused before anything was written


def _seg_cfg(**kw):
    cfg = config.get_preset("camvid_cr", "smoke")
    for key in ("variants", "seeds", "lambda_sweep"):
        cfg.pop(key)
    return {**cfg, "cr_weight": 0.4, "seed": 0, **kw}


@pytest.mark.parametrize("change, key", [
    ({"momentum": 1.0}, "momentum"), ({"lr": math.inf}, "lr"), ({"seed": True}, "seed"), ({"seed": -1}, "seed"),
    ({"flip": "yes"}, "flip"), ({"cr_normalize": 1}, "cr_normalize"), ({"widths": (4, 0)}, "widths"),
    ({"cr_weight": math.nan}, "cr_weight"), ({"lr_power": -0.9}, "lr_power"), ({"typo": 1}, "typo"),
    ({"cr_dim": 0}, "cr_dim"), ({"weight_decay": math.inf}, "weight_decay"),
])
def test_bad_segmentation_config_values_are_refused_naming_the_key(change, key, results_dir):
    cfg = _seg_cfg(**change)
    with pytest.raises(ValueError, match=re.escape(key)):
        seg.train_segmentation(store.Run("camvid_cr", "smoke", cfg, label="bad"), cfg, progress=False)


def test_every_preset_gives_valid_run_configs():
    for experiment in ("terminal_phase", "fixed_etf"):
        for preset in config.PRESET_NAMES:
            exp = config.get_preset(experiment, preset)
            exp.pop("memory", None)
            variants = exp.pop("variants", None) or [{}]
            for dataset in exp["datasets"]:
                for arch in exp["archs"]:
                    for variant in variants:
                        train._check_config(train.run_config(exp, dataset, arch, 0, **variant))
    for preset in config.PRESET_NAMES:
        for _, cfg in minority.network_configs(preset).values():
            train._check_config(cfg)
    for preset in config.PRESET_NAMES:
        exp = config.get_preset("camvid_cr", preset)
        variants, sweep = exp.pop("variants"), exp.pop("lambda_sweep")
        checks.check_seeds(list(exp.pop("seeds"))), checks.check_seeds(list(sweep["seeds"]))
        for v in list(variants) + [{"cr_weight": w} for w in sweep["cr_weights"]]:
            seg._check_seg_config({**exp, **{k: x for k, x in v.items() if k != "name"}, "seed": 0})


def test_config_hash_takes_numpy_scalars_and_names_a_bad_key(results_dir):
    assert config.config_hash({"lr": np.float64(0.1)}) == config.config_hash({"lr": 0.1}) == "9c9ba942d8"
    assert config.config_hash({"s": np.int64(3), "f": np.bool_(True)}) == config.config_hash({"s": 3, "f": True})
    with pytest.raises(TypeError, match=r"config\['per_arch'\]\['mlp'\]\['lr'\] is a Fraction"):
        from fractions import Fraction
        config.config_hash({"per_arch": {"mlp": {"lr": Fraction(1, 10)}}})
    sweep = {"lr": np.logspace(-2, -1, 3)[1], "seed": np.int64(2)}  # an lr sweep built with numpy
    run = store.load_or_run("exp", "cpu", sweep, _work("x"))
    assert store.list_runs("exp")[0].path == run.path  # stored as plain numbers, found by its hash
    assert json.loads((run.path / "run.json").read_text())["config"]["seed"] == 2


def test_seeds_must_be_integers(results_dir):
    for bad in ([True], ["0"], [-1], [0, 0], 3):
        with pytest.raises(ValueError, match=r"seeds"):
            seg.run_segmentation("smoke", seeds=bad)
    with pytest.raises(ValueError, match=r"seed must be an integer"):
        train.run_experiment("terminal_phase", "smoke", seed=True)


# ---------------------------------------------------------------- 7: degenerate NC metric inputs

def _blocks(scale=1.0, rel=1e-15, k=4, n=50, d=6):
    g = np.random.default_rng(0)
    base = g.standard_normal((n, d))
    h = np.concatenate([base * (1 + rel * c) for c in range(k)]) * scale  # equal means up to rounding
    return h, np.repeat(np.arange(k), n), g.standard_normal((k, d))


def test_class_means_equal_up_to_rounding_give_nan_with_a_warning():
    h, y, w = _blocks()
    with pytest.warns(RuntimeWarning, match="class means coincide up to rounding"):
        out = metrics.collapse_metrics(h, y, w, extras=True)
    for key in ("nc1", "equinorm_means", "equiangular_means", "maxangle_means", "self_duality", "cdnv",
                "nc1_trace_ratio"):
        assert math.isnan(out[key]), key  # was nc1 ~ 3e32
    assert math.isfinite(out["equinorm_classifiers"])
    with pytest.warns(RuntimeWarning, match="coincide"):
        stream = metrics.collapse_metrics_streaming([(h[:100], y[:100]), (h[100:], y[100:])], w)
    assert math.isnan(stream["nc1"])
    h2, y2, w2 = _blocks(rel=1e-6)  # a real, if small, separation still gives a number
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isfinite(metrics.collapse_metrics(h2, y2, w2)["nc1"])


@pytest.mark.parametrize("scale, match", [(1e154, "too large"), (1e200, "too large"), (1e-160, "too small")])
def test_features_whose_moments_overflow_or_underflow_are_refused(scale, match):
    g = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 50)
    h = (g.standard_normal((200, 6)) + 3 * g.standard_normal((4, 6))[y]) * scale
    with pytest.raises(ValueError, match=f"features are {match}"):
        metrics.collapse_metrics(h, y, g.standard_normal((4, 6)))


# ---------------------------------------------------------------- 8: NCUTILS_RESULTS relative

def test_a_relative_results_root_is_taken_from_the_project_root(monkeypatch):
    monkeypatch.setenv("NCUTILS_RESULTS", "some/results")
    monkeypatch.chdir(ROOT)
    at_root = store.results_root()
    monkeypatch.chdir(ROOT / "chapters")
    assert store.results_root() == at_root == ROOT / "some" / "results"


# ---------------------------------------------------------------- 9: --only that matches nothing

def test_only_that_matches_nothing_lists_the_choices(results_dir):
    with pytest.raises(ValueError, match=r"names no run .*matched nothing\); valid choices: mnist:mlp, fashionmnist:mlp"):
        train.run_experiment("terminal_phase", "smoke", only=[("mnist", "resnet")])
    with pytest.raises(ValueError, match=r"valid choices: \['baseline', 'cr'\]"):
        seg.run_segmentation("smoke", only=["crr"])
    with pytest.raises(ValueError, match=r"valid choices"):
        seg.run_segmentation("smoke", only=[])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NCUTILS_RESULTS": str(results_dir)}
    out = subprocess.run([sys.executable, "scripts/run_experiment.py", "terminal_phase", "--preset", "smoke",
                          "--only", "mnist:vgg"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "valid choices: mnist:mlp" in out.stderr


# ---------------------------------------------------------------- 10: file modes

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_results_files_get_the_usual_mode(results_dir, umask, mode):
    old = os.umask(umask)
    try:
        run = store.load_or_run("exp", "cpu", {"lr": umask}, _work("x"))
    finally:
        os.umask(old)
    for file in run.path.iterdir():
        assert file.stat().st_mode & 0o777 == mode, file.name


# ---------------------------------------------------------------- 11: errors that name the culprit

def test_a_classifier_with_an_extra_row_is_blamed_not_the_labels():
    g = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 10)
    h = g.standard_normal((40, 5)) + 3 * g.standard_normal((4, 5))[y]
    with pytest.raises(ValueError, match=r"weight has K = 5 rows .* K = 4 rows"):
        metrics.collapse_metrics(h, y, g.standard_normal((5, 5)))
    with pytest.raises(ValueError, match=r"weight must have shape K x d with d = 5"):
        metrics.collapse_metrics_streaming([(h, y)], g.standard_normal((4, 7)))


def test_an_imbalance_with_an_empty_class_is_refused_naming_it(tmp_path):
    cfg = tiny_config(n_per_class=None, counts=[5] * 9 + [0])
    with pytest.raises(ValueError, match=r"config\['counts'\]\[9\] = 0: every class needs"):
        train.train(store.Run("t", "smoke", cfg, root=tmp_path), cfg, progress=False)


def test_chapter_4_refuses_a_bad_seed_parameter_naming_it():
    source = (ROOT / "chapters" / "04_segmentation_ceco.py").read_text()
    cells = re.split(r"^# %%.*$", source, flags=re.M)
    start = next(i for i, c in enumerate(cells) if 'SEED = 0' in c)
    setup = next(i for i, c in enumerate(cells) if "arm_seeds = {" in c)
    for bad in ('"1"', "True", "-1"):
        scope = {}
        exec(cells[start], scope)
        exec(f"PRESET = 'smoke'\nSEED = {bad}", scope)  # what papermill injects
        with pytest.raises(ValueError, match=r"SEED must be an integer"):
            exec("\n".join(cells[start + 1:setup + 1]), scope)


def test_ufm_closed_form_with_tiny_lambdas():
    K, n = 10, 20
    for lam in (1e-170, 1e-200, 1e-300):
        a, s = ufm.closed_form_optimum(K, n, lam, lam)
        log_c = 0.5 * math.log(n) + math.log(lam)
        assert a == pytest.approx(math.sqrt(n) * (K - 1) / K * -log_c, rel=1e-12) and s == pytest.approx(n ** -0.5)
        assert 0 < ufm.global_min_value(K, n, lam, lam) < 1e-150  # (K-1) c log(1/c), c ~ lambda
    lam = 1e-150  # no underflow: the plain formula, unchanged
    c = math.sqrt(n * lam * lam)
    assert ufm.closed_form_optimum(K, n, lam, lam)[0] == pytest.approx(
        math.sqrt(n) * (K - 1) / K * math.log((1 - (K - 1) * c) / c), rel=1e-15)


def test_lbfgs_refuses_a_nan_start():
    W, H, b = ufm.init(3, 2, 4, seed=0)
    W[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"start contains NaN or infinite values \(in W\)"):
        ufm.fit(3, 2, 4, 5e-3, 5e-3, 5e-3, start=(W, H, b))


def test_a_nan_cr_loss_stops_segmentation_training(camvid_root, results_dir, monkeypatch):
    cfg = _seg_cfg(widths=(4,), feature_dim=12, cr_dim=12, crop=(32, 48), batch_size=2, epochs=1,
                   n_train=4, n_eval=2, eval_every=1)
    real, calls = seg.SegUNet.cr_loss, []

    def poisoned(self, *args, **kw):
        calls.append(1)
        loss = real(self, *args, **kw)
        return loss * math.nan if len(calls) == 2 else loss

    monkeypatch.setattr(seg.SegUNet, "cr_loss", poisoned)
    run = store.Run("camvid_cr", "smoke", cfg, label="nan")
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 2 \(CR loss nan\)"):
        seg.train_segmentation(run, cfg, device="cpu", progress=False)
    assert not (run.path / "checkpoint.pt").exists() and not run.complete


def test_the_run_script_reaches_every_kind_of_experiment(results_dir):
    """scripts/run_experiment.py dispatches ufm, camvid_ceco and the classification experiments
    (with --seeds) to their runners, and exits non-zero when one fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NCUTILS_RESULTS": str(results_dir)}

    def script(*argv):
        return subprocess.run([sys.executable, "scripts/run_experiment.py", *argv, "--preset", "smoke"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

    out = script("ufm", "--seeds", "0")
    assert out.returncode == 0, out.stderr
    assert (results_dir / "ufm").is_dir() and any((results_dir / "ufm").glob("smoke-landscape*/run.json"))
    out = script("terminal_phase", "--only", "mnist:mlp", "--seeds", "0", "1")
    assert out.returncode == 0, out.stderr
    assert len(list((results_dir / "terminal_phase").glob("smoke-mnist_mlp_s[01]-*/run.json"))) == 2
    out = script("camvid_ceco", "--only", "cecol", "--seeds", "0")
    assert out.returncode == 0, out.stderr
    assert len(list((results_dir / "camvid_cr").glob("smoke-cecol*/run.json"))) == 1, out.stdout
    assert script("ufm", "--only", "x").returncode != 0
