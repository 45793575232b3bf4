"""Qwen3-TTS (12 Hz): our own PyTorch implementation of the talker (text -> speech codes) and of
the 12 Hz speech codec (codes <-> 24 kHz waveform), checked against the Apache-2.0 reference
package `qwen-tts` on tiny random configurations."""
