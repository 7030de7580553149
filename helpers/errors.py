"""The errors a user can fix: bad checkpoints, class files, splits and photos.

Each is a ``ValueError`` whose message names the file and what to do about it. The command
lines, the web app and the notebooks' loaders catch :class:`InputError` and show that one
line (exit code 2 on a command line), never a traceback.
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
