# Sourced by scripts/test and scripts/bench: make sure .venv/ holds the pinned moto server and
# the pinned IAM linter parliament (the contract tests lint every IAM document with it).
# Leaves MESHSTACK_MOTO_SERVER exported.

MOTO_VERSION="5.2.5"
PARLIAMENT_VERSION="1.6.4"

# `python -m pip`, not .venv/bin/pip: a venv copied from another folder keeps pip scripts whose
# first line names the old folder's python, so they would install there.
venv_has() { # package version
  .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}

moto_venv_ok() {
  [ -x .venv/bin/moto_server ] && venv_has moto "$MOTO_VERSION"
}

if ! moto_venv_ok; then
  echo "installing moto[server]==$MOTO_VERSION into .venv/" >&2
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
moto_venv_ok || { echo "moto server is not usable in .venv/" >&2; exit 1; }
if ! venv_has parliament "$PARLIAMENT_VERSION"; then
  echo "installing parliament==$PARLIAMENT_VERSION into .venv/" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "parliament==$PARLIAMENT_VERSION"
fi
venv_has parliament "$PARLIAMENT_VERSION" || { echo "parliament is not usable in .venv/" >&2; exit 1; }
export MESHSTACK_MOTO_SERVER="$PWD/.venv/bin/moto_server"
