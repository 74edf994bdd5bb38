#!/usr/bin/env bash
# Everything CI runs, in order; `.ci/run` calls it inside a fresh virtual
# environment. Run it from any directory, in an environment set up with
#     pip install torch==2.13.0 -e ".[all]"
#
# Stages (each timed; a failing stage does not stop the others, the script
# exits 1 at the end if any failed):
#   lint      ruff check and ruff format --check
#   fast      pytest, default tier (plain `python -m pytest`)
#   slow      pytest -m slow (notebooks, long loops, costly corners of cross products)
#   doctest   the docstring examples of src/tess_ad
#   mypy      mypy on src/ (fails if it reports more errors than dev/mypy-allowed)
#   docs      the API reference, sphinx-build with warnings as errors
#   check     the README's main job: tess-ad check examples/rosenbrock
#   extras    fresh venvs with .[jax] alone and .[torch] alone (sizes printed),
#             checked by tests/test_install.py
#   py312     newest JAX and tesseract-jax on Python 3.12: core and JAX suites
#   py310     Python 3.10 (the lower bound): install and a smoke run
#   py313     Python 3.13 (the newest supported): install and the same smoke run
#
# TESS_AD_STAGES="fast mypy" runs only the named stages. The other Pythons are
# found through pyenv (PY312, PY310, PY313 override); when one is missing the stage
# fails, unless TESS_AD_SKIP_OTHER_PYTHONS=1 says to skip it (printed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

