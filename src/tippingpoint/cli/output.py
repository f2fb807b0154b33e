"""Result files: written line by line, and a failing disk ends the run with one line."""

from __future__ import annotations

import sys
from typing import BinaryIO

__all__ = ["OutputError", "ResultFile"]


class OutputError(Exception):
    """The result stream cannot be written; a one-line reason with the way out."""


class ResultFile:
    """A JSON-lines result stream (``-``: standard output), flushed after every line,
    so that a crash or a full disk loses at most the line being written."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        if path == "-":
            self.file = sys.stdout.buffer
        elif path:
            try:
                self.file = open(path, "wb")  # noqa: SIM115
            except OSError as e:
                raise OutputError(
                    f"cannot write {path}: {e.strerror}: choose another --output"
                ) from None
        self.lines = 0

    def write(self, line: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(line)
            self.file.flush()
        except OSError as e:
            self.close()
            self.file = None
            if self.path == "-":
                kept = f" after {self.lines:,} lines: the command reading them stopped"
                raise OutputError(f"cannot write to stdout: {e.strerror}{kept}") from None
            kept = (
                f"; the {self.lines:,} lines written before are readable: "
                f"tippingpoint report {self.path}"
                if self.lines
                else ""
            )
            raise OutputError(f"cannot write {self.path}: {e.strerror}{kept}") from None
        self.lines += 1

    def close(self) -> None:
        if self.file is None or self.file is sys.stdout.buffer:
            return
        try:
            self.file.close()
        except OSError:  # the buffered tail could not be written: already reported
            pass
