"""What every command module shares: the typer app, the consoles, progress bars, option parsers.

Every user error is an :class:`~mineral3d.errors.InputError`; it is printed as one line
(``error: <file>: <problem>``) and the command exits with code 2, never a traceback.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mineral3d.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Correlative 3D mineralogy: CT volumes + SEM-EDS mineral maps -> 3D phases, "
                       "particles and liberation.")
err = Console(stderr=True)
out = Console()


class StageProgress:
    """Turns (stage, done, total) callbacks into rich progress bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1))
        self.progress.update(self.tasks[stage], completed=done, total=max(total, 1))


def progress_bars() -> Progress:
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """Integers separated by commas or x (e.g. "64,64,64" or "64x64x64"); ``what`` names the option."""
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise InputError(what, f"expected integers separated by commas, got {text!r}") from None


SCHEDULER_OPTION = typer.Option(None, "--scheduler", help="Where volume steps run: threads (default: this process), "
                                "processes, or a dask.distributed scheduler address (tcp://host:8786) whose workers "
                                "share OUT's file system.")
WORKERS_OPTION = typer.Option(None, "--workers", help="Start a local dask cluster of this many single-threaded worker "
                              "processes for the volume steps.")
