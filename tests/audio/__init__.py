"""Tests of ferrum.audio: mel, decoding, Whisper loaders, transcription, the CLI."""
