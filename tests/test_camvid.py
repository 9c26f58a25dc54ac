"""Tests for the CamVid loader in ncutils.data: layout, checksums, void mapping, class counts."""

import hashlib
import io
import pathlib
import shutil

import numpy as np
import pytest
import torch

from ncutils import data as D

# Pixel counts per class at 240x180 from data/README.md (ids 0..10, then void)
TRAIN_COUNTS = [2655759, 3682975, 156038, 5040098, 710515, 1539084, 185523, 178727, 929651, 101362, 46192]
TRAIN_VOID = 628476


# ----------------------------------------------------------------------------- the real files

def test_split_lists_have_the_published_sizes(camvid_root):
    for split, n in {"train": 367, "val": 101, "test": 233}.items():
        names = D.camvid_split_names(split)
        assert len(names) == n == D.CAMVID_SPLITS[split] and len(set(names)) == n
        for folder in (split, f"{split}annot"):
            assert sorted(p.name for p in (camvid_root / "CamVid/240x180" / folder).iterdir()) == sorted(names)


def test_train_split_shapes_dtypes_and_class_counts(camvid_root):
    images, labels = D.load_camvid("train")
    assert images.shape == (367, 3, 180, 240) and images.dtype == torch.uint8
    assert labels.shape == (367, 180, 240) and labels.dtype == torch.uint8
    counts = D.camvid_class_frequencies("train", include_void=True)
    assert counts.dtype == torch.int64 and counts.tolist() == TRAIN_COUNTS + [TRAIN_VOID]
    # the counts cover every pixel: labels hold only 0..10 and 255 (void)
    assert sum(TRAIN_COUNTS) + TRAIN_VOID == labels.numel() == 15_854_400
    assert D.camvid_class_frequencies("train").tolist() == TRAIN_COUNTS
    assert len(D.CAMVID_CLASSES) == 11 and D.CAMVID_CLASSES[3] == "Road" and D.CAMVID_CLASSES[10] == "Bicyclist"
    # the normalization constants are the train statistics (rounded to 4 decimals)
    n = images[:, 0].numel()
    for c in range(3):
        s1 = int(images[:, c].sum(dtype=torch.int64))
        s2 = int(images[:, c].to(torch.int32).square().sum(dtype=torch.int64))
        mean = s1 / n / 255
        assert mean == pytest.approx(D.CAMVID_MEAN[c], abs=1e-4)
        assert ((s2 / n / 255 ** 2 - mean ** 2) * n / (n - 1)) ** 0.5 == pytest.approx(D.CAMVID_STD[c], abs=1e-4)
    # cached in-process, and every call returns a fresh copy
    images[0] = 0
    again, _ = D.load_camvid("train")
    assert not torch.equal(again[0], images[0])


def test_val_split_loads(camvid_root):
    images, labels = D.load_camvid("val", "240x180")
    assert images.shape == (101, 3, 180, 240) and labels.shape == (101, 180, 240)
    assert int(labels[labels != 255].max()) <= 10


def test_manifest_is_the_shared_checksums_of_the_staged_files(camvid_root):
    manifest = D.camvid_manifest()
    assert len(manifest) == 3 + 2 * (367 + 101 + 233)
    sums = camvid_root / "SHA256SUMS"
    if sums.is_file():
        shared = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if line.strip())
        assert all(shared[rel] == digest for rel, digest in manifest.items())


def test_pixel_manifest_is_the_decoded_pixels_of_every_staged_png(camvid_root):
    from PIL import Image

    pixels = D.camvid_pixel_manifest()
    pngs = {rel for rel in D.camvid_manifest() if rel.endswith(".png")}
    assert set(pixels) == pngs and len(pngs) == 2 * (367 + 101 + 233)
    for rel in sorted(pngs):
        with Image.open(camvid_root / rel) as im:
            assert D.pixel_digest(np.asarray(im)) == pixels[rel], rel


