"""ncutils.memory: saved-tensor counting, one-step memory accounting, hand-counted parameters."""
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from ncutils import memory
from ncutils.memory import SavedTensorCounter, build_variant, measure_training_step, relative_savings

F32 = 4


def _sgd(momentum=0.9):
    return lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum)


# ----------------------------------------------------------------------------- saved tensors

def test_single_linear_saves_only_its_input():
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 5)  # no grad: the weight need not be saved, the input must (for dW)
    with SavedTensorCounter(exclude=lin.parameters()) as c:
        out = lin(x).sum()
    out.backward()
    assert c.n_storages == 1 and c.nbytes == 4 * 5 * F32
    assert c.storages == {(str(x.device), x.untyped_storage().data_ptr()): 4 * 5 * F32}


def test_tiny_net_hand_count_and_inplace_relu_deduplicated():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))
    x = torch.randn(4, 5)
    with SavedTensorCounter(exclude=net.parameters()) as c:
        loss = net(x).pow(2).sum()
    loss.backward()
    # saved: x (linear 1), relu output (relu), the same storage again (linear 2's input),
    # linear 2's weight (excluded: a parameter), the output (pow).
    assert c.n_saved == 5
    assert c.n_storages == 3
    assert c.nbytes == (4 * 5 + 4 * 6 + 4 * 3) * F32
    with SavedTensorCounter() as all_storages:  # nothing excluded: the weight counts too
        net(x).pow(2).sum().backward()
    assert all_storages.nbytes == c.nbytes + 6 * 3 * F32


def test_views_and_repeated_saves_count_their_storage_once():
    base = torch.randn(10, 8, requires_grad=True)
    with SavedTensorCounter() as c:
        a = base * 2.0           # saves nothing of a (multiplication by a number)
        y = a[:5].sin() + a[5:].cos() + a[:5].exp()  # sin, cos save views of a; exp saves its output
    y.sum().backward()
    assert c.n_saved == 3
    assert c.n_storages == 2 and c.nbytes == 10 * 8 * F32 + 5 * 8 * F32


def test_counter_refuses_non_tensor_excludes():
    with pytest.raises(TypeError, match="exclude"):
        SavedTensorCounter(exclude=[1, 2])


# ----------------------------------------------------------------------------- one training step

def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))


def test_training_step_accounting_by_hand():
    net, b = _tiny_net(), 4
    x, y = torch.randn(b, 5), torch.tensor([0, 1, 2, 0])
    out = measure_training_step(net, (x, y), _sgd(0.9), loss_fn=lambda z, t: z.pow(2).mean())
    n = 5 * 6 + 6 + 6 * 3 + 3
    assert out["trainable_params"] == n
    assert out["param_bytes"] == out["grad_bytes"] == out["optimizer_bytes"] == n * F32
    assert out["fixed_bytes"] == 0
    assert out["saved_bytes"] == (b * 5 + b * 6 + b * 3) * F32
    assert out["total_bytes"] == 3 * n * F32 + out["saved_bytes"]
    assert math.isnan(out["cuda_peak_bytes"])
    # plain SGD keeps no state
    plain = measure_training_step(_tiny_net(), (x, y), _sgd(0.0), loss_fn=lambda z, t: z.pow(2).mean())
    assert plain["optimizer_bytes"] == 0


def test_fixed_etf_weight_is_stored_but_not_trained():
    learned = build_variant("resnet18", "learned", feature_dim=10, width=2)
    fixed = build_variant("resnet18", "etf", feature_dim=10, width=2)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    a = measure_training_step(learned, (x, y), _sgd(), warmup_steps=0)
    b = measure_training_step(fixed, (x, y), _sgd(), warmup_steps=0)
    assert a["trainable_params"] - b["trainable_params"] == 10 * 10 + 10  # weight + bias
    assert b["fixed_bytes"] - a["fixed_bytes"] == 10 * 10 * F32
    for key in ("grad_bytes", "optimizer_bytes"):
        assert a[key] - b[key] == (10 * 10 + 10) * F32


# ----------------------------------------------------------------------------- parameter counts

def _block(cin, cout, stride, mid=None):
    mid = cout if mid is None else mid
    n = 9 * cin * mid + 2 * mid + 9 * mid * cout + 2 * cout
    if stride != 1 or cin != cout:
        n += cin * cout + 2 * cout
    return n


def _resnet18_by_hand(c, w, k, d=None, classifier="learned", block="authors", stem="cifar", etf_bias=False):
    d = 8 * w if d is None else d
    n, cin = (9 if stem == "cifar" else 49) * c * w + 2 * w, w
    for stage, (ws, stride) in enumerate(zip([w, 2 * w, 4 * w, 8 * w], [1, 2, 2, 2])):
        last = d if stage == 3 else ws
        n += _block(cin, ws, stride) + _block(ws, last, 1, mid=ws if block == "authors" else None)
        cin = last
    return n + (d * k + k if classifier == "learned" else (k if etf_bias else 0))


