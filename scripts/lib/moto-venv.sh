# Sourced by scripts/test and scripts/bench: make sure .venv/ holds the pinned moto server.
# Leaves MESHSTACK_MOTO_SERVER exported.

MOTO_VERSION="5.2.5"

moto_venv_ok() {
  [ -x .venv/bin/moto_server ] &&
    .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null
}

if ! moto_venv_ok; then
  echo "installing moto[server]==$MOTO_VERSION into .venv/" >&2
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
moto_venv_ok || { echo "moto server is not usable in .venv/" >&2; exit 1; }
export MESHSTACK_MOTO_SERVER="$PWD/.venv/bin/moto_server"
