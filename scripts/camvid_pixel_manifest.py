"""Write ncutils/camvid_pixels_sha256.txt: the sha256 of the decoded pixels of every staged CamVid
PNG (ncutils.data.pixel_digest), after checking each file's bytes against ncutils/camvid_sha256.txt.

    python scripts/camvid_pixel_manifest.py [--root DATA_ROOT]
"""
import argparse
import hashlib
import pathlib
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ncutils import data as D  # noqa: E402
from ncutils.store import atomic_write  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--root", default=None, help="the folder holding CamVid/ (default: $NCUTILS_DATA)")
args = parser.parse_args()
root = pathlib.Path(args.root) if args.root else D.data_root()
lines = []
for rel, digest in sorted(D.camvid_manifest().items()):
    if not rel.endswith(".png"):
        continue
    raw = (root / rel).read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:
        sys.exit(f"{root / rel}: sha256 differs from the manifest; refusing to record its pixels")
    with Image.open(root / rel) as im:
        lines.append(f"{D.pixel_digest(np.asarray(im))}  {rel}\n")
atomic_write(D.CAMVID_PIXEL_MANIFEST, "".join(lines))
print(f"{len(lines)} pixel digests written to {D.CAMVID_PIXEL_MANIFEST}")
