"""The import contract: no module imports a higher layer (also not lazily inside a function), and
`medseg-weak --help` / `--version` run without importing torch.

Layers, bottom to top (a module may import its own layer and lower ones):
  0 base: errors, registry, io_utils, config, progress, provenance, tables, rundir, stages,
          stage_trainer, core/ (stages.py is the Stage protocol and the runner: framework that stage
          packages build on, so it sits below them; the plans that name stages are pipeline.py)
  1 data   2 classify   3 explain   4 segment   5 evaluate
  6 the validation stages (quality, interpret, invariance, report): above the chain they validate
  7 pipeline, api, the package __init__   8 cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg_weak"
BASE = {"errors", "registry", "io_utils", "config", "progress", "provenance", "tables", "rundir", "stages",
        "stage_trainer", "core", "lock", "logs", "lazy"}  # fmt: skip
LAYERS = {
    "data": 1,
    "classify": 2,
    "explain": 3,
    "segment": 4,
    "evaluate": 5,
    "quality": 6,
    "interpret": 6,
    "invariance": 6,
    "report": 6,
    "pipeline": 7,
    "dg_chain": 7,
    "api": 7,
    "__init__": 7,
    "cli": 8,
}


def layer_of(module: str) -> int:
    """``medseg_weak.a.b`` -> the layer of its top-level part ``a``."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in BASE:
        return 0
    if top not in LAYERS:
        raise AssertionError(f"{module}: not assigned to a layer in tests/test_layers.py")
    return LAYERS[top]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:  # a sub-package: its name; the top: medseg_weak.__init__
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every ``medseg_weak`` module imported anywhere in the file (top level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("medseg_weak")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("medseg_weak")
        ):
            found.append((node.lineno, node.module))
    return found


def test_no_module_imports_a_higher_layer():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        own = layer_of(name)
        for line, target in imports(path):
            if target == "medseg_weak":
                target = "medseg_weak.__init__"
            if layer_of(target) > own:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_contract_sees_an_upward_import():
    # The checker itself: a lower layer importing a higher one is reported.
    assert layer_of("medseg_weak.explain.stage") < layer_of("medseg_weak.pipeline")
    assert layer_of("medseg_weak.core.overlap") < layer_of("medseg_weak.data.io")
    with pytest.raises(AssertionError, match="not assigned"):
        layer_of("medseg_weak.newpackage.x")


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    code = (
        "import sys\n"
        "from medseg_weak.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'monai', 'timm') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_the_package_api_does_not_import_torch():
    code = "import sys, medseg_weak as mw; mw.config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
