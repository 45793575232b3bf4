"""Audio pipelines: decoding files to samples, log-mel features, Whisper transcription."""
