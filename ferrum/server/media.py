"""Images that arrive in requests: data URLs, or files under the server's --allowed-local-media.

The server never fetches remote URLs, and reads a local file only when its resolved path (symlinks
followed) lies inside the allowed folder, so a client cannot read arbitrary files of the host.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from ferrum.errors import InvalidInputError

DATA_URL_PREFIX = "data:"
FILE_URL_PREFIX = "file://"
REMOTE_SCHEMES = ("http", "https", "ftp", "s3", "gs")
URL_SHOWN_CHARS = 60  # of a bad URL, quoted back in the error message


def load_image_url(url: str, allowed_dir: Path | None) -> Image.Image:
    """The image a request names by `url`, fully decoded; InvalidInputError if it can't be had."""
    if url.startswith(DATA_URL_PREFIX):
        return _decode(_data_url_bytes(url), "the data URL")
    scheme = urlparse(url).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        raise InvalidInputError(
            f"remote image URLs are not fetched ({_shown(url)}); send the image as a data URL "
            "(data:image/png;base64,...)"
        )
    path = local_media_path(url, allowed_dir)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read the image {url!r}: {e.strerror or e}") from e
    return _decode(data, repr(url))


def local_media_path(url: str, allowed_dir: Path | None) -> Path:
    """The file a path or file:// URL names, if it is a file inside `allowed_dir`."""
    if allowed_dir is None:
        raise InvalidInputError(
            f"local file paths are not allowed on this server ({_shown(url)}): send a data URL, "
            "or start the server with --allowed-local-media DIR"
        )
    raw = unquote(urlparse(url).path) if url.startswith(FILE_URL_PREFIX) else url
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = allowed_dir / path
    resolved = path.resolve()
    if not resolved.is_relative_to(allowed_dir.resolve()):
        raise InvalidInputError(
            f"the path {url!r} is outside the folder this server may read (--allowed-local-media)"
        )
    if not resolved.is_file():
        raise InvalidInputError(f"no file {url!r} in the allowed media folder")
    return resolved


def _data_url_bytes(url: str) -> bytes:
    header, sep, payload = url[len(DATA_URL_PREFIX) :].partition(",")
    if not sep:
        raise InvalidInputError(f"malformed data URL ({_shown(url)}): no ',' before the data")
    if not header.endswith(";base64"):
        raise InvalidInputError(
            f"the data URL must be base64-encoded (data:image/png;base64,...), got {_shown(url)}"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"the data URL's payload is not valid base64 ({e})") from e


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: a truncated file fails here, not in the batcher
            return img.copy()
    except UnidentifiedImageError as e:
        raise InvalidInputError(f"{what} is not an image format Pillow can read") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidInputError(f"{what}: the image is truncated or corrupt ({e})") from e


def _shown(url: str) -> str:
    return repr(url if len(url) <= URL_SHOWN_CHARS else url[:URL_SHOWN_CHARS] + "…")
