import math

import pytest
import torch

from ncutils import config, train
from ncutils.store import Run
from _helpers import tiny_config


def test_batches_visit_every_sample_once_in_a_seeded_order():
    x = torch.arange(103)
    batches = train.TensorBatches(x, x * 2, batch_size=10, seed=7)
    assert len(batches) == 11
    seen = torch.cat([xb for xb, _ in batches.epoch(5)])
    assert sorted(seen.tolist()) == list(range(103))
    again = torch.cat([xb for xb, _ in train.TensorBatches(x, x * 2, batch_size=10, seed=7).epoch(5)])
    other = torch.cat([xb for xb, _ in batches.epoch(6)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    assert all(torch.equal(yb, xb * 2) for xb, yb in batches.epoch(1))
    with pytest.raises(ValueError, match="batch_size"):
        train.TensorBatches(x, batch_size=0)
    with pytest.raises(ValueError, match="same first dimension"):
        train.TensorBatches(x, x[:5], batch_size=4)


def test_resume_after_interruption_equals_an_uninterrupted_run(real_data, tmp_path):
    cfg = tiny_config()
    straight = Run("t", "smoke", cfg, root=tmp_path / "a")
    summary = train.train(straight, cfg, progress=False)
    assert summary["complete"] and summary["epochs_done"] == 4
    parts = Run("t", "smoke", cfg, root=tmp_path / "b")
    first = train.train(parts, cfg, progress=False, stop_after=2)
    assert not first["complete"] and first["epochs_done"] == 2
    train.train(parts, cfg, progress=False)
    a, b = straight.table("history"), parts.table("history")
    cols = [c for c in a.columns if c != "epoch_seconds"]
    assert a[cols].equals(b[cols])
    sa = train.load_checkpoint(straight.path / "checkpoint.pt")["model"]
    sb = train.load_checkpoint(parts.path / "checkpoint.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("seconds, saved_epochs", [("0", [1, 2, 3, 4]), ("1e9", [2, 4])])
def test_checkpoints_are_throttled_but_the_stop_and_the_last_epoch_are_always_saved(
        real_data, tmp_path, monkeypatch, seconds, saved_epochs):
    monkeypatch.setenv("NCUTILS_CHECKPOINT_SECONDS", seconds)
    saved, real_save = [], train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint", lambda path, state: (saved.append(state["epoch"]),
                                                                      real_save(path, state)))
    cfg = tiny_config()
    run = Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False, stop_after=2)  # an interruption after epoch 2
    train.train(run, cfg, progress=False)
    assert saved == saved_epochs
    assert train.load_checkpoint(run.path / "checkpoint.pt")["epoch"] == 4


@pytest.mark.parametrize("bad", ["-1", "often", "nan", "inf"])
def test_a_bad_checkpoint_interval_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("NCUTILS_CHECKPOINT_SECONDS", bad)
    with pytest.raises(ValueError, match="NCUTILS_CHECKPOINT_SECONDS"):
        train.checkpoint_seconds()


def test_history_has_the_promised_columns_and_snapshots(real_data, tmp_path):
    cfg = tiny_config()
    run = Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False)
    hist = run.table("history")
    for col in ("epoch", "train_error", "test_error", "train_loss", "nc1", "ncc_mismatch", "self_duality"):
        assert col in hist.columns
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    snaps = hist.dropna(subset=["nc1"])["epoch"].tolist()
    assert set(config.snapshot_epochs(4, 3)) <= set(snaps)
    assert (hist["nc1"].dropna() > 0).all() and hist["train_error"].between(0, 1).all()


def test_corrupt_or_truncated_checkpoints_are_refused(real_data, tmp_path):
    cfg = tiny_config(epochs=2)
    run = Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False, stop_after=1)
    ckpt = run.path / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(train.CheckpointError, match="corrupt or truncated"):
        train.train(run, cfg, progress=False)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(train.CheckpointError, match="corrupt or truncated"):
        train.load_checkpoint(ckpt)


def test_fixed_etf_classifier_run_keeps_the_classifier_bitwise(real_data, tmp_path):
    cfg = tiny_config(classifier="etf", epochs=2)
    run = Run("t", "smoke", cfg, root=tmp_path)
    summary = train.train(run, cfg, progress=False)
    state = train.load_checkpoint(run.path / "checkpoint.pt")["model"]
    from ncutils.etf import ETFClassifier

    assert torch.equal(state["classifier.weight"], ETFClassifier(32, 10).weight)
    from ncutils.models import build_model, count_parameters

    learned = count_parameters(build_model("mlp", width=32))
    assert summary["trainable_parameters"] == summary["parameters"] == learned - 32 * 10 - 10


