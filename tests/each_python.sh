#!/usr/bin/env bash
# make test: the suite on every CPython from 3.10 up that this machine has (pyenv's versions, or
# python3.1x on PATH), each in a venv of its own; .venv serves its own version. Says which ran.
set -uo pipefail
cd "$(dirname "$0")/.."
install() { "$1" -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]' >&2; }
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
    if [ ! -x "$venv/bin/python" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
      "$python" -m venv "$venv" && install "$venv/bin/python" && touch "$venv/.installed" || { failed+=("$version (install)"); continue; }
    fi
    python=$venv/bin/python
  fi
  echo "== Python $version: $("$python" -c 'import sys; print(sys.version.split()[0])')" >&2
  if "$python" -m pytest "$@"; then passed+=("$version"); else failed+=("$version"); fi
done
echo "== Pythons tested: ${passed[*]:-none} passed${failed:+; FAILED: ${failed[*]}}" >&2
[ ${#failed[@]} -eq 0 ]
