"""The errors a user can fix: bad checkpoints, class files, splits and photos.

Each is a ``ValueError`` whose message names the file and what to do about it. The command
lines, the web app and the notebooks' loaders catch :class:`InputError` and show that one
line (exit code 2 on a command line), never a traceback. docs/bad-input.md lists what each
kind of bad input gets.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input a user can fix; the message names the input and the fix."""


class CheckpointError(InputError):
    """A file that is not a usable checkpoint of this project (or of this model or class list)."""


class ClassFileError(InputError):
    """A class file (YAML or JSON) that does not describe a valid list of classes."""


class SplitError(InputError):
    """A saved split file that does not parse or no longer matches its data folder."""


class PhotoError(InputError):
    """A photo that cannot be read: not an accepted format, corrupt, or too large to decode."""


class ImageTooLarge(PhotoError):
    """A photo with more pixels, or whose decoding needs more memory, than the limits allow.

    Refused from the file's header, before any pixel is decoded (the web app answers 413).
    """


class UnsupportedPhotoFormat(PhotoError):
    """A file that is not a photo in one of the accepted formats (the web app answers 415)."""


def one_line(text: object, limit: int = 300) -> str:
    """Return ``text`` as one line of at most ``limit`` characters (for a library's message
    quoted inside ours: some span several lines or a paragraph)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."