STAGES=${TESS_AD_STAGES:-"lint fast slow doctest mypy docs check extras py312 py310 py313"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tess_ad_dev_test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

declare -a SUMMARY=()
FAILED=0

stage() {
    local name=$1
    shift
    case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
    echo
    echo "=== [$name] $(date +%T) ==="
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local secs=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$(printf '%-8s %5d s  ok' "$name" "$secs")")
    else
        SUMMARY+=("$(printf '%-8s %5d s  FAILED (exit %d)' "$name" "$secs" "$rc")")
        FAILED=1
    fi
    echo "=== [$name] done in ${secs} s, exit $rc, $(date +%T) ==="
}

pyenv_python() { # pyenv_python 3.12: the newest pyenv 3.12.x interpreter, or nothing
    local root
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    find "$root/versions" -maxdepth 3 -path "$root/versions/$1.*/bin/python" 2>/dev/null |
        sort -V | tail -n 1
}

# A fresh venv: new_venv DIR PYTHON PIP-ARGS...; pip's output goes to DIR.log.
new_venv() {
    local dir=$1 python=$2
    shift 2
    "$python" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install -q --upgrade pip >"$dir.log" 2>&1 &&
        "$dir/bin/python" -m pip install "$@" >>"$dir.log" 2>&1 || {
        tail -n 30 "$dir.log"
        echo "pip install $* failed in $dir (log above)"
        return 1
    }
}

size_mb() { du -sm "$1" | cut -f1; }

lint() {
    ruff check src tests benchmarks examples &&
        ruff format --check src tests benchmarks examples
}

fast() { python -m pytest; }

slow() { python -m pytest -m slow; }

doctest() { python -m pytest --doctest-modules src/tess_ad -p no:cacheprovider; }

mypy_stage() {
    local allowed found
    allowed=$(tr -d '[:space:]' <dev/mypy-allowed)
    mypy >"$WORK/mypy.txt" 2>&1
    cat "$WORK/mypy.txt"
    found=$(grep -c ': error:' "$WORK/mypy.txt")
    echo "mypy: $found errors (allowed: $allowed, in dev/mypy-allowed)"
    echo "by code:"
    grep -o '\[[a-z-]*\]$' "$WORK/mypy.txt" | sort | uniq -c | sort -rn
    if [ "$found" -gt "$allowed" ]; then
        echo "mypy reports more errors than dev/mypy-allowed: fix the new ones"
        return 1
    fi
    if [ "$found" -lt "$allowed" ]; then
        echo "fewer than allowed: lower dev/mypy-allowed to $found"
    fi
}

docs() { sphinx-build -W --keep-going -q -b html docs "$WORK/docs"; }

check() { tess-ad check examples/rosenbrock; }

extras() {
    local python
    python=$(command -v python)
    new_venv "$WORK/core" "$python" -e "$ROOT" || return 1
    new_venv "$WORK/jax" "$python" -e "$ROOT[jax]" || return 1
    new_venv "$WORK/torch" "$python" torch==2.13.0 -e "$ROOT[torch]" || return 1
    echo "installed sizes (fresh venv, pip itself included):"
    echo "  pip install tess-ad           $(size_mb "$WORK/core") MB"
    echo "  pip install 'tess-ad[jax]'    $(size_mb "$WORK/jax") MB"
    echo "  pip install 'tess-ad[torch]'  $(size_mb "$WORK/torch") MB  (torch==2.13.0, the CPU build)"
    "$WORK/core/bin/python" -c "import tess_ad; print('import tess_ad works with the core alone')" || return 1
    TESS_AD_JAX_ONLY_PYTHON="$WORK/jax/bin/python" \
        TESS_AD_TORCH_ONLY_PYTHON="$WORK/torch/bin/python" \
        python -m pytest tests/test_install.py -p no:cacheprovider
}

# Modules of the suite that need torch (the other Pythons have no CPU build of
# it short of a multi-GB download): left out there, run on 3.11.
NEEDS_TORCH=(
    --ignore=tests/torch_adapter
    --ignore=tests/test_bad_input.py
    --ignore=tests/test_concurrency.py
    --ignore=tests/test_memory.py
    --ignore=tests/test_notebooks.py
    --ignore=tests/test_cli.py
    --ignore=tests/test_install.py
    --ignore=tests/test_adapter_parity.py
    --ignore=tests/test_keyword_clients.py
    --ignore=tests/test_partial_requests.py
    "--deselect=tests/test_core_imports.py::test_the_check_sees_a_framework_import[torch]"
)

other_python() { # other_python VERSION: the interpreter, or fail (or skip when told)
    local python=$2
    [ -n "$python" ] || python=$(pyenv_python "$1")
    if [ -z "$python" ]; then
        if [ "${TESS_AD_SKIP_OTHER_PYTHONS:-0}" = 1 ]; then
            echo "SKIPPED: no Python $1 found (TESS_AD_SKIP_OTHER_PYTHONS=1)" >&2
            return 0
        fi
        echo "no Python $1: install it with pyenv, set PY${1//./}, or TESS_AD_SKIP_OTHER_PYTHONS=1" >&2
        return 1
    fi
    echo "$python"
}

versions() {
    "$1" -c "
import sys
from importlib.metadata import version, PackageNotFoundError
def v(p):
    try: return version(p)
    except PackageNotFoundError: return '-'
print('Python', sys.version.split()[0], '|', ', '.join(f'{p} {v(p)}' for p in
      ['jax', 'jaxlib', 'equinox', 'tesseract-jax', 'tesseract-core', 'numpy', 'pydantic', 'torch']))"
}

py312() {
    local python
    python=$(other_python 3.12 "${PY312:-}") || return 1
    [ -n "$python" ] || return 0
    # the newest JAX and tesseract-jax that pip resolves for this Python
    new_venv "$WORK/py312" "$python" -e "$ROOT[jax,runtime,dask,report,test]" tesseract-jax || return 1
    versions "$WORK/py312/bin/python"
    (cd "$ROOT" && "$WORK/py312/bin/python" -m pytest -m "slow or not slow" \
        -p no:cacheprovider "${NEEDS_TORCH[@]}")
}

# A smoke run (install, then the core and a slice of the JAX adapter) on
# another Python: smoke VERSION OVERRIDE. pip resolves what that Python gets
# (on 3.10: jax 0.6, numpy 2.2).
smoke() {
    local version=$1 python venv
    python=$(other_python "$version" "$2") || return 1
    [ -n "$python" ] || return 0
    venv="$WORK/py${version//./}"
    new_venv "$venv" "$python" -e "$ROOT[jax,runtime,test]" || return 1
    versions "$venv/bin/python"
    (cd "$ROOT" && "$venv/bin/python" -m pytest -p no:cacheprovider \
        tests/test_paths.py tests/test_fd.py tests/test_core_imports.py \
        tests/jax_adapter/test_jax_module.py tests/jax_adapter/test_jax_outputs.py \
        tests/jax_adapter/test_jax_counts.py "${NEEDS_TORCH[@]}")
}

py310() { smoke 3.10 "${PY310:-}"; }

py313() { smoke 3.13 "${PY313:-}"; }

stage lint lint
stage fast fast
stage slow slow
stage doctest doctest
stage mypy mypy_stage
stage docs docs
stage check check
stage extras extras
stage py312 py312
stage py310 py310
stage py313 py313

echo
echo "=== dev/test.sh summary ==="
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
