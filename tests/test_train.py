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
