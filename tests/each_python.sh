#!/usr/bin/env bash
# make test: the suite on every CPython from 3.10 up that this machine has (pyenv's versions, or
# python3.1x on PATH), each in a venv of its own; .venv serves its own version. Says which ran.
#
# What runs where: the suite with the compiled core (mirror._core, built by the install where
# a C compiler is) on every Python, and once more with the pure-Python core (MIRROR_PURE=1) on
# .venv's Python; the tests that compare the two cores run in every pass. The passes run in two
# lanes at once (a pass keeps about one core of two busy); each pass's output goes to
# .venv-tests/logs/ and is shown when it fails.
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
passes=() failed=()
for version in $(printf '%s\n' "${!found[@]}" | sort -V); do
  python=${found[$version]}
  if [ "$version" != "$main" ]; then
    venv=.venv-tests/$version
    # installed again when the project or the compiled core's source changed
    if [ ! -x "$venv/bin/python" ] || [ ! -e "$venv/.installed" ] ||
       [ -n "$(find pyproject.toml setup.py mirror/_core.c -newer "$venv/.installed")" ]; then
      "$python" -m venv "$venv" && install "$venv/bin/python" && touch "$venv/.installed" || { failed+=("$version (install)"); continue; }
    fi
    python=$venv/bin/python
  fi
  install_mpi "$python"
  echo "== Python $version: $("$python" -c 'import sys; print(sys.version.split()[0])'), core: $("$python" -c 'from mirror import core; print(core.describe())')" >&2
  passes+=("$version C $python")
  [ "$version" = "$main" ] && passes+=("$version Python $python")
done
mkdir -p .venv-tests/logs
# run_lane N: every other pass, from the Nth; one line per pass in .venv-tests/logs/lane-N
run_lane() {
  local i version core python log
  for ((i = $1; i < ${#passes[@]}; i += 2)); do
    read -r version core python <<< "${passes[$i]}"
    log=.venv-tests/logs/$version-$core.log
    if ( if [ "$core" = Python ]; then export MIRROR_PURE=1; else unset MIRROR_PURE; fi
         "$python" -m pytest "${@:2}" ) > "$log" 2>&1; then
      echo "$version ($core) passed" >> ".venv-tests/logs/lane-$1"
    else
      echo "$version ($core) FAILED" >> ".venv-tests/logs/lane-$1"
    fi
  done
}
rm -f .venv-tests/logs/lane-*
run_lane 0 "$@" & first=$!
run_lane 1 "$@" & second=$!
wait $first $second
passed=()
for pass in "${passes[@]}"; do
  read -r version core python <<< "$pass"
  log=.venv-tests/logs/$version-$core.log
  if grep -qx "$version ($core) passed" .venv-tests/logs/lane-* 2>/dev/null; then
    passed+=("$version ($core)")
    echo "== Python $version, $core core:" >&2
    tail -n 1 "$log" >&2  # pytest's closing line, as it wrote it
  else
    failed+=("$version ($core)")
    echo "== Python $version, $core core FAILED ($log):" >&2
    cat "$log" >&2
  fi
done
echo "== Pythons tested: ${passed[*]:-none} passed${failed:+; FAILED: ${failed[*]}}" >&2
[ ${#failed[@]} -eq 0 ]
