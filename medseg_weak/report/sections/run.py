"""The run section: how the run was made and how to make it again (config, seed, versions, commit,
stage timings, the command)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from medseg_weak.report.context import ReportContext
from medseg_weak.report.views import Code, Facts, Section, plain_table


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else {}


def reproduce_command(ctx: ReportContext) -> str:
    root = ctx.run.root
    args = ["medseg-weak", "pipeline", "--config", str(root / "config.yaml"), "--run-dir", str(root)]
    if ctx.run.held_out_domains() is not None:
        args.append("--leave-one-out")
    return shlex.join(args)


def build(ctx: ReportContext) -> Section | None:
    root = ctx.run.root
    env = _json(root / "env.json")
    facts = [
        ("run directory", str(root.resolve())),
        ("seed", str(env.get("seed", ctx.cfg.seed))),
        ("git commit", str(env.get("git_commit") or "unknown (not a git checkout)")),
        ("python", str(env.get("python", "?"))),
        ("platform", str(env.get("platform", "?"))),
        ("stages shown", ", ".join(ctx.stages) or "none"),
    ]
    blocks: list[Any] = [Facts(facts), Code("command to reproduce", reproduce_command(ctx))]
    timings = _json(root / "timings.json")
    flat = [(k, v) for k, v in timings.items() if isinstance(v, int | float)]
    if flat:
        rows = [*flat, ("total", round(sum(v for _, v in flat), 2))]
        blocks.append(plain_table("stage timings (seconds)", ["stage", "seconds"], rows))
    folds = {k: v for k, v in timings.items() if isinstance(v, dict)}
    if folds:  # leave-one-out: a row per held-out hospital
        stages = list(dict.fromkeys(s for v in folds.values() for s in v))
        rows = [[d, *(v.get(s) for s in stages)] for d, v in folds.items()]
        blocks.append(plain_table("stage timings per fold (seconds)", ["held out", *stages], rows))
    versions = env.get("versions", {})
    if versions:
        blocks.append(plain_table("package versions", ["package", "version"], sorted(versions.items())))
    config = root / "config.yaml"
    if config.is_file():
        blocks.append(Code("resolved config (config.yaml)", config.read_text(), folded=True))
    return Section("run", "Run", blocks)
