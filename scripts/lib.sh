# Shared by the set-up scripts (source it): environments and the greenprobe wheel that goes into them.
PY=${PYTHON:-python3}

# make_venv DIR: a virtual environment at DIR, made once.
make_venv() {
  if [ ! -x "$1/bin/python" ]; then
    "$PY" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
  fi
}

# install_greenprobe_wheel DIR: the same greenprobe build as .venv, without touching DIR's dependencies.
install_greenprobe_wheel() {
  rm -rf build/wheel
  .venv/bin/python -m pip wheel -q --no-deps -w build/wheel .
  "$1/bin/python" -m pip install -q --force-reinstall --no-deps build/wheel/greenprobe-*.whl
}
