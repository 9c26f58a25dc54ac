"""The fast training path computes what the plain path computes (CPU; speed is measured in bench/).

* ``TensorBatches`` gives exactly the batches a DataLoader gives when fed the same permutation;
* class statistics streamed over float32 / bfloat16 batches equal the float64 in-memory metrics,
  and the training loop's snapshot path equals ``collapse_metrics`` on the same features;
* a short ``train.train`` run equals a DataLoader loop fed the same batches by hand, bitwise;
* ``compile`` is validated and changes nothing on a CPU.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ncutils import train
from ncutils.metrics import ClassStats, collapse_metrics, metrics_from_stats, ncc_mismatch_count
from ncutils.store import Run
from _helpers import tiny_config


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a shared machine, thread-pool synchronisation costs more than it gains.
    Both sides of every comparison below run under the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dataloader_for(tensors, order, batch_size):
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, sampler=order.tolist())


@pytest.mark.parametrize("batch_size", [7, 50, 128])
@pytest.mark.parametrize("shuffle", [True, False])
def test_tensor_batches_equal_a_dataloader_fed_the_same_permutation(batch_size, shuffle):
    x = torch.randn(50, 1, 3, 3)
    y = torch.arange(50) % 4
    batches = train.TensorBatches(x, y, batch_size=batch_size, seed=11, shuffle=shuffle)
    for epoch in (1, 2, 7):
        ours = list(batches.epoch(epoch))
        ref = list(dataloader_for((x, y), batches.order(epoch), batch_size))
        assert len(ours) == len(ref) == len(batches)
        for (xb, yb), (xr, yr) in zip(ours, ref):
            assert xb.dtype == xr.dtype and yb.dtype == yr.dtype
            assert torch.equal(xb, xr) and torch.equal(yb, yr)
    if not shuffle:
        plain = list(DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False))
        assert all(torch.equal(a[0], b[0]) for a, b in zip(batches.epoch(3), plain))


def test_epoch_order_ignores_the_global_rng_and_the_epochs_before_it():
    # What resuming needs: epoch e's order is a function of (seed, e) alone.
    x = torch.arange(37)
    fresh = torch.cat([b for b, in train.TensorBatches(x, batch_size=8, seed=2).epoch(5)])
    batches = train.TensorBatches(x, batch_size=8, seed=2)
    for epoch in range(1, 5):
        torch.manual_seed(100 + epoch)
        list(batches.epoch(epoch))
        torch.rand(3)
    resumed = torch.cat([b for b, in batches.epoch(5)])
    assert torch.equal(resumed, fresh)
    assert sorted(resumed.tolist()) == list(range(37))
    assert not torch.equal(fresh, torch.cat([b for b, in train.TensorBatches(x, batch_size=8, seed=3).epoch(5)]))


def _clustered(n, d, k, offset, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=gen)])
    y = y[torch.randperm(n, generator=gen)]
    h = offset + torch.randn(k, d, generator=gen)[y] + spread * torch.randn(n, d, generator=gen)
    w, b = torch.randn(k, d, generator=gen), torch.randn(k, generator=gen)
    return h, y, w, b


# float32 far from the origin with a small spread (cancellation-prone); bf16 as autocast gives it.
@pytest.mark.parametrize("dtype,offset,spread", [(torch.float32, 300.0, 0.05), (torch.bfloat16, 3.0, 0.5)])
def test_streaming_over_low_precision_batches_equals_float64_in_memory(dtype, offset, spread):
    # Features as the fast path produces them, accumulated in uneven batches (the last one short,
    # the first holding only some classes).
    h, y, w, b = _clustered(n=3000, d=24, k=6, offset=offset, spread=spread, seed=0)
    h = h.to(dtype)
    order = torch.cat([torch.nonzero(y < 2).flatten(), torch.nonzero(y >= 2).flatten()])
    h, y = h[order], y[order]
    stats = ClassStats(6)
    for i in range(0, 3000, 1024):
        stats.update(h[i:i + 1024], y[i:i + 1024])
    assert stats.scatter.dtype == stats.means.dtype == torch.float64
    wrong = sum(ncc_mismatch_count(h[i:i + 1024], stats.means, w, b) for i in range(0, 3000, 1024))
    stream = metrics_from_stats(stats, w, b, ncc_mismatch=wrong / 3000, extras=True)
    exact = collapse_metrics(h.to(torch.float64), y, w, b, extras=True)  # the same values, in float64
    for key, value in exact.items():
        assert stream[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    if dtype != torch.float32:
        return
    # The test has teeth: a float32 one-pass accumulator (sum h h^T - n mu mu^T) is far off here.
    h32 = h
    naive = torch.zeros(24, 24)
    for c in range(6):
        hc = h32[y == c]
        naive += hc.T @ hc - len(hc) * torch.outer(hc.mean(0), hc.mean(0))
    rel = float((naive.double() - stats.scatter).norm() / stats.scatter.norm())
    assert rel > 1e-3


def test_training_snapshot_path_equals_in_memory_metrics(real_data):
    cfg = tiny_config(epochs=2)
    model, x, y, _, _, k = train._prepare(cfg, torch.device("cpu"))
    err, loss, stats, feats = train._evaluate(model, x, y, k, torch.device("cpu"), False, keep_features=True)
    snap = train._nc_snapshot(model, stats, feats)
    with torch.no_grad():
        model.eval()
        parts = [model.logits_and_features(xb) for xb in x.split(1024)]  # the loop's batches
    logits, h = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    full = collapse_metrics(h, y, model.classifier.weight, model.classifier.bias, extras=True)
    for key, value in full.items():
        assert snap[key] == pytest.approx(value, rel=1e-10, abs=1e-14), key
    assert err == int((logits.argmax(1) != y).sum()) / len(y)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


def test_short_training_run_equals_a_dataloader_loop_fed_by_hand(real_data, tmp_path):
    cfg = tiny_config(epochs=2)
    run = Run("t", "smoke", cfg, root=tmp_path)
    train.train(run, cfg, progress=False)
    ours = train.load_checkpoint(run.path / "checkpoint.pt")["model"]

    model, x, y, _, _, _ = train._prepare(cfg, torch.device("cpu"))  # same seed: same init, same data
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    milestones = train.milestone_epochs(cfg)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg["lr_gamma"])
    for epoch in range(1, cfg["epochs"] + 1):
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch)  # the documented order
        model.train()
        for xb, yb in dataloader_for((x, y), torch.randperm(len(y), generator=gen), cfg["batch_size"]):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    mine = model.state_dict()
    assert ours.keys() == mine.keys()
    assert all(torch.equal(ours[key], mine[key]) for key in ours)
    model.eval()
    with torch.no_grad():
        err = int((model(x).argmax(1) != y).sum()) / len(y)
    assert run.table("history")["train_error"].iloc[-1] == pytest.approx(err, abs=1e-9)


def test_compile_flag_is_validated_and_changes_nothing_on_cpu(real_data, tmp_path):
    states = []
    for flag in (False, True):
        cfg = tiny_config(epochs=1, compile=flag)
        run = Run("t", "smoke", cfg, root=tmp_path)
        train.train(run, cfg, progress=False)
        states.append(train.load_checkpoint(run.path / "checkpoint.pt")["model"])
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    with pytest.raises(ValueError, match=r"config\['compile'\] must be True or False"):
        cfg = tiny_config(compile="yes")
        train.train(Run("t", "smoke", cfg, root=tmp_path), cfg, progress=False)
