#!/usr/bin/env bash
# The book's whole test suite (run by `make test`, which sets up .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
out=_build/papermill
mkdir -p "$out"

echo "== 1/5 unit tests and notebook contracts (pytest)"
python -m pytest tests -q

echo "== 2/5 every chapter at the smoke preset (papermill, outputs in $out)"
bash scripts/run_chapters.sh smoke "$out"

# From here on, chapters render committed results: a missing cpu/paper run is an error, not a retrain.
export NCUTILS_REQUIRE_RESULTS=1
echo "== 3/5 nbval: every chapter as committed runs top to bottom (default preset, committed results)"
python -m pytest --nbval-lax -q -p no:cacheprovider chapters/[0-9]*.ipynb status.ipynb

echo "== 4/5 strict book build"
jupyter-book build . -W -n --keep-going

echo "== 5/5 the built pages: maths rendered, tables fit, figures captioned (tests/test_html.py)"
NCUTILS_TEST_HTML=1 python -m pytest tests/test_html.py -q -p no:cacheprovider
