"""Datasets as tensors: MNIST and Fashion-MNIST from local IDX files, plus class subsets.

Files are looked up under :func:`data_root` (``$NCUTILS_DATA`` or ``<project>/data/raw``) at
``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``, gzipped or not. The md5 of the
uncompressed bytes is checked against the official checksums. Only when files are missing is
torchvision's downloader tried (set ``NCUTILS_NO_DOWNLOAD=1`` to forbid that).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import pathlib
import zlib
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "ChecksumError", "DATASETS", "project_root", "data_root", "canonical_name", "read_idx",
    "load_dataset", "to_float", "balanced_subset", "imbalanced_subset", "step_imbalance",
    "longtail_counts", "get_data",
]


class ChecksumError(ValueError):
    """The md5 of a dataset file differs from the official one."""


class DatasetInfo(NamedTuple):
    folder: str  # sub-folder of the data root, also torchvision's class name
    md5: dict  # file stem -> md5 of the uncompressed file
    mean: float
    std: float
    num_classes: int = 10


DATASETS = {
    "mnist": DatasetInfo("MNIST", {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }, 0.1307, 0.3081),
    "fashionmnist": DatasetInfo("FashionMNIST", {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    }, 0.2860, 0.3530),
}
_ALIASES = {"fmnist": "fashionmnist"}
_SPLITS = {"train": "train", "test": "t10k"}
_IDX_MAGIC = {"images": 2051, "labels": 2049}


# ----------------------------------------------------------------------------- locations

def project_root(start=None) -> pathlib.Path:
    """First parent of ``start`` (default cwd, inclusive) holding ``_toc.yml`` or
    ``pyproject.toml`` next to an ``ncutils/`` folder; else ``start`` itself."""
    start = pathlib.Path(start or os.getcwd()).resolve()
    for d in (start, *start.parents):
        if (d / "_toc.yml").is_file() or ((d / "pyproject.toml").is_file() and (d / "ncutils").is_dir()):
            return d
    return start


def data_root() -> pathlib.Path:
    """``$NCUTILS_DATA`` if set, else ``<project root>/data/raw``."""
    env = os.environ.get("NCUTILS_DATA")
    return pathlib.Path(env).expanduser() if env else project_root() / "data" / "raw"


def canonical_name(dataset: str) -> str:
    """Normalize a dataset name ("MNIST", "FashionMNIST", "fashion_mnist", "fmnist", ...)."""
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a str, got {type(dataset).__name__}")
    key = dataset.lower().replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)} "
                         "(aliases: MNIST, FashionMNIST, fashion_mnist, fmnist)")
    return key


# ----------------------------------------------------------------------------- IDX parsing

def read_idx(path, expected_md5: Optional[str] = None, kind: Optional[str] = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or not) of unsigned bytes into a numpy array.

    ``expected_md5`` is compared with the md5 of the uncompressed bytes (``ChecksumError``);
    ``kind`` ("images" or "labels") also checks the magic number (2051 / 2049).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e
    if expected_md5 is not None:
        actual = hashlib.md5(raw).hexdigest()
        if actual != expected_md5:
            raise ChecksumError(f"{path}: md5 of the uncompressed bytes is {actual}, "
                                f"expected {expected_md5} (corrupt or wrong file)")
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if kind is not None and magic != _IDX_MAGIC[kind]:
        raise ValueError(f"{path}: bad magic number {magic}, expected {_IDX_MAGIC[kind]} for IDX {kind}")
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise ValueError(f"{path}: bad magic number {magic}; expected an IDX file of unsigned bytes")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) != header + math.prod(dims):
        raise ValueError(f"{path}: size {len(raw)} bytes does not match the header dims {dims} "
                         f"(expected {header + math.prod(dims)}); the file is truncated or garbled")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int, md5: Optional[str], kind: str) -> torch.Tensor:
    # mtime_ns and size are only part of the cache key, so an edited file is read again.
    arr = read_idx(path, md5, kind)
    return torch.from_numpy(arr.copy()).to(torch.int64 if kind == "labels" else torch.uint8)


def _find(raw_dir: pathlib.Path, stem: str) -> Optional[pathlib.Path]:
    for p in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def _download(info: DatasetInfo, root: pathlib.Path, train: bool) -> None:
    if os.environ.get("NCUTILS_NO_DOWNLOAD", "").strip() not in ("", "0"):
        raise RuntimeError("downloads disabled by NCUTILS_NO_DOWNLOAD")
    import torchvision  # lazy: only needed to download

    getattr(torchvision.datasets, info.folder)(str(root), train=train, download=True)


def _locate(info: DatasetInfo, root: pathlib.Path, stems: Sequence[str], train: bool):
    raw_dir = root / info.folder / "raw"
    paths = [_find(raw_dir, s) for s in stems]
    if all(paths):
        return paths
    try:
        _download(info, root, train)
        reason = "download finished but the files are still missing"
    except Exception as e:  # offline, no torchvision, read-only root, ...
        reason = f"{type(e).__name__}: {e}"
    paths = [_find(raw_dir, s) for s in stems]
    if all(paths):
        return paths
    missing = [s for s, p in zip(stems, paths) if p is None]
    raise FileNotFoundError(
        f"{info.folder} files {missing} (optionally .gz) not found in {raw_dir}, and the "
        f"torchvision download failed ({reason}). Set NCUTILS_DATA to a folder holding "
        f"{info.folder}/raw/*.gz, or pass root=.")


def load_dataset(name: str, split: str = "train", root=None, verify: bool = True
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images uint8 N x 28 x 28, labels int64 N)`` of a dataset split.

    Parsed files are cached in-process (keyed on path, mtime and size); each call returns
    fresh copies, so callers may modify them.
    """
    info = DATASETS[canonical_name(name)]
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    root = pathlib.Path(root).expanduser() if root is not None else data_root()
    stems = [f"{_SPLITS[split]}-images-idx3-ubyte", f"{_SPLITS[split]}-labels-idx1-ubyte"]
    out = []
    for stem, path, kind in zip(stems, _locate(info, root, stems, split == "train"), ("images", "labels")):
        st = path.resolve().stat()
        out.append(_read_cached(str(path.resolve()), st.st_mtime_ns, st.st_size,
                                info.md5[stem] if verify else None, kind).clone())
    images, labels = out
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{info.folder} {split}: inconsistent files, images {tuple(images.shape)} "
                         f"vs labels {tuple(labels.shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < info.num_classes:
        raise ValueError(f"{info.folder} {split}: labels outside [0, {info.num_classes})")
    return images, labels


