"""The layering contract: lower layers never import higher ones.

    core (errors, phase_table, plane, io, register, labels, ...)  <-  measure, nn, phantom
        <-  figures, report  <-  pipeline, viewer  <-  cli

Checked by parsing every module's imports (including imports inside functions), so a
violation fails ``make test`` wherever it hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = {  # first dotted component below mineral3d -> layer; anything not listed is core (0)
    "measure": 1, "nn": 1, "phantom": 1,
    "figures": 2, "report": 2,
    "pipeline": 3, "viewer": 3,
    "cli": 4,
}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every mineral3d import in src/."""
    out = []
    for path in sorted((SRC / "mineral3d").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mineral3d"):
                names = [node.module]
                if node.module == "mineral3d":  # from mineral3d import pipeline
                    names = [f"mineral3d.{a.name}" for a in node.names]
                out += [(module, n, node.lineno) for n in names]
            elif isinstance(node, ast.Import):
                out += [(module, a.name, node.lineno) for a in node.names if a.name.startswith("mineral3d")]
    return out


def test_the_parser_sees_the_imports():
    found = imports()
    assert any(a == "mineral3d.register" and b == "mineral3d.plane" for a, b, _ in found)
    assert any(a == "mineral3d.pipeline.run" and b == "mineral3d.nn.runtime" for a, b, _ in found)  # in a function
    assert any(a.startswith("mineral3d.cli") and b.startswith("mineral3d.pipeline") for a, b, _ in found)
    assert layer("mineral3d.pipeline.run") == 3 and layer("mineral3d.plane") == 0 and layer("mineral3d") == 0


def test_no_module_imports_a_higher_layer():
    bad = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)}) at line {line}"
           for a, b, line in imports() if layer(b) > layer(a)]
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_measure_nn_and_phantom_do_not_import_each_other():
    bad = [f"{a} imports {b}" for a, b, _ in imports()
           if layer(a) == layer(b) == 1 and a.split(".")[1] != b.split(".")[1]]
    assert not bad, "\n".join(bad)


def test_cli_modules_stay_thin():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (SRC / "mineral3d" / "cli").glob("*.py")}
    assert len(sizes) >= 5
    assert max(sizes.values()) <= 300, sizes


def test_core_errors_name_parameters_not_command_line_options():
    """Below the CLI, errors name a parameter (ParameterError); the CLI turns it into --option."""
    import re
    bad = []
    for path in sorted((SRC / "mineral3d").rglob("*.py")):
        if "cli" in path.relative_to(SRC / "mineral3d").parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r'Error\(\s*"--', line):
                bad.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_parameter_errors_read_as_options_on_the_command_line(capsys):
    import pytest

    from mineral3d.cli import main
    from mineral3d.errors import ParameterError
    from mineral3d.phantom import PhantomConfig
    with pytest.raises(ParameterError, match="^voxel_um: must be positive"):
        PhantomConfig(voxel_um=-1)
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "/nonexistent/x", "--voxel-um", "-1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --voxel-um: must be positive, got -1.0"
