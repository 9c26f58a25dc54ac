"""Notebook contracts: pairs in sync, no outputs, the chapter cell order of CONTRIBUTING.md."""
import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
# Chapters waiting for their cpu runs (drafts/README.md): not in the toc, held to the same contract.
DRAFTS = sorted((ROOT / "drafts").glob("[0-9][0-9]_*.py"))
PAIRS = CHAPTERS + DRAFTS + [ROOT / "status.py"]


def test_there_are_chapters_and_each_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert CHAPTERS, "no chapters found"
    for py in CHAPTERS:
        assert f"chapters/{py.stem}" in toc, f"{py.name} is not in _toc.yml"


@pytest.mark.parametrize("py", PAIRS, ids=lambda p: p.name)
def test_pair_is_in_sync_and_clean(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{py.name} has no paired {ipynb.name}"
    nb = nbformat.read(ipynb, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "set the kernel: jupytext --set-kernel python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{ipynb.name} carries outputs; commit notebooks clean"
    text = jupytext.read(py)
    strip = lambda cells: [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", [])))  # noqa: E731
                           for c in cells]
    assert strip(text.cells) == strip(nb.cells), f"{py.name} and {ipynb.name} differ: run jupytext --sync"


@pytest.mark.parametrize("py", CHAPTERS + DRAFTS, ids=lambda p: p.name)
def test_chapter_follows_the_contract(py):
    cells = jupytext.read(py).cells
    tags = [c.metadata.get("tags", []) for c in cells]
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "{cite:t}" in cells[0].source, "the title cell cites the paper"
    assert "remove-cell" in tags[1] and "google.colab" in cells[1].source, "cell 2 is the Colab setup"
    assert "parameters" in tags[2], "cell 3 is the parameters cell"
    tree = ast.parse(cells[2].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), "the parameters cell holds assignments only"
        ast.literal_eval(node.value)  # literals only
        names |= {t.id for t in node.targets}
    assert {"PRESET", "SEED", "FORCE_RUN"} <= names
    assert "remove-cell" in tags[-1] and "assert" in cells[-1].source, "the last cell asserts the claim"
    labels = [c.metadata.get("mystnb", {}).get("figure", {}).get("name", "") for c in cells]
    prefix = f"fig-{py.stem[:2]}-"
    assert any(labels), "figures carry captions and labels in mystnb metadata"
    assert all(lab.startswith(prefix) for lab in labels if lab)
    assert any("paper vs this book" in c.source.lower() for c in cells if c.cell_type == "markdown")
