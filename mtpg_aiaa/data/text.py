"""Reading user text files (CSVs, description sidecars) as UTF-8, naming the file and line on failure."""

from __future__ import annotations

import os
from pathlib import Path

from mtpg_aiaa.data.errors import BadInputError


def read_text_file(path: str | os.PathLike, encoding: str = "utf-8-sig", what: str = "text file") -> str:
    """The whole file decoded (a leading byte-order mark dropped; newlines kept as in the file).

    Raises:
        BadInputError: the file does not decode; the message names the file, the 1-based
            line and the byte offset, so the bad character can be found.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise BadInputError(
            f"Cannot parse {what} {path}, line {line}, column {column}: byte 0x{raw[error.start]:02x} is not valid "
            f"{encoding.removesuffix('-sig').upper()}; save the file as UTF-8"
        ) from None
