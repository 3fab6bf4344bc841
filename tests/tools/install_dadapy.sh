#!/usr/bin/env bash
# Install DADApy 0.3.4 (a test-only reference for the Gride estimator) into the current Python.
# Its source release ships Cython-generated C that does not compile against NumPy 2 (one
# accessor changed), and there is no wheel: patch that one accessor and build without isolation.
# Usage: tests/tools/install_dadapy.sh PYTHON
set -euo pipefail
PY=${1:-python}
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('dadapy') is None)"; then
  echo "dadapy already installed"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip install -q cython setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -m pip download -q --no-deps --no-build-isolation dadapy==0.3.4 -d "$work" 2>&1 | grep -v "^WARNING: Location" || true
tar xzf "$work"/dadapy-0.3.4.tar.gz -C "$work"
sed -i 's/__pyx_v_d->subarray->shape/PyDataType_SUBARRAY(__pyx_v_d)->shape/g' "$work"/dadapy-0.3.4/dadapy/_cython/*.c
"$PY" -m pip install -q --no-deps --no-build-isolation "$work"/dadapy-0.3.4 2>&1 | grep -v "^WARNING: Location" || true
# dadapy's package __init__ imports its jax-based modules, so jax and friends are needed to import it at all.
# pip then reports that dadapy pins numpy<2, jax==0.4.30, flax==0.8.5: expected, since it was
# installed with --no-deps against NumPy 2; the agreement test is what shows it works.
"$PY" -m pip install -q jax flax seaborn networkx 2>&1 | grep -v "^WARNING: Location" || true
"$PY" - <<'PY'
import numpy as np
np.float_ = np.float64  # dadapy 0.3.4 reads the NumPy 1 alias at import
import dadapy
print("dadapy", dadapy.__file__)
PY
