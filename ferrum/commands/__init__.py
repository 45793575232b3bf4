"""The `ferrum` command tree. Each command lives in its own module and imports the heavy parts
(torch, models) only when it runs, so `ferrum --help` stays instant."""

from __future__ import annotations

import sys

import typer

from ferrum.errors import FerrumError

app = typer.Typer(
    name="ferrum",
    help="Run open models locally, fast: chat, serve, transcribe, speak, embed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Importing a command module adds its command to `app`.
    from ferrum.commands import bench as _bench  # noqa: F401
    from ferrum.commands import embed as _embed  # noqa: F401
    from ferrum.commands import list as _list  # noqa: F401
    from ferrum.commands import pull as _pull  # noqa: F401
    from ferrum.commands import run as _run  # noqa: F401
    from ferrum.commands import serve as _serve  # noqa: F401
    from ferrum.commands import transcribe as _transcribe  # noqa: F401
    from ferrum.commands import tts as _tts  # noqa: F401


def main() -> None:
    """Console entry point: user errors print one line to stderr and exit 1, never a traceback."""
    _register()
    try:
        app()
    except FerrumError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
