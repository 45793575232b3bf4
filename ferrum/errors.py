"""The errors ferrum raises for things a user can fix.

Every command catches `FerrumError` and prints its message (no traceback); the server maps it to
an OpenAI-shaped error with the status code the subclass names.
"""

from __future__ import annotations


class FerrumError(Exception):
    """An error whose message is meant for the user; `status_code` is the HTTP status it maps to."""

    status_code: int = 400


class ModelNotFoundError(FerrumError):
    """A model spec names nothing local and cannot be downloaded."""

    status_code = 404


class CheckpointError(FerrumError):
    """A checkpoint exists but cannot be read: corrupt, truncated, missing shards or tensors."""

    status_code = 500


class UnsupportedModelError(FerrumError):
    """The checkpoint is readable but its architecture or format is not one ferrum runs."""

    status_code = 400


class InvalidInputError(FerrumError):
    """A request or argument is malformed or out of range."""

    status_code = 400


class PromptTooLongError(InvalidInputError):
    """A prompt (plus the tokens asked for) does not fit the model's context."""


class AudioDecodeError(InvalidInputError):
    """An input file is not audio that can be decoded."""


class DeviceError(FerrumError):
    """The requested device or dtype is not available here."""


class QueueFullError(FerrumError):
    """The engine's waiting queue is full; the client should retry later."""

    status_code = 503


class EngineDeadError(FerrumError):
    """The engine loop stopped after an internal error; the server reports unhealthy."""

    status_code = 503
