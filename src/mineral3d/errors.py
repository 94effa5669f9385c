"""Errors meant for users.

Every problem with the user's input is an :class:`InputError` whose message is one
line that names the file and the problem. The CLI prints it and exits with
:attr:`InputError.exit_code` (2), never a traceback.
"""

from __future__ import annotations

import os


class MineralError(Exception):
    """Base of the errors meant for users: the CLI prints ``error: {prefix}{message}`` on one
    line and exits with :attr:`exit_code`."""

    exit_code = 1
    prefix = ""


class InputError(MineralError):
    """Bad user input: a missing or malformed file, an inconsistent sample.

    Parameters
    ----------
    source : str or path-like or None
        The file (or setting) the problem is in; prefixed to the message.
    problem : str
        What is wrong, and where possible what to do about it.
    """

    exit_code = 2

    def __init__(self, source: str | os.PathLike | None, problem: str) -> None:
        self.source = None if source is None else os.fspath(source)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.source is None else f"{self.source}: {self.problem}")


class ParameterError(InputError):
    """A bad value of a function parameter or config field, named as in Python (``voxel_um``).

    Core modules raise it naming their own parameter; the CLI names the option instead
    (:meth:`as_option`: ``--voxel-um``), so no core module knows the command line.
    """

    def __init__(self, parameter: str, problem: str) -> None:
        self.parameter = parameter
        super().__init__(parameter, problem)

    def as_option(self) -> str:
        """The message as the command line says it: ``--<parameter-with-dashes>: <problem>``."""
        return f"--{self.parameter.replace('_', '-')}: {self.problem}"


def read_text(path: str | os.PathLike, *, what: str) -> str:
    """A user's text file (UTF-8, BOM allowed); missing or unreadable is an InputError naming it."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the {what} ({exc})") from None


class OutOfMemory(MineralError, MemoryError):
    """A step ran out of memory; the message names the step and what to try.

    Raised by :func:`mineral3d.pipeline.run.run` around each step (``step``), and turned by
    the CLI into one line and exit code :attr:`exit_code` (1: not a problem of the input).
    """

    exit_code = 1

    def __init__(self, step: str | None) -> None:
        self.step = step
        where = f"out of memory in the {step} step" if step else "out of memory"
        super().__init__(
            f"{where}: try more, smaller processes (--workers N), a smaller segmentation block "
            "(segment.block in the run config, e.g. [64, 128, 128]), fewer bootstrap draws (measure.n_boot), or a "
            "machine with more memory; finished steps are kept and a rerun resumes")
