"""The ``mineral3d`` command line: a thin layer over the library.

Every user error is an :class:`~mineral3d.errors.InputError`; it is printed as one line
(``error: <file>: <problem>``) and the command exits with code 2, never a traceback.

Each command lives in the module of its stage (``cli/sample.py``, ``phase_table.py``,
``particles.py``, ``measure.py``, ``kernel.py``, ``run.py``); this module registers them, in
the order ``mineral3d --help`` lists them, and translates errors to exit codes.
"""

from __future__ import annotations

import sys

from mineral3d.cli import kernel, measure, particles, phases, run, sample, view
from mineral3d.cli.app import app

COMMANDS = (  # (command name or None for the function's name, function)
    (None, sample.phantom),
    (None, sample.info),
    (None, measure.measure),
    (None, phases.register),
    (None, phases.train),
    (None, phases.segment),
    (None, particles.particles),
    (None, measure.validate),
    ("config", run.config_cmd),
    ("run", run.run_cmd),
    ("apply", run.apply_cmd),
    ("report", run.report_cmd),
    (None, sample.convert),
    ("import-map", sample.import_map),
    ("measure-map", measure.measure_map_cmd),
    ("kernel", kernel.kernel_cmd),
    (None, kernel.correct),
    (None, view.view),
    ("suggest-section", view.suggest_section),
)

for _name, _fn in COMMANDS:
    app.command(_name)(_fn)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from mineral3d.errors import MineralError, OutOfMemory, ParameterError

    try:
        app(args=argv)
    except ParameterError as exc:  # a core function's parameter: named as the command's option
        print(f"error: {exc.as_option()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except MineralError as exc:  # InputError (2), RegistrationError (3), OutOfMemory (1)
        print(f"error: {exc.prefix}{exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except MemoryError:
        exc = OutOfMemory(None)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
