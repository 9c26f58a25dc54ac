#!/usr/bin/env bash
# Execute the chapter notebooks at a preset with papermill: the same script on a laptop, on the GPU
# runner (.github/workflows/gpu.yml) and anywhere else.
#
#   scripts/run_chapters.sh PRESET [OUTDIR] [NN ...]
#
# PRESET   smoke | cpu | paper (passed to every chapter as the papermill parameter PRESET)
# OUTDIR   where the executed notebooks go (default _build/papermill); never inside chapters/
# NN ...   optional chapter numbers (e.g. 01 03) to run only those chapters
#
# Chapters run with chapters/ as their working directory; committed results are loaded, missing
# ones are computed (unless NCUTILS_REQUIRE_RESULTS=1) where ncutils.store puts them (data/results/,
# or $NCUTILS_RESULTS). Every chapter is attempted; the script exits non-zero if any failed, naming
# them. The python on PATH is used (override with PYTHON=...); PAPERMILL_ARGS adds papermill options.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
preset=$1
out=${2:-_build/papermill}
shift $(( $# >= 2 ? 2 : 1 ))
case "$preset" in
  smoke|cpu|paper) ;;
  *) echo "run_chapters.sh: PRESET must be smoke, cpu or paper, got '$preset'" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python}
realpath_of() { "$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.argv[1]))' "$1"; }
out_abs=$(realpath_of "$out")
chapters_abs=$(realpath_of chapters)
if [[ "$out_abs/" == "$chapters_abs/"* ]]; then
  echo "run_chapters.sh: OUTDIR must be outside chapters/ (got $out)" >&2
  exit 2
fi

notebooks=()
for nb in chapters/[0-9]*.ipynb; do
  [[ -e "$nb" ]] || continue
  name=$(basename "$nb" .ipynb)
  if [[ $# -gt 0 ]]; then
    keep=0
    for n in "$@"; do [[ "$name" == "$n"_* ]] && keep=1; done
    [[ $keep == 1 ]] || continue
  fi
  notebooks+=("$nb")
done
if [[ ${#notebooks[@]} -eq 0 ]]; then
  echo "run_chapters.sh: no chapter notebooks matched (chapters/[0-9]*.ipynb${*:+, numbers: $*})" >&2
  exit 1
fi

mkdir -p "$out_abs"
"$PYTHON" - <<'EOF'
import platform, torch
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"== python {platform.python_version()}, torch {torch.__version__}, device: {dev}", flush=True)
EOF

failed=()
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb" .ipynb)
  target="$out_abs/$name.$preset.ipynb"
  echo "== $name at preset '$preset' -> $target"
  start=$SECONDS
  if "$PYTHON" -m papermill "$nb" "$target" -p PRESET "$preset" --cwd chapters -k python3 \
      --log-level WARNING ${PAPERMILL_ARGS:-}; then
    echo "== $name done in $(( SECONDS - start )) s"
  else
    echo "== $name FAILED after $(( SECONDS - start )) s (executed notebook: $target)" >&2
    failed+=("$name")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run_chapters.sh: ${#failed[@]} chapter(s) failed at preset '$preset': ${failed[*]}" >&2
  exit 1
fi
echo "== all ${#notebooks[@]} chapter(s) executed at preset '$preset' into $out_abs"
