"""Tests for the segmentation training loop of ncutils.seg (chapter 4): protocol pieces, the fixed
ETF and frozen projection through training, resume equality, refused configs."""

import math
import shutil

import pytest
import torch

from ncutils import config, seg, store
from ncutils.train import load_checkpoint


def tiny_seg_config(**kw):
    """A seconds-long CamVid config built from the camvid_cr smoke preset (CR branch on)."""
    cfg = config.get_preset("camvid_cr", "smoke")
    cfg.pop("variants"), cfg.pop("seeds"), cfg.pop("lambda_sweep")
    cfg.update(seed=5, widths=(4,), feature_dim=12, cr_dim=12, crop=(32, 48), batch_size=2, epochs=2,
               n_train=4, n_eval=2, eval_every=1, cr_weight=0.5)
    cfg.update(kw)
    return cfg


def test_augment_batch_crops_and_flips_images_and_labels_together():
    n, h, w = 6, 9, 11
    pos = torch.arange(h * w).view(1, h, w).expand(n, h, w)  # every pixel holds its own position
    images = pos.unsqueeze(1).expand(n, 3, h, w).clone()
    labels = pos.clone()
    g = torch.Generator().manual_seed(0)
    xb, yb = seg.augment_batch(images, labels, (4, 5), True, g)
    assert xb.shape == (n, 3, 4, 5) and yb.shape == (n, 4, 5)
    assert torch.equal(xb[:, 0], yb) and torch.equal(xb[:, 2], yb)  # the same window for both
    flipped = 0
    for i in range(n):
        rows, cols = yb[i] // w, yb[i] % w
        assert torch.equal(rows, rows[:, :1].expand(4, 5))  # a contiguous window of rows ...
        assert (rows[1:, 0] - rows[:-1, 0]).eq(1).all()
        step = cols[0, 1] - cols[0, 0]  # ... and of columns, left to right or mirrored
        assert int(step) in (1, -1) and (cols[:, 1:] - cols[:, :-1]).eq(step).all()
        flipped += int(step) == -1
    assert 0 < flipped < n  # seed 0 flips some, not all
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(seg.augment_batch(images, labels, (4, 5), True, g1)[1],
                       seg.augment_batch(images, labels, (4, 5), True, g2)[1])  # seeded
    with pytest.raises(ValueError, match="crop must fit"):
        seg.augment_batch(images, labels, (10, 5), False, g)
    assert torch.equal(seg.augment_batch(images, labels, None, False, g)[1], labels)  # no crop, no flip


def test_models_with_and_without_the_cr_branch_start_identical():
    base = seg.build_seg_model(tiny_seg_config(cr_weight=0.0))
    cr = seg.build_seg_model(tiny_seg_config())
    assert base.cr_head is None and cr.cr_head is not None
    sb, sc = base.state_dict(), cr.state_dict()
    assert set(sb) < set(sc)
    assert all(torch.equal(sb[k], sc[k]) for k in sb)
    assert not any(p.requires_grad for p in cr.cr_head.parameters())  # cr_frozen in the preset


def test_training_never_updates_the_fixed_etf_or_the_frozen_projection(camvid_root, results_dir):
    cfg = tiny_seg_config()
    initial = seg.build_seg_model(cfg).state_dict()
    run = store.Run("camvid_cr", "smoke", cfg, label="etf-fixed")
    summary = seg.train_segmentation(run, cfg, device="cpu", progress=False)
    assert summary["complete"] and summary["trainable_parameters"] < summary["parameters"]
    final = load_checkpoint(run.path / "checkpoint.pt")["model"]
    for key in ("cr_etf.weight", "cr_head.weight", "cr_head.bias"):
        assert torch.equal(final[key], initial[key]), key
    assert not torch.equal(final["classifier.weight"], initial["classifier.weight"])  # it did train
    etf = final["cr_etf.weight"].double()
    k = etf.shape[0]
    gram = etf @ etf.T
    assert torch.allclose(gram, (k * torch.eye(k, dtype=torch.float64) - 1) / (k - 1), atol=1e-6)
    hist = run.table("history")
    assert list(hist.columns) == list(seg.SEG_HISTORY_COLUMNS) and len(hist) == 2
    assert hist["cr_loss"].notna().all() and hist["val_miou"].between(0, 1).all()
    iou = run.table("test_iou")
    assert len(iou) == 11 and iou["iou"].dropna().between(0, 1).all()
    collapse = run.table("collapse")
    assert set(zip(collapse["split"], collapse["branch"])) == {
        ("train", "features"), ("test", "features"), ("train", "cr"), ("test", "cr")}
    assert summary["test_rare_miou"] == pytest.approx(
        iou.set_index("class").loc[summary["rare_classes"], "iou"].mean())


