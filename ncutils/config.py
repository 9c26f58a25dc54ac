"""Named presets (``smoke``, ``cpu``, ``paper``) per experiment, and a stable config hash.

Preset contents live here and never in notebooks: a chapter names an experiment and a preset and
gets a plain dict back. ``smoke`` proves the code path in seconds on a CPU; ``cpu`` fits a laptop
CPU (about 30 minutes a chapter) and is large enough for the paper's qualitative claim to show;
``paper`` is the published protocol, for a GPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

__all__ = ["PRESET_NAMES", "PRESETS", "get_preset", "config_hash", "paper_lr_grid", "snapshot_epochs"]

PRESET_NAMES = ("smoke", "cpu", "paper")


def paper_lr_grid() -> list[float]:
    """Papyan et al.'s learning-rate grid: 25 values log-spaced in [1e-4, 0.25]."""
    lo, hi = math.log10(1e-4), math.log10(0.25)
    return [10 ** (lo + (hi - lo) * i / 24) for i in range(25)]


# The Papyan et al. (2020) training protocol; experiments override what differs.
_PAPYAN = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, batch_size=128,
               lr_milestones=(1 / 3, 2 / 3), lr_gamma=0.1, augment=False)

PRESETS: dict[str, dict[str, dict]] = {
    # Chapter 1: NC1-NC4 in the terminal phase of training.
    "terminal_phase": {
        "smoke": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("mlp",), epochs=3,
                      n_snapshots=3, test_per_class=20,
                      per_arch={"mlp": dict(lr=0.05, width=64, n_per_class=20)}),
        # The paper's protocol (350 epochs, lr / 10 at 1/3 and 2/3) at CPU scale: the MLP sees the
        # full balanced train sets, the CNN (narrowed to width 16) 500 images per class.
        "cpu": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("mlp", "cnn"), epochs=350,
                    n_snapshots=40, test_per_class=None,
                    per_arch={"mlp": dict(lr=0.0675, width=512, n_per_class=None),
                              "cnn": dict(lr=0.0675, width=16, n_per_class=500)}),
        # Full balanced train sets (MNIST subsampled to 5,421 per class). The learning rate is taken
        # from the paper's grid (paper_lr_grid()[21] = 0.094); rerun the sweep to refine it.
        "paper": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18", "vgg11"),
                      epochs=350, n_snapshots=40, test_per_class=None,
                      per_arch={a: dict(lr=paper_lr_grid()[21], width=64, n_per_class=None)
                                for a in ("resnet18", "vgg11")}),
    },
}


def get_preset(experiment: str, preset: str) -> dict:
    """A deep copy of the settings of ``experiment`` at ``preset``."""
    if experiment not in PRESETS:
        raise ValueError(f"experiment must be one of {sorted(PRESETS)}, got {experiment!r}")
    if preset not in PRESETS[experiment]:
        raise ValueError(f"preset must be one of {list(PRESETS[experiment])} for experiment "
                         f"{experiment!r}, got {preset!r}")
    return copy.deepcopy(PRESETS[experiment][preset])


def _canonical(obj):
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return float(repr(obj))
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"config values must be JSON-like (dict, list, str, number, bool, None), "
                    f"got {type(obj).__name__}")


def config_hash(config: dict, length: int = 10) -> str:
    """A stable hex digest of a JSON-like config (key order and tuple/list do not matter)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def snapshot_epochs(epochs: int, n_snapshots: int) -> list[int]:
    """About ``n_snapshots`` log-spaced epochs in 1..epochs, always including the first and last."""
    if epochs < 1 or n_snapshots < 1:
        raise ValueError(f"epochs and n_snapshots must be >= 1, got {epochs} and {n_snapshots}")
    if n_snapshots == 1:
        return [epochs]
    pts = {round(math.exp(math.log(epochs) * i / (n_snapshots - 1))) for i in range(n_snapshots)}
    return sorted(pts | {1, epochs})
