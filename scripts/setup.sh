#!/usr/bin/env bash
# Set up a fresh machine for the toolkit: system packages (espeak-ng, praat), a virtual
# environment in .venv, the CPU build of torch first (so that no multi-GB CUDA build is pulled
# in), then this project with its extras.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# espeak-ng: the demo-corpus generator and pocketsphinx's G2P fallback (and their tests);
# praat: the test that Praat itself opens the TextGrids we write (and writes binary/chronological ones)
# and measures what `lam acoustics` measures; chromium: the test that renders the HTML report headless;
# ffmpeg: audio formats libsndfile cannot decode (.m4a, .opus in some containers, ...).
need=()
ldconfig -p 2>/dev/null | grep -q libespeak-ng || need+=(espeak-ng)
command -v praat >/dev/null || need+=(praat)
command -v chromium >/dev/null || need+=(chromium)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]}) for the demo-corpus" \
         "generator, the Praat compatibility tests, the HTML report's rendering test and ffmpeg decoding" \
         "(their tests are skipped without them)" >&2
  fi
fi

if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if ! $VENV/bin/python -c "import torch" 2>/dev/null; then
  # The exact version takes the CPU wheel from local disk; a bare `torch` would pull a CUDA build.
  $PIP install -q torch==2.13.0
fi
# ray: the Ray engine and its tests (a real local cluster), run by `make test` like everything else
$PIP install -q -e ".[offline-whisper,test,notebooks,ray]"
touch "$VENV/.installed"
echo "setup: done ($($VENV/bin/lam --version))"
