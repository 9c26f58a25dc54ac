import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def real_data(monkeypatch):
    """Point NCUTILS_DATA at the staged datasets (../shared/data), or skip when they are absent."""
    root = os.environ.get("NCUTILS_DATA") or (str(SHARED) if SHARED.is_dir() else None)
    if not root or not (Path(root) / "MNIST").is_dir():
        pytest.skip("MNIST files not available (set NCUTILS_DATA)")
    monkeypatch.setenv("NCUTILS_DATA", root)
    return Path(root)


@pytest.fixture
def camvid_root(monkeypatch):
    """The staged data folder holding CamVid/ ($NCUTILS_DATA or ../shared/data), else skip."""
    root = os.environ.get("NCUTILS_DATA") or str(SHARED)
    if not (Path(root) / "CamVid" / "240x180").is_dir():
        pytest.skip("CamVid files not available (set NCUTILS_DATA)")
    monkeypatch.setenv("NCUTILS_DATA", root)
    return Path(root)


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NCUTILS_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"
