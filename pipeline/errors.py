"""User-facing errors: the CLI prints their message as one line and exits with code 2.

Every message names the file (or option) at fault and says how to fix it, so that a
user mistake never ends in a traceback.
"""


class MidlevelError(Exception):
    """Base of every error caused by input, settings or environment, not by a bug."""


class DataError(MidlevelError):
    """The VOC tree or one of its files is missing, unreadable or inconsistent."""


class CacheError(MidlevelError):
    """The feature cache is absent, incomplete, locked or built with other settings."""


class BackboneUnavailable(MidlevelError):
    """The backbone or its weights cannot be had on this machine."""