def to_float(images: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 images (N x 28 x 28 or N x 1 x 28 x 28) -> float32 N x 1 x H x W, normalized with
    the train-set mean/std of ``dataset``."""
    info = DATASETS[canonical_name(dataset)]
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a uint8 tensor, got {got}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape N x H x W or N x 1 x H x W, got {tuple(images.shape)}")
    return (images.to(torch.float32) / 255.0 - info.mean) / info.std


# ----------------------------------------------------------------------------- subsets

def _check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_labels(labels) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() \
            or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError("labels must be a 1-D integer tensor")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got min {int(labels.min())}")
    return labels.cpu()


def _subset(labels: torch.Tensor, counts: Sequence[int], seed: int, what: str) -> torch.Tensor:
    """Sorted indices with ``counts[c]`` random samples of each class c (seeded)."""
    seed = _check_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    have = torch.bincount(labels, minlength=len(counts))
    chosen = []
    for c, n in enumerate(counts):
        if n > have[c]:
            raise ValueError(f"{what}={n} exceeds the {int(have[c])} samples of class {c}")
        idx = torch.nonzero(labels == c, as_tuple=True)[0]
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.zeros(0, dtype=torch.long)


def balanced_subset(labels: torch.Tensor, n_per_class: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of exactly ``n_per_class`` samples of every class present in ``labels``
    (None: the smallest class count, i.e. balance by subsampling)."""
    labels = _check_labels(labels)
    if len(labels) == 0:
        raise ValueError("labels is empty")
    have = torch.bincount(labels)
    if n_per_class is None:
        n_per_class = int(have[have > 0].min())
    n_per_class = _check_int("n_per_class", n_per_class, 1)
    counts = [n_per_class if h > 0 else 0 for h in have.tolist()]
    return _subset(labels, counts, seed, "n_per_class")


def imbalanced_subset(labels: torch.Tensor, counts: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Sorted indices with ``counts[k]`` random samples of class k (``len(counts)`` = K)."""
    labels = _check_labels(labels)
    if isinstance(counts, (str, bytes)) or not hasattr(counts, "__len__") or len(counts) == 0:
        raise TypeError("counts must be a non-empty sequence of ints, one per class")
    counts = [_check_int(f"counts[{k}]", n) for k, n in enumerate(counts)]
    if len(labels) and int(labels.max()) >= len(counts):
        raise ValueError(f"counts has {len(counts)} entries but labels contain class {int(labels.max())}")
    return _subset(labels, counts, seed, "counts[k]")


def _floor(x: float) -> int:
    return int(math.floor(x + 1e-9))  # tolerate float noise such as 49.99999999


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
            or not math.isfinite(ratio) or ratio < 1:
        raise ValueError(f"ratio (max/min class count) must be a finite number >= 1, got {ratio!r}")
    return float(ratio)


def step_imbalance(num_classes: int, n_major: int, ratio: float, n_minor_classes: int) -> list:
    """Counts for step imbalance: the first ``num_classes - n_minor_classes`` classes get
    ``n_major`` samples, the last ``n_minor_classes`` get ``floor(n_major / ratio)``."""
    num_classes = _check_int("num_classes", num_classes, 1)
    n_major = _check_int("n_major", n_major, 1)
    ratio = _check_ratio(ratio)
    n_minor_classes = _check_int("n_minor_classes", n_minor_classes)
    if n_minor_classes > num_classes:
        raise ValueError(f"n_minor_classes must be <= num_classes={num_classes}, got {n_minor_classes}")
    n_minor = _floor(n_major / ratio)
    if n_minor < 1:
        raise ValueError(f"n_major={n_major} / ratio={ratio} leaves no sample for minority classes")
    return [n_major] * (num_classes - n_minor_classes) + [n_minor] * n_minor_classes


def longtail_counts(num_classes: int, n_max: int, ratio: float) -> list:
    """Exponentially decaying counts ``floor(n_max * ratio**(-k / (K-1)))``, k = 0..K-1."""
    num_classes = _check_int("num_classes", num_classes, 2)
    n_max = _check_int("n_max", n_max, 1)
    ratio = _check_ratio(ratio)
    counts = [_floor(n_max * ratio ** (-k / (num_classes - 1))) for k in range(num_classes)]
    if counts[-1] < 1:
        raise ValueError(f"n_max={n_max} / ratio={ratio} leaves no sample for the smallest class")
    return counts


def get_data(dataset: str, split: str = "train", n_per_class: Optional[int] = None, seed: int = 0,
             counts: Optional[Sequence[int]] = None, root=None, verify: bool = True
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load, subset (balanced, or per-class ``counts``) and normalize: ``(x float32 N x 1 x 28 x 28,
    y int64 N)``."""
    if counts is not None and n_per_class is not None:
        raise ValueError("pass either n_per_class or counts, not both")
    images, labels = load_dataset(dataset, split, root=root, verify=verify)
    idx = (balanced_subset(labels, n_per_class, seed) if counts is None
           else imbalanced_subset(labels, counts, seed))
    return to_float(images[idx], dataset), labels[idx]