def test_interrupted_training_resumes_to_the_same_result(camvid_root, results_dir):
    cfg = tiny_seg_config(epochs=3, eval_every=2)
    full = store.Run("camvid_cr", "smoke", cfg, label="full")
    seg.train_segmentation(full, cfg, device="cpu", progress=False)
    cut = store.Run("camvid_cr", "smoke", cfg, label="cut")
    part = seg.train_segmentation(cut, cfg, device="cpu", progress=False, stop_after=1)
    assert part == {"complete": False, "epochs_done": 1}
    seg.train_segmentation(cut, cfg, device="cpu", progress=False)
    a, b = load_checkpoint(full.path / "checkpoint.pt"), load_checkpoint(cut.path / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    cols = [c for c in seg.SEG_HISTORY_COLUMNS if c != "epoch_seconds"]
    assert full.table("history")[cols].equals(cut.table("history")[cols])
    assert full.table("test_iou").equals(cut.table("test_iou"))


def test_a_checkpoint_of_another_config_is_refused(camvid_root, results_dir):
    from ncutils.train import CheckpointError

    cfg = tiny_seg_config(epochs=2)
    run = store.Run("camvid_cr", "smoke", cfg, label="x")
    seg.train_segmentation(run, cfg, device="cpu", progress=False, stop_after=1)
    other = tiny_seg_config(epochs=2, lr=0.01)
    moved = store.Run("camvid_cr", "smoke", other, label="x")
    moved.path.mkdir(parents=True)
    shutil.copy(run.path / "checkpoint.pt", moved.path / "checkpoint.pt")  # a checkpoint moved by hand
    with pytest.raises(CheckpointError, match="belongs to config"):
        seg.train_segmentation(moved, other, device="cpu", progress=False)


@pytest.mark.parametrize("change, match", [
    ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"crop": (32,)}, "crop"),
    ({"cr_dim": None}, "cr_dim"), ({"weight_decay": -1e-4}, "weight_decay"), ({"n_train": 0}, "n_train"),
])
def test_bad_configs_are_refused_naming_the_key(change, match, results_dir):
    cfg = tiny_seg_config(**change)
    with pytest.raises(ValueError, match=match):
        seg.train_segmentation(store.Run("camvid_cr", "smoke", cfg, label="bad"), cfg, progress=False)
    cfg = tiny_seg_config()
    del cfg["cr_scale"]
    with pytest.raises(ValueError, match="missing"):
        seg.train_segmentation(store.Run("camvid_cr", "smoke", cfg, label="bad"), cfg, progress=False)


def test_poly_schedule_and_spread():
    cfg = tiny_seg_config(lr=0.1, lr_power=0.9)
    assert seg._poly_lr(cfg, 0, 10) == pytest.approx(0.1)
    assert seg._poly_lr(cfg, 5, 10) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert seg._spread(5, None).tolist() == [0, 1, 2, 3, 4]
    assert seg._spread(101, 3).tolist() == [0, 50, 100]
    assert math.isclose(seg._poly_lr(cfg, 10, 10), 0.0)


def test_lambda_sweep_runs_differ_from_the_main_runs_only_in_the_weight(camvid_root, results_dir, monkeypatch):
    main = seg.run_segmentation("smoke", only=["cr"], progress=False)
    sweep = seg.run_segmentation("smoke", sweep=True, progress=False)
    weights = config.get_preset("camvid_cr", "smoke")["lambda_sweep"]["cr_weights"]
    assert set(sweep) == {(f"cr-lam{w:g}", 0) for w in weights}
    ref = main["cr", 0].config
    for (name, _), run in sweep.items():
        assert run.complete and run.label == f"{name}-s0"
        diff = {k for k in ref if ref[k] != run.config[k]}
        assert diff == {"cr_weight"} and run.config["cr_weight"] == float(name.split("lam")[1])
    assert "lambda_sweep" not in ref and "variants" not in ref  # not part of a run's hashed config
    monkeypatch.delitem(config.PRESETS["camvid_cr"]["smoke"], "lambda_sweep")
    with pytest.raises(ValueError, match="no lambda_sweep"):
        seg.run_segmentation("smoke", sweep=True, progress=False)