@pytest.mark.parametrize("c,w,d,clf,block,stem", [
    (3, 64, None, "learned", "authors", "cifar"), (1, 64, None, "learned", "authors", "imagenet"),
    (1, 64, 10, "learned", "authors", "cifar"), (1, 64, 10, "etf", "authors", "imagenet"),
    (3, 64, 10, "etf", "both", "cifar"), (3, 64, 10, "learned", "both", "imagenet"),
    (1, 8, None, "etf", "authors", "cifar"), (1, 8, 10, "learned", "authors", "imagenet")])
def test_resnet18_parameter_counts_match_hand_counts(c, w, d, clf, block, stem):
    model = build_variant("resnet18", clf, feature_dim=d, width=w, in_channels=c, input_size=28,
                          fixdim_block=block, stem=stem, etf_bias=clf == "etf")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == _resnet18_by_hand(c, w, 10, d, clf, block, stem, etf_bias=clf == "etf")


def test_resnet18_cifar_count_is_the_well_known_one():
    # the CIFAR ResNet18 (3x3 stem, width 64, 10 classes) has 11,173,962 parameters
    assert _resnet18_by_hand(3, 64, 10) == 11_173_962
    # the authors' d = K: conv2 of the last block 3x3 512 -> 10 (+ BN), a 1x1 512 -> 10 shortcut (+ BN),
    # a K x K classifier: 20.7% fewer parameters ("over 20%")
    assert _resnet18_by_hand(3, 64, 10, d=10) == 11_173_962 - (9 * 512 * 512 + 1024) + (9 * 512 * 10 + 20) \
        + (512 * 10 + 20) - 5_130 + 110 == 8_859_862
    # both 3x3 convolutions shrunk (the book's earlier construction)
    assert _resnet18_by_hand(3, 64, 10, d=10, block="both") == 6_500_462


# ----------------------------------------------------------------------------- tables

def test_memory_table_and_relative_savings():
    variants = [{"classifier": "learned", "feature_dim": None}, {"classifier": "etf", "feature_dim": 10}]
    table = memory.memory_table(variants, width=2, inputs=((1, 28),), batch_sizes=(4,), warmup_steps=0)
    assert list(table["variant"]) == ["learned, d=16", "etf, d=10"] and list(table["batch"]) == [4, 4]
    assert set(memory.MEMORY_COLUMNS) <= set(table.columns)
    rel = relative_savings(table)
    assert rel.loc[0, "total_bytes"] == 0.0
    expect = 1 - table.loc[1, "trainable_params"] / table.loc[0, "trainable_params"]
    assert rel.loc[1, "trainable_params"] == pytest.approx(expect)
    assert rel.loc[1, "param_bytes"] == pytest.approx(expect) and expect > 0  # all float32


def test_saved_activations_are_affine_in_the_batch_size():
    variants = [{"classifier": "learned", "feature_dim": None}, {"classifier": "etf", "feature_dim": 10}]
    table = memory.memory_table(variants, width=2, inputs=((1, 28),), batch_sizes=(2, 4, 6), warmup_steps=0)
    for _, part in table.groupby("variant"):
        saved = part.sort_values("batch")["saved_bytes"].tolist()
        assert saved[2] - saved[1] == saved[1] - saved[0] > 0
        assert part["param_bytes"].nunique() == 1  # parameters do not depend on the batch


