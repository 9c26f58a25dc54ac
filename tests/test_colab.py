"""The Colab path: one repository URL, the first cell of every chapter, and (with
NCUTILS_TEST_COLAB=1) that cell run in a fresh virtual environment against a local clone."""
import os
import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import jupytext
import pytest

from ncutils import colab

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


def test_setup_commands_are_a_shallow_clone_and_an_editable_install():
    clone, install = colab.setup_commands("https://github.com/a/b", "/content/b", python="py")
    assert clone == ["git", "clone", "--quiet", "--depth", "1", "https://github.com/a/b", "/content/b"]
    assert install == ["py", "-m", "pip", "install", "--quiet", "--editable", "/content/b"]
    with pytest.raises(ValueError, match="repo_url"):
        colab.setup_commands("", "/content/b")
    cell = colab.setup_cell("https://github.com/a/b", "/content/b")
    compile(cell, "<cell>", "exec")
    assert 'REPO_URL, BOOK = "https://github.com/a/b", "/content/b"' in cell
    assert '"--depth", "1", REPO_URL, BOOK]' in cell and '"--editable", BOOK]' in cell
    assert 'os.chdir(os.path.join(BOOK, "chapters"))' in cell


def test_the_repository_url_is_one_setting():
    config = (ROOT / "_config.yml").read_text()
    urls = re.findall(r"^\s*url:\s*(\S+)", config, re.M)
    assert urls == [colab.REPO_URL], f"_config.yml repository.url {urls} != ncutils.colab.REPO_URL"
    readme = (ROOT / "README.md").read_text()
    assert colab.colab_url("chapters/01_terminal_phase.ipynb") in readme
    assert colab.colab_url("x.ipynb", "https://github.com/o/n.git") == \
        "https://colab.research.google.com/github/o/n/blob/main/x.ipynb"
    with pytest.raises(ValueError, match="repo_url"):
        colab.colab_url("x.ipynb", "https://gitlab.com/o/n")


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_generated_colab_cell(py):
    cell = next(c for c in jupytext.read(py).cells if c.cell_type == "code")
    assert "remove-cell" in cell.metadata.get("tags", [])
    assert cell.source.strip() == colab.setup_cell(), \
        f"{py.name}: the Colab cell differs from ncutils.colab.setup_cell(); run python -m ncutils.colab"


@pytest.mark.skipif(os.environ.get("NCUTILS_TEST_COLAB") != "1",
                    reason="set NCUTILS_TEST_COLAB=1: clones the repository and builds a venv (~1 minute)")
def test_the_colab_cell_in_a_fresh_venv_against_a_local_clone(tmp_path):
    """Colab stand-in: a fresh venv that sees the packages Colab preinstalls (here: this venv's
    site-packages through a .pth file), no package index, google.colab present. The cell clones
    the committed HEAD of this repository, installs it editable and finds the committed runs."""
    env_dir, dest = tmp_path / "venv", tmp_path / "content" / "book"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "colab_preinstalled.pth").write_text("\n".join(here) + "\n")
    # Colab's pip builds the package in isolation with setuptools>=77 from PyPI; offline, the build
    # runs without isolation on the preinstalled setuptools, so the venv's bundled old one must go.
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
    cell = colab.setup_cell()
    local = f"file://{ROOT}"
    cell = cell.replace(f'"{colab.REPO_URL}"', f'"{local}"').replace(f'"{colab.CLONE_DIR}"', f'"{dest}"')
    assert local in cell and str(dest) in cell
    script = textwrap.dedent("""
        import sys, types, os
        sys.modules["google.colab"] = types.ModuleType("google.colab")
        exec(compile(open(sys.argv[1]).read(), "first_cell", "exec"))
        import ncutils
        from ncutils import store
        print("FILE", ncutils.__file__)
        print("CWD", os.getcwd())
        print("RUNS", len(store.list_runs()))
    """)
    (tmp_path / "cell.py").write_text(cell)
    (tmp_path / "check.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCUTILS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    out = subprocess.run([str(py), str(tmp_path / "check.py"), str(tmp_path / "cell.py")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line[:4] in ("FILE", "CWD ", "RUNS"))
    assert lines["FILE"].startswith(str(dest)), lines
    assert lines["CWD"] == str(dest / "chapters")
    committed = subprocess.run(["git", "ls-files", "data/results/*/*/run.json"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    assert int(lines["RUNS"]) == len(committed) > 0
    shown = subprocess.run([str(py), "-m", "pip", "show", "-f", "ncutils"], env=env, capture_output=True,
                           text=True).stdout
    assert f"Editable project location: {dest}" in shown, shown