def test_bad_run_configs_are_refused(real_data, tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        train.train(Run("t", "smoke", {}, root=tmp_path), tiny_config(epochs=0), progress=False)
    with pytest.raises(ValueError, match="dataset"):
        cfg = tiny_config(dataset="cifar7")
        train.train(Run("t", "smoke", cfg, root=tmp_path), cfg, progress=False)
    with pytest.raises(ValueError, match="classifier"):
        cfg = tiny_config(classifier="frozen")
        train.train(Run("t", "smoke", cfg, root=tmp_path), cfg, progress=False)
    with pytest.raises(ValueError, match="no settings for arch"):
        train.run_config(config.get_preset("terminal_phase", "smoke"), "mnist", "vgg11")
    assert math.isfinite(tiny_config()["lr"])


def test_test_set_and_metrics_are_evaluated_only_at_snapshots(real_data, tmp_path):
    cfg = tiny_config(epochs=5, n_snapshots=2, snapshot_every=2)
    run = Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False)
    hist = run.table("history")
    snaps = train.snapshot_set(cfg)
    assert snaps == {1, 2, 4, 5}
    tested = set(hist.dropna(subset=["test_error"])["epoch"])
    onset = hist.loc[hist["train_error"] == 0, "epoch"]
    assert tested == snaps | ({int(onset.iloc[0])} if len(onset) else set())
    assert tested == set(hist.dropna(subset=["nc1"])["epoch"])
    assert hist["train_error"].notna().all()
    with pytest.raises(ValueError, match="snapshot_every"):
        train.train(run, tiny_config(snapshot_every=0), progress=False)


def test_sparse_training_error_evaluation_leaves_training_bitwise_unchanged(real_data, tmp_path):
    cfg = tiny_config(epochs=7, n_snapshots=2, snapshot_every=3)
    every = Run("t", "smoke", cfg, root=tmp_path / "a")
    train.train(every, cfg, progress=False)
    sparse_cfg = {**cfg, "train_eval_every": 4}
    sparse = Run("t", "smoke", sparse_cfg, root=tmp_path / "b")
    train.train(sparse, sparse_cfg, progress=False)
    sa = train.load_checkpoint(every.path / "checkpoint.pt")["model"]
    sb = train.load_checkpoint(sparse.path / "checkpoint.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    a, b = every.table("history"), sparse.table("history")
    evaluated = set(b.dropna(subset=["train_error"])["epoch"])
    onset = a.loc[a["train_error"] == 0, "epoch"]
    expected = {4, 7} | train.snapshot_set(cfg)
    assert expected <= evaluated <= expected | ({int(onset.iloc[0])} if len(onset) else set())
    rows = a["epoch"].isin(sorted(evaluated))
    assert a.loc[rows, "train_error"].tolist() == b.loc[rows, "train_error"].tolist()
    assert b.loc[~rows, "train_error"].isna().all()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="train_eval_every"):
            train.train(Run("t", "smoke", {**cfg, "train_eval_every": bad}, root=tmp_path / "c"),
                        {**cfg, "train_eval_every": bad}, progress=False)


def test_tpt_summary_reads_the_evaluated_epochs_only():
    # every other epoch evaluated: NaN rows neither start nor break the terminal phase
    err = [0.5, math.nan, 0.0, math.nan, 0.0, math.nan, 0.0]
    nc1 = [8.0, None, 4.0, None, 2.0, None, 1.0]
    s = train.tpt_summary(_planted_history(err, nc1))
    assert s["tpt_epoch"] == 3 and s["tpt_stable_epoch"] == 3 and s["tpt_start"] == 3
    assert s["nc1_drop"] == pytest.approx(4.0)


def _planted_history(train_error, nc1, lr=None):
    import pandas as pd

    n = len(train_error)
    rows = []
    for e in range(1, n + 1):
        row = {c: math.nan for c in train.HISTORY_COLUMNS}
        row.update(epoch=e, lr=(lr or [0.1] * n)[e - 1], train_error=train_error[e - 1])
        if nc1[e - 1] is not None:
            row.update({k: nc1[e - 1] for k in train.NC_FOLD_KEYS}, ncc_mismatch=0.0,
                       test_error=0.1 * e)
        rows.append(row)
    return pd.DataFrame(rows)


