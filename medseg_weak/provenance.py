"""What produced a result: package versions, seed, git commit; stored next to every output."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from medseg_weak.io_utils import atomic_write_text

PACKAGES = (
    "medseg-weak",
    "torch",
    "torchvision",
    "lightning",
    "monai",
    "grad-cam",
    "segmentation-models-pytorch",
    "timm",
    "pydicom",
    "pylibjpeg",
    "scikit-image",
    "torchmetrics",
    "numpy",
)


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree, or None outside a git checkout (e.g. an installed wheel)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_info(seed: int | None = None) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "versions": versions,
    }


def write_environment(path: str | Path, seed: int | None = None, **extra: Any) -> Path:
    info = {**environment_info(seed), **extra}
    return atomic_write_text(Path(path), json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
