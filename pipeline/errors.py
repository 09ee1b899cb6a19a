"""Errors a user can fix: the CLI prints their message as one line and exits with code 2.

Every message names the file (or setting) at fault and says how to fix it, so that a user
mistake never ends in a traceback.
"""

from __future__ import annotations

import re


class MidlevelError(Exception):
    """Base of every error caused by input, settings or environment, not by a bug."""


class DataError(MidlevelError):
    """The dataset or one of its files is missing, unreadable or inconsistent."""


class CacheError(MidlevelError):
    """The feature cache is absent, incomplete, locked or built with other settings."""


class BackboneUnavailable(MidlevelError):
    """The backbone or its weights cannot be had on this machine."""


class ConfigError(MidlevelError, ValueError):
    """A setting out of its range, named as the library calls it (`lse_r`); `{name}` in the
    problem names another setting. `named(flag)` writes each name as the CLI spells it."""

    def __init__(self, setting: str, value, problem: str):
        self.setting, self.value, self.problem = setting, value, problem
        super().__init__(self.named(lambda name: name))

    def named(self, flag) -> str:
        """The message with every setting name written by `flag(name)` (e.g. "--lse-r")."""
        problem = re.sub(r"\{(\w+)\}", lambda m: flag(m[1]), self.problem)
        return f"{flag(self.setting)} {self.value!r}: {problem}"