def test_tpt_summary_separates_the_onset_from_the_phase_where_error_stays_zero():
    # zero at epoch 2, errs again at 3, zero from 4 on; snapshots at 1, 2, 5, 6, 8
    err = [0.5, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    nc1 = [8.0, 4.0, None, None, 2.0, 1.0, None, 0.02]
    lr = [0.1] * 6 + [0.01] * 2
    s = train.tpt_summary(_planted_history(err, nc1, lr), steps_per_epoch=3)
    assert s["tpt_epoch"] == 2 and s["tpt_stable_epoch"] == 4 and s["tpt_start"] == 5
    assert s["nc1_at_tpt"] == 4.0 and s["nc1_at_start"] == 2.0 and s["nc1_end"] == 0.02
    assert s["nc1_drop"] == pytest.approx(100.0) and s["fold_self_duality"] == pytest.approx(100.0)
    assert s["steps_high_lr_in_tpt"] == 3 * 3  # epochs 4, 5, 6 at the initial lr
    assert s["test_acc_at_tpt"] == pytest.approx(0.8) and s["test_acc_end"] == pytest.approx(0.2)
    # an error at the last epoch: there is an onset but no stable terminal phase
    s = train.tpt_summary(_planted_history([0.5, 0.0, 0.1], [2.0, 1.0, 0.5]))
    assert s["tpt_epoch"] == 2 and s["tpt_stable_epoch"] is None and math.isnan(s["nc1_drop"])


def test_the_lr_sweep_picks_the_lowest_test_error_and_only_trains_its_own_rates(monkeypatch, tmp_path):
    monkeypatch.setenv("NCUTILS_RESULTS", str(tmp_path))
    calls = []

    def fake_train(run, cfg, device=None, progress=None):
        calls.append(cfg["lr"])
        return {"final_test_error": abs(cfg["lr"] - 0.05), "epochs_done": cfg["epochs"]}

    monkeypatch.setattr(train, "train", fake_train)
    part = train.lr_sweep("terminal_phase", "smoke", "fashionmnist", "mlp", lrs=(0.05,))
    assert calls == [0.05] and part[0.05].complete and not part[0.025].complete
    runs = train.run_experiment("terminal_phase", "smoke", only=(("fashionmnist", "mlp"),))
    assert calls == [0.05, 0.025]  # the complete 0.05 run is loaded, not retrained
    assert runs[("fashionmnist", "mlp")].config["lr"] == 0.05
    cfgs = [r.config for r in part.values()]
    assert {k for k in cfgs[0] if cfgs[0][k] != cfgs[1][k]} == {"lr"}
    with pytest.raises(ValueError, match="not in the sweep"):
        train.lr_sweep("terminal_phase", "smoke", "fashionmnist", "mlp", lrs=(0.3,))
    with pytest.raises(ValueError, match="names no run"):
        train.run_experiment("terminal_phase", "smoke", only=(("cifar", "mlp"),))


def test_per_dataset_settings_reach_only_their_dataset_and_leave_other_hashes_alone():
    exp = config.get_preset("fixed_etf", "cpu")
    exp.pop("memory"), exp.pop("variants")
    mnist, fmnist = (train.run_config(exp, ds, "resnet18", 0) for ds in ("mnist", "fashionmnist"))
    assert mnist["test_per_class"] == "all" and fmnist["test_per_class"] is None
    assert "per_dataset" not in mnist and "per_dataset" not in fmnist
    plain = dict(exp)
    plain.pop("per_dataset")
    assert config.config_hash(fmnist) == config.config_hash(train.run_config(plain, "fashionmnist", "resnet18", 0))
    with pytest.raises(ValueError, match="per_dataset"):
        train.run_config(dict(exp, per_dataset={"mnist": "all"}), "mnist", "resnet18", 0)


def test_the_whole_unbalanced_mnist_test_split_is_used_when_asked(real_data, tmp_path):
    cfg = tiny_config(dataset="mnist", test_per_class="all", epochs=1, n_snapshots=1)
    run = Run("t", "smoke", cfg, root=tmp_path)
    summary = train.train(run, cfg, progress=False)
    assert summary["test_samples"] == 10_000  # classes of 892 to 1,135 images, none dropped
