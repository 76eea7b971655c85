#!/usr/bin/env bash
# make test: the suite on every CPython from 3.10 up that this machine has (pyenv's versions, or
# python3.1x on PATH), each in a venv of its own; .venv serves its own version. Says which ran.
set -uo pipefail
cd "$(dirname "$0")/.."
install() { "$1" -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e "${2:-.[test]}" >&2; }
# The MPI tests need mpi4py and an mpiexec beside python: the mpich wheel brings one. Without
# them (no wheel for this machine) those tests skip, saying why.
install_mpi() {
  "$1" -c 'import mpi4py' 2>/dev/null && [ -x "$(dirname "$1")/mpiexec" ] && return
  "$1" -m pip install --quiet --disable-pip-version-check mpich >&2 && install "$1" '.[mpi]' ||
    echo "== $("$1" -V 2>&1): mpich and mpi4py could not be installed: the MPI tests will skip" >&2
}
main=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
declare -A found=([$main]=.venv/bin/python)
for python in "$HOME"/.pyenv/versions/3.*/bin/python3 $(command -v python3.10 python3.11 python3.12 python3.13 python3.14 2>/dev/null); do
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2]) if sys.version_info >= (3, 10) else None' 2>/dev/null) || continue
  [ -n "$version" ] && [ -z "${found[$version]:-}" ] && found[$version]=$python
done
passed=() failed=()
for version in $(printf '%s\n' "${!found[@]}" | sort -V); do
  python=${found[$version]}
  if [ "$version" != "$main" ]; then
    venv=.venv-tests/$version
    if [ ! -x "$venv/bin/python" ] || [ ! -e "$venv/.installed" ] || [ -n "$(find pyproject.toml setup.py mirror/_core.c -newer "$venv/.installed")" ]; then
      "$python" -m venv "$venv" && install "$venv/bin/python" && touch "$venv/.installed" || { failed+=("$version (install)"); continue; }
    fi
    python=$venv/bin/python
  fi
  install_mpi "$python"
  echo "== Python $version: $("$python" -c 'import sys; print(sys.version.split()[0])')" >&2
  if "$python" -m pytest "$@"; then passed+=("$version"); else failed+=("$version"); fi
done
echo "== Pythons tested: ${passed[*]:-none} passed${failed:+; FAILED: ${failed[*]}}" >&2
[ ${#failed[@]} -eq 0 ]
