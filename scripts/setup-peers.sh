#!/usr/bin/env bash
# Installs the tools `autoagent bench tabular` compares against into a Python virtual environment
# (default target/peers-venv) and prints the variable the tests read. Idempotent: a second run
# only checks.
#
#   eval "$(scripts/setup-peers.sh)"          # pandas, scikit-learn, LightGBM (the `defaults` peer)
#   eval "$(scripts/setup-peers.sh --all)"    # and FLAML 2.8, AutoGluon 1.6 (tabular, no torch)
#
# - AUTOAGENT_PEERS_PYTHON: a Python with the peers (give it to bench tabular as --python)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AUTOAGENT_PEERS_VENV:-target/peers-venv}
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" >&2
fi
vpy="$venv/bin/python"
if ! "$vpy" -c 'import pandas, sklearn, lightgbm' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check pandas==2.3.3 scikit-learn==1.9.1 lightgbm==4.7.0 >&2
fi
if [ "${1:-}" = "--all" ] && ! "$vpy" -c 'import flaml, autogluon.tabular' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check "flaml[automl]==2.8.0" "autogluon.tabular[lightgbm,xgboost]==1.6.3" >&2
fi
echo "export AUTOAGENT_PEERS_PYTHON='$(cd "$(dirname "$vpy")" && pwd)/python'"