def test_relative_savings_closed_form_and_baseline():
    t = pd.DataFrame({"input": ["a", "a", "b", "b"], "variant": ["x", "y", "x", "y"],
                      "total_bytes": [100, 75, 10, 20]})
    rel = relative_savings(t, columns=("total_bytes",))
    assert list(rel["total_bytes"]) == [0.0, 0.25, 0.0, -1.0]
    rel = relative_savings(t, baseline="y", columns=("total_bytes",))
    assert rel["total_bytes"].tolist() == pytest.approx([1 - 100 / 75, 0.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="baseline"):
        relative_savings(t, baseline="z", columns=("total_bytes",))
    with pytest.raises(ValueError, match="columns"):
        relative_savings(t, columns=("saved_bytes",))


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("batch,match", [
    ((torch.randn(4, 5),), "pair"),
    ((torch.randn(4, 5), torch.zeros(3, dtype=torch.long)), "shape"),
    ((torch.randn(4, 5), torch.zeros(4)), "int64"),
    ((torch.randn(0, 5), torch.zeros(0, dtype=torch.long)), "B >= 1"),
])
def test_bad_batches_are_refused(batch, match):
    with pytest.raises((TypeError, ValueError), match=match):
        measure_training_step(_tiny_net(), batch, _sgd())


def test_bad_arguments_are_refused():
    x, y = torch.randn(4, 5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match="model"):
        measure_training_step(lambda t: t, (x, y), _sgd())
    with pytest.raises(TypeError, match="optimizer_factory"):
        measure_training_step(_tiny_net(), (x, y), "sgd")
    with pytest.raises(TypeError, match="optimizer_factory"):
        measure_training_step(_tiny_net(), (x, y), lambda ps: None)
    with pytest.raises(ValueError, match="warmup_steps"):
        measure_training_step(_tiny_net(), (x, y), _sgd(), warmup_steps=-1)
    frozen = _tiny_net().requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        measure_training_step(frozen, (x, y), _sgd())
    with pytest.raises(ValueError, match="classifier"):
        build_variant(classifier="fixed")
    with pytest.raises(ValueError, match="variants"):
        memory.memory_table({"classifier": "etf", "feature_dim": 10})
    with pytest.raises(ValueError, match="variant"):
        memory.memory_table([{"classifier": "etf", "d": 10}])
    for bad in (0, [0], [], 128, [2.0]):
        with pytest.raises(ValueError, match="batch_sizes"):
            memory.memory_table([{"classifier": "etf", "feature_dim": 10}], batch_sizes=bad)
    with pytest.raises(ValueError, match="inputs"):
        memory.memory_table([{"classifier": "etf", "feature_dim": 10}], inputs=(28,))
    with pytest.raises(ValueError, match="device"):
        memory.memory_config("smoke", device="tpu")


# ----------------------------------------------------------------------------- the script

def test_script_stores_the_table_with_provenance(results_dir, capsys):
    assert memory.main(["--preset", "smoke", "--device", "cpu"]) == 0
    (run_dir,) = (results_dir / "fixed_etf").glob("smoke-memory_cpu-*")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["device"] == "cpu" and info["device"].startswith("CPU")
    assert info["commit"] and info["torch"] == torch.__version__
    table = pd.read_csv(run_dir / "memory.csv")
    assert len(table) == 2 * 2 * 5 and table["cuda_peak_bytes"].isna().all()  # stems x batches x variants
    assert set(table["stem"]) == {"cifar", "imagenet"} and (table["variant"] == "etf, d=10, both convs").sum() == 4
    assert (table["total_bytes"] > 0).all()
    assert "relative saving" in capsys.readouterr().out


def test_memory_table_both_stems_and_the_both_convs_row():
    variants = [{"classifier": "learned", "feature_dim": None},
                {"classifier": "etf", "feature_dim": 10, "etf_bias": True},
                {"classifier": "etf", "feature_dim": 10, "etf_bias": True, "fixdim_block": "both"}]
    table = memory.memory_table(variants, width=4, inputs=((3, 32),), batch_sizes=(2,), warmup_steps=0,
                                stems=("cifar", "imagenet"))
    assert list(table["stem"]) == ["cifar"] * 3 + ["imagenet"] * 3
    assert list(table["variant"][:3]) == ["learned, d=32", "etf, d=10", "etf, d=10, both convs"]
    for stem, part in table.groupby("stem"):
        want = [_resnet18_by_hand(3, 4, 10, None, "learned", stem=stem),
                _resnet18_by_hand(3, 4, 10, 10, "etf", stem=stem, etf_bias=True),
                _resnet18_by_hand(3, 4, 10, 10, "etf", block="both", stem=stem, etf_bias=True)]
        assert list(part["trainable_params"]) == want
    by = table.set_index(["stem", "variant"])["saved_bytes"]
    # 7x7 stride 2 + max-pool: the stages run at 1/16 of the pixels, so far fewer saved activations
    assert by["imagenet", "learned, d=32"] < by["cifar", "learned, d=32"] / 4
    rel = relative_savings(table)
    assert (rel.groupby("stem")["total_bytes"].first() == 0.0).all()  # baseline per stem
    with pytest.raises(ValueError, match="stems"):
        memory.memory_table(variants, stems="cifar")
    with pytest.raises(ValueError, match="stems"):
        memory.memory_table(variants, stems=("resnet",))
    with pytest.raises(ValueError, match="batch_sizes"):
        memory.memory_table(variants, batch_sizes=(1, 8), stems=("cifar", "imagenet"))


def test_cpu_byte_counts_do_not_depend_on_warmup():
    """Why the CPU measurement skips the warmup step: every byte column is the same without it."""
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4) % 10
    cols = ("trainable_params", "param_bytes", "fixed_bytes", "grad_bytes", "optimizer_bytes", "saved_bytes",
            "total_bytes")
    got = []
    for warmup in (0, 1):
        model = build_variant("resnet18", "etf", feature_dim=10, width=2, stem="imagenet", etf_bias=True)
        out = measure_training_step(model, (x, y), _sgd(), warmup_steps=warmup)
        got.append(tuple(out[c] for c in cols))
    assert got[0] == got[1] and got[0][4] == got[0][1]  # momentum bytes = parameter bytes already
    assert memory.memory_config("cpu", "cpu")["warmup_steps"] == 0
    assert memory.memory_config("cpu", "cuda")["warmup_steps"] == 1
