"""Tests for ncutils.data: IDX parsing, checksums, loading, subsets."""

import gzip
import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from ncutils import data as D

SHARED = pathlib.Path("/work/shared/data")
STEMS = {"train": "train", "test": "t10k"}


# ----------------------------------------------------------------------------- helpers

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.tobytes()


def write(path: pathlib.Path, payload: bytes, gz: bool) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def make_split(root, folder="MNIST", split="train", counts=(5, 7, 3), gz=True, seed=0):
    """Write a synthetic split; return (images, labels, {stem: md5})."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.uint8)
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    md5 = {}
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        stem = f"{STEMS[split]}-{kind}-ubyte"
        payload = idx_bytes(arr)
        write(pathlib.Path(root) / folder / "raw" / stem, payload, gz)
        md5[stem] = hashlib.md5(payload).hexdigest()
    return images, labels, md5


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """Synthetic MNIST train/test under tmp_path, with the checksum table patched to match."""
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")
    tr = make_split(tmp_path, split="train", counts=(5, 7, 3))
    te = make_split(tmp_path, split="test", counts=(2, 2, 2), seed=1)
    info = D.DATASETS["mnist"]
    monkeypatch.setitem(D.DATASETS, "mnist", info._replace(md5={**info.md5, **tr[2], **te[2]}))
    return tmp_path, tr, te


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write(tmp_path / "x-idx3-ubyte", idx_bytes(arr), gz)
    np.testing.assert_array_equal(D.read_idx(p, kind="images"), arr)
    lab = np.array([3, 1, 4], dtype=np.uint8)
    p = write(tmp_path / "y-idx1-ubyte", idx_bytes(lab), gz)
    np.testing.assert_array_equal(D.read_idx(p, expected_md5=hashlib.md5(idx_bytes(lab)).hexdigest()), lab)


def test_read_idx_refuses_bad_files(tmp_path):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(write(tmp_path / "a", good[:-10], gz=False))
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(write(tmp_path / "b", good + b"\0", gz=False))
    with pytest.raises(ValueError, match="gzip"):
        D.read_idx(write(tmp_path / "c.gz", gzip.compress(good)[:-20], gz=False))
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(write(tmp_path / "d", b"\x89PNG" + good[4:], gz=False))
    with pytest.raises(ValueError, match="expected 2049"):  # an images file where labels belong
        D.read_idx(write(tmp_path / "e", good, gz=False), kind="labels")
    with pytest.raises(ValueError, match="too short"):
        D.read_idx(write(tmp_path / "f", b"\0\0", gz=False))
    with pytest.raises(FileNotFoundError):
        D.read_idx(tmp_path / "missing")


# ----------------------------------------------------------------------------- loading

def test_load_synthetic(synth):
    root, (img, lab, _), (timg, tlab, _) = synth
    x, y = D.load_dataset("MNIST", "train", root=root)
    assert x.dtype == torch.uint8 and x.shape == (15, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == lab.tolist()
    assert torch.equal(x, torch.from_numpy(img))
    xt, yt = D.load_dataset("mnist", split="test", root=root)
    assert xt.shape == (6, 28, 28) and yt.tolist() == tlab.tolist()
    # returned tensors are copies: modifying them does not poison the cache
    x.zero_()
    assert torch.equal(D.load_dataset("mnist", root=root)[0], torch.from_numpy(img))


def test_gz_and_uncompressed_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")
    *_, md5 = make_split(tmp_path / "a", gz=True)
    make_split(tmp_path / "b", gz=False)
    info = D.DATASETS["mnist"]
    monkeypatch.setitem(D.DATASETS, "mnist", info._replace(md5={**info.md5, **md5}))
    xa, ya = D.load_dataset("mnist", root=tmp_path / "a")
    xb, yb = D.load_dataset("mnist", root=tmp_path / "b")
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_env_var_root(synth, monkeypatch):
    root, (img, _, _), _ = synth
    monkeypatch.setenv("NCUTILS_DATA", str(root))
    assert D.data_root() == root
    assert torch.equal(D.load_dataset("mnist")[0], torch.from_numpy(img))


def test_checksum_mismatch_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")
    make_split(tmp_path)  # right names, wrong content for the official checksums
    with pytest.raises(D.ChecksumError) as err:
        D.load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "6bbc9ace898e44ae57da46a324031adb" in msg
    assert hashlib.md5(gzip.decompress((tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz").read_bytes())).hexdigest() in msg
    assert isinstance(err.value, ValueError)
    x, _ = D.load_dataset("mnist", root=tmp_path, verify=False)
    assert x.shape == (15, 28, 28)


def test_truncated_dataset_file_refused(synth):
    root = synth[0]
    p = root / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-28]))
    with pytest.raises(D.ChecksumError):
        D.load_dataset("mnist", "test", root=root)
    with pytest.raises(ValueError, match="truncated"):
        D.load_dataset("mnist", "test", root=root, verify=False)


def test_unknown_dataset_and_split(synth):
    root = synth[0]
    with pytest.raises(ValueError, match="dataset.*known.*mnist"):
        D.load_dataset("cifar10", root=root)
    with pytest.raises(ValueError, match="split"):
        D.load_dataset("mnist", "val", root=root)
    with pytest.raises(TypeError, match="dataset"):
        D.canonical_name(3)
    for alias in ["MNIST", "mnist"]:
        assert D.canonical_name(alias) == "mnist"
    for alias in ["FashionMNIST", "fashion_mnist", "fmnist", "Fashion-MNIST"]:
        assert D.canonical_name(alias) == "fashionmnist"


def test_missing_files_message(tmp_path, monkeypatch):
    def offline(*args):
        raise OSError("network unreachable")

    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset("fmnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and "NCUTILS_DATA" in msg
    assert "network unreachable" in msg
    monkeypatch.undo()
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")
    with pytest.raises(FileNotFoundError, match="NCUTILS_NO_DOWNLOAD"):
        D.load_dataset("mnist", "test", root=tmp_path)


def test_project_root(tmp_path, monkeypatch):
    (tmp_path / "proj" / "ncutils").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("")
    sub = tmp_path / "proj" / "chapters" / "x"
    sub.mkdir(parents=True)
    assert D.project_root(sub) == (tmp_path / "proj").resolve()
    monkeypatch.chdir(sub)
    monkeypatch.delenv("NCUTILS_DATA", raising=False)
    assert D.data_root() == (tmp_path / "proj" / "data" / "raw").resolve()
    (tmp_path / "proj" / "chapters" / "_toc.yml").write_text("")
    assert D.project_root(sub) == (tmp_path / "proj" / "chapters").resolve()
    lone = tmp_path / "lone"
    lone.mkdir()
    assert D.project_root(lone) == lone.resolve()


def test_imports_without_torchvision():
    code = ("import sys; sys.modules['torchvision'] = None; import ncutils.data, ncutils.models; "
            "ncutils.models.build_model('mlp')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])


# ----------------------------------------------------------------------------- normalization

def test_to_float():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8).expand(2, 28, 2).contiguous()
    f = D.to_float(x, "MNIST")
    assert f.dtype == torch.float32 and f.shape == (2, 1, 28, 2)
    assert torch.allclose(f[0, 0, 0], torch.tensor([-0.1307 / 0.3081, (1 - 0.1307) / 0.3081]))
    assert torch.allclose(D.to_float(x.unsqueeze(1), "fmnist")[0, 0, 0, 0], torch.tensor(-0.2860 / 0.3530))
    with pytest.raises(TypeError, match="uint8"):
        D.to_float(x.float(), "mnist")
    with pytest.raises(ValueError, match="shape"):
        D.to_float(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "mnist")


# ----------------------------------------------------------------------------- subsets

LABELS = torch.tensor([0] * 10 + [1] * 6 + [2] * 8)[torch.randperm(24, generator=torch.Generator().manual_seed(0))]


def test_balanced_subset():
    idx = D.balanced_subset(LABELS, 4, seed=0)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values)
    assert torch.bincount(LABELS[idx]).tolist() == [4, 4, 4]
    assert len(idx.unique()) == 12
    assert torch.equal(idx, D.balanced_subset(LABELS, 4, seed=0))
    assert any(not torch.equal(idx, D.balanced_subset(LABELS, 4, seed=s)) for s in range(1, 4))
    assert torch.bincount(LABELS[D.balanced_subset(LABELS, seed=1)]).tolist() == [6, 6, 6]


def test_balanced_subset_refuses_bad_input():
    with pytest.raises(ValueError, match=r"n_per_class=7.*6 samples of class 1"):
        D.balanced_subset(LABELS, 7)
    with pytest.raises(ValueError, match="n_per_class"):
        D.balanced_subset(LABELS, 0)
    with pytest.raises(TypeError, match="n_per_class"):
        D.balanced_subset(LABELS, 2.5)
    with pytest.raises(TypeError, match="labels"):
        D.balanced_subset(LABELS.float(), 2)
    with pytest.raises(TypeError, match="seed"):
        D.balanced_subset(LABELS, 2, seed="a")


def test_imbalanced_subset():
    idx = D.imbalanced_subset(LABELS, [10, 1, 3], seed=0)
    assert torch.bincount(LABELS[idx], minlength=3).tolist() == [10, 1, 3]
    assert torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, D.imbalanced_subset(LABELS, (10, 1, 3), seed=0))
    assert torch.bincount(LABELS[D.imbalanced_subset(LABELS, [0, 2, 0])], minlength=3).tolist() == [0, 2, 0]
    with pytest.raises(ValueError, match=r"counts\[k\]=7.*class 1"):
        D.imbalanced_subset(LABELS, [1, 7, 1])
    with pytest.raises(ValueError, match="3 entries|2 entries"):
        D.imbalanced_subset(LABELS, [1, 1])
    with pytest.raises(ValueError, match=r"counts\[2\]"):
        D.imbalanced_subset(LABELS, [1, 1, -1])
    with pytest.raises(TypeError, match="counts"):
        D.imbalanced_subset(LABELS, 5)


def test_count_helpers():
    assert D.step_imbalance(10, 5000, 10, 5) == [5000] * 5 + [500] * 5
    assert D.step_imbalance(4, 100, 1, 0) == [100] * 4
    # CIFAR-10-LT counts of Cao et al. (LDAM) for ratio 100
    assert D.longtail_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert D.longtail_counts(3, 100, 1) == [100, 100, 100]
    with pytest.raises(ValueError, match="ratio"):
        D.step_imbalance(10, 100, 0.5, 5)
    with pytest.raises(ValueError, match="n_minor_classes"):
        D.step_imbalance(10, 100, 2, 11)
    with pytest.raises(ValueError, match="minority"):
        D.step_imbalance(10, 5, 10, 2)
    with pytest.raises(ValueError, match="num_classes"):
        D.longtail_counts(1, 100, 10)
    with pytest.raises(ValueError, match="ratio"):
        D.longtail_counts(10, 100, float("inf"))
    with pytest.raises(TypeError, match="n_max"):
        D.longtail_counts(10, 100.0, 10)


def test_get_data_synthetic(synth):
    root = synth[0]
    x, y = D.get_data("mnist", "train", root=root)
    assert x.shape == (9, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [3, 3, 3]
    x2, y2 = D.get_data("mnist", "train", n_per_class=2, seed=3, root=root)
    assert torch.bincount(y2).tolist() == [2, 2, 2]
    x3, y3 = D.get_data("mnist", "train", counts=[5, 1, 0], root=root)
    assert torch.bincount(y3, minlength=3).tolist() == [5, 1, 0]
    with pytest.raises(ValueError, match="n_per_class or counts"):
        D.get_data("mnist", n_per_class=2, counts=[1, 1, 1], root=root)
    # "all": the whole split with its own class counts (5, 7, 3), in file order, nothing dropped
    images, labels = D.load_dataset("mnist", "train", root=root)
    x4, y4 = D.get_data("mnist", "train", n_per_class="all", root=root)
    assert torch.bincount(y4).tolist() == [5, 7, 3] and torch.equal(y4, labels)
    assert torch.equal(x4, D.to_float(images, "mnist"))
    with pytest.raises(ValueError, match="n_per_class must be .*'all'"):
        D.get_data("mnist", "train", n_per_class="every", root=root)


# ----------------------------------------------------------------------------- real data

@pytest.fixture
def shared(monkeypatch):
    if not (SHARED / "MNIST" / "raw").is_dir():
        pytest.skip(f"{SHARED} not available")
    monkeypatch.setenv("NCUTILS_DATA", str(SHARED))
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")


def test_real_mnist(shared):
    x, y = D.load_dataset("mnist")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xt, yt = D.load_dataset("MNIST", "test")
    assert xt.shape == (10000, 28, 28)
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    xf, yf = D.get_data("mnist", "train")  # balanced by subsampling to the smallest class
    assert xf.shape == (54210, 1, 28, 28) and torch.bincount(yf).tolist() == [5421] * 10
    assert abs(float(D.to_float(x, "mnist").mean())) < 1e-3


def test_real_fashionmnist(shared):
    x, y = D.load_dataset("FashionMNIST", "train")
    assert x.shape == (60000, 28, 28) and torch.bincount(y).tolist() == [6000] * 10
    xt, yt = D.load_dataset("fashion_mnist", "test")
    assert xt.shape == (10000, 28, 28) and torch.bincount(yt).tolist() == [1000] * 10
    f = D.to_float(x, "fmnist")
    assert abs(float(f.mean())) < 1e-3 and abs(float(f.std()) - 1) < 1e-3
