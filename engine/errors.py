"""Exception hierarchy shared by the engine and the server.

Every error the engine raises on purpose derives from :class:`KeyFaceError`, so the server can tell
expected failures (report them to the user) from bugs (log a traceback).
"""

from __future__ import annotations


class KeyFaceError(Exception):
    """Base class of all errors KeyFace raises deliberately."""


class InputError(KeyFaceError):
    """Bad user input (audio format, file, request); the message is meant for the user."""


class WeightsError(KeyFaceError):
    """Model weights are missing, incomplete or do not match the expected architecture."""