def test_a_png_from_another_encoder_loads_and_a_changed_pixel_is_refused(camvid_root, tmp_path):
    """Colab's Pillow / zlib may encode the same pixels into other bytes: the file is accepted by
    the sha256 of its pixels. One changed pixel is still refused, naming the file."""
    from PIL import Image

    link_split(camvid_root, tmp_path, "val")
    name = D.camvid_split_names("val")[1]
    expected_images, expected_labels = D.load_camvid("val", root=camvid_root)
    for folder in ("val", "valannot"):
        target = tmp_path / "CamVid/240x180" / folder / name
        with Image.open(target) as im:
            arr = np.asarray(im).copy()
        target.unlink()
        Image.fromarray(arr).save(target, "PNG", compress_level=1)  # other bytes, same pixels
        assert hashlib.sha256(target.read_bytes()).hexdigest() != D.camvid_manifest()[
            f"CamVid/240x180/{folder}/{name}"]
    images, labels = D.load_camvid("val", root=tmp_path)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    arr[0, 0] = (int(arr[0, 0]) + 1) % 11  # a label map, one pixel to another class
    target.unlink()
    Image.fromarray(arr).save(target, "PNG", compress_level=1)
    with pytest.raises(D.ChecksumError, match=f"valannot/{name}.*decoded pixels differ"):
        D.load_camvid("val", root=tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        D.pixel_digest(arr.astype(np.int32))


def link_split(src: pathlib.Path, dst: pathlib.Path, split: str):
    """dst/CamVid mirrors src/CamVid for one split: files are symlinks (copies for the split list)."""
    (dst / "CamVid").mkdir(parents=True)
    shutil.copy(src / "CamVid" / f"{split}.txt", dst / "CamVid" / f"{split}.txt")
    for folder in (split, f"{split}annot"):
        (dst / "CamVid/240x180" / folder).mkdir(parents=True)
        for p in (src / "CamVid/240x180" / folder).iterdir():
            (dst / "CamVid/240x180" / folder / p.name).symlink_to(p)


def test_a_tampered_file_is_refused(camvid_root, tmp_path):
    link_split(camvid_root, tmp_path, "val")
    name = D.camvid_split_names("val")[0]
    target = tmp_path / "CamVid/240x180/valannot" / name
    raw = bytearray(target.read_bytes())
    target.unlink()
    raw[len(raw) // 2] ^= 0x01  # one bit
    target.write_bytes(bytes(raw))
    with pytest.raises(D.ChecksumError, match=f"valannot/{name}"):
        D.load_camvid("val", root=tmp_path)
    # the split list is checked too
    lst = tmp_path / "CamVid" / "val.txt"
    lst.write_bytes(lst.read_bytes() + b"\n")  # a blank line: parses the same, hashes differently
    with pytest.raises(D.ChecksumError, match="val.txt"):
        D.load_camvid("val", root=tmp_path)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="240x180 RGB frames are staged"):
        D.load_camvid("train", resolution="480x360")
    with pytest.raises(ValueError, match="resolution must be one of"):
        D.load_camvid("train", resolution="120x90")
    with pytest.raises(ValueError, match="split must be one of"):
        D.load_camvid("validation")
    with pytest.raises(TypeError, match="uint8"):
        D.camvid_to_float(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        D.camvid_to_float(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


def test_camvid_to_float_normalizes_per_channel():
    x = torch.tensor([255, 0, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = D.camvid_to_float(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.2), D.CAMVID_MEAN, D.CAMVID_STD)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(D.camvid_to_float(x[0]), out[0])


# ----------------------------------------------------------------------------- a synthetic layout (no data needed)

def png_bytes(arr: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(arr)
    assert img.mode == mode
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """Two 240x180 frames + label maps under tmp_path, with the checksum manifest patched to match."""
    rng = np.random.default_rng(0)
    names = ["a_0001.png", "b_0002.png"]
    files = {"CamVid/train.txt": "".join(f"/SegNet/CamVid/train/{n} /SegNet/CamVid/trainannot/{n}\n"
                                          for n in names).encode()}
    frames, maps = [], []
    for n in names:
        frame = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
        lab = rng.integers(0, 12, (180, 240), dtype=np.uint8)  # 0..10 and void 11
        frames.append(frame)
        maps.append(lab)
        files[f"CamVid/240x180/train/{n}"] = png_bytes(frame, "RGB")
        files[f"CamVid/240x180/trainannot/{n}"] = png_bytes(lab, "L")
    for rel, payload in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(payload)
    manifest = {rel: hashlib.sha256(payload).hexdigest() for rel, payload in files.items()}
    monkeypatch.setattr(D, "camvid_manifest", lambda: manifest)
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")  # a missing file is an error here, not a download
    return tmp_path, names, np.stack(frames), np.stack(maps), manifest


def test_synthetic_split_round_trips_with_void_mapped_to_255(synth):
    root, names, frames, maps, _ = synth
    images, labels = D.load_camvid("train", root=root)
    assert torch.equal(images, torch.from_numpy(frames.transpose(0, 3, 1, 2).copy()))
    expected = torch.from_numpy(maps.copy())
    expected[expected == 11] = 255
    assert labels.dtype == torch.uint8 and torch.equal(labels, expected)
    counts = D.camvid_class_frequencies("train", root=root, include_void=True)
    assert counts.tolist() == np.bincount(maps.ravel(), minlength=12).tolist()


def test_synthetic_bad_files_are_refused(synth):
    root, names, frames, maps, manifest = synth
    rel = f"CamVid/240x180/trainannot/{names[1]}"
    bad = maps[1].copy()
    bad[0, 0] = 12
    (root / rel).write_bytes(png_bytes(bad, "L"))
    with pytest.raises(D.ChecksumError, match=names[1]):
        D.load_camvid("train", root=root)
    manifest[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="label value 12 above 11"):
        D.load_camvid("train", root=root)
    (root / rel).write_bytes(png_bytes(np.stack([bad] * 3, -1), "RGB"))  # a label map of the wrong mode
    manifest[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="mode L"):
        D.load_camvid("train", root=root)
    del manifest[rel]
    with pytest.raises(D.ChecksumError, match="no sha256"):
        D.load_camvid("train", root=root)
    (root / rel).unlink()
    with pytest.raises(FileNotFoundError, match=names[1]):
        D.load_camvid("train", root=root, verify=False)
