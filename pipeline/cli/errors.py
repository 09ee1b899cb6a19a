"""What a user's mistake becomes on the command line: one red line and exit code 2, never a
traceback; a setting out of range is named by its flag (the library names the setting)."""

from __future__ import annotations

import errno
import os
import sys

import click

from pipeline.errors import ConfigError, MidlevelError

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)
# a path the user gave that the system cannot use as one (a name past 255 bytes, a file
# where a folder must be...)
PATH_ERRORS = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP)


class UserError(click.ClickException):
    """One red line and exit code 2: bad input is the user's to fix, not a crash."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.secho(f"error: {self.message}", fg="red", err=True)


class Cli(click.Group):
    """The group: a user's mistake (bad input, a full disk, Ctrl-C) ends in one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a flag's value click cannot parse: one line too
            if exc.ctx is None or exc.ctx.command is self:
                raise
            where = f"pipeline {exc.ctx.info_name}"
            raise UserError(f"{exc.format_message()} ({where} --help lists the options)") from None
        except ConfigError as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            raise UserError(exc.named(lambda name: flag(command, name))) from None
        except MidlevelError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # shards write safely on their own; this covers every other file
            if exc.errno in PATH_ERRORS:
                raise UserError(
                    f"{str(exc.filename)[:120]}: {os.strerror(exc.errno)}; give another path"
                ) from None
            if exc.errno not in DISK_ERRORS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(
                f"{where}cannot write ({os.strerror(exc.errno)}); free space or fix the permissions "
                "and rerun the same command: finished work (shards, heads, sweep rows) is kept"
            ) from None
        except KeyboardInterrupt:
            click.secho(
                "interrupted: finished work (shards, sweep rows) is kept; rerun the same command to resume",
                err=True,
            )
            sys.exit(130)


def flag(command: click.Command | None, setting: str) -> str:
    """How the command line spells a setting: its option's long flag (--grid for grid_kind)."""
    for param in command.params if command else ():
        if param.name == setting and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return "--" + setting.replace("_", "-")
