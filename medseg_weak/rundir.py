"""The run directory: its layout, provenance files and per-stage bookkeeping (skip, resume, refuse).

Each stage folder holds ``stage.json`` with the part of the config that determines its outputs. A
stage whose ``stage.json`` says complete and matches is skipped; one that matches but is incomplete
resumes; one made by a different config is refused (``--force`` clears it), so outputs of two
configs never mix in one folder. A leave-one-out run holds one complete run per held-out hospital in
``folds/<hospital>/`` and lists them in ``folds.json``.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg_weak.config import Config, dump_config, to_dict
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.provenance import write_environment


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ. A key one side lacks (a setting added to medseg-weak after the
    folder was made) matches while the other side holds the setting's default, which is what the
    older version did: upgrading must not make every existing run "made by a different config"."""
    a, b = flatten(old), flatten(new)
    defaults = _defaults()
    missing = object()
    return sorted(
        k for k in set(a) | set(b) if a.get(k, defaults.get(k, missing)) != b.get(k, defaults.get(k, missing))
    )


@functools.cache
def _defaults() -> dict[str, Any]:
    return flatten(to_dict(Config()))


FOLDS = "folds"
FOLDS_FILE = "folds.json"  # {"held_out": [hospital, ...]}: marks a leave-one-out run and its folds


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def for_config(cls, cfg: Config, root: str | Path | None = None) -> RunDir:
        return cls(Path(root) if root is not None else Path(cfg.runs_dir) / cfg.name)

    def stage(self, name: str) -> Path:
        return self.root / name

    def fold(self, domain: str) -> RunDir:
        """The run of the leave-one-out fold that holds ``domain`` out."""
        return RunDir(self.root / FOLDS / domain)

    def held_out_domains(self) -> list[str] | None:
        """The hospitals of a leave-one-out run, in fold order; None for a single run."""
        path = self.root / FOLDS_FILE
        if not path.is_file():
            return None
        try:
            return list(json.loads(path.read_text())["held_out"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(path, f"not a folds file written by medseg-weak ({err})") from None

    def read_state(self, name: str) -> dict[str, Any] | None:
        """``name``'s stage.json (None when there is none); a broken or hand-edited one is an error."""
        path = self.stage(name) / "stage.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except ValueError as err:
            raise InputError(
                path, f"is not valid JSON ({err}); delete the stage folder or rerun with --force"
            ) from None
        if not isinstance(state, dict) or not isinstance(state.get("config", {}), dict):
            raise InputError(path, "is not a stage record written by medseg-weak; rerun with --force")
        return state

    def write_provenance(self, cfg: Config, force: bool = False, allow: tuple[str, ...] = ()) -> None:
        """Store the resolved config, versions and seed; refuse a run made by another config.

        Checked before any stage runs, so config.yaml always describes what the folder holds.
        ``allow``: sections a stage verb may change in an existing run (``train-segmenter --set
        segmenter.epochs=20``); the stage's own fingerprint still refuses a folder made otherwise.
        """
        path = self.root / "config.yaml"
        if path.is_file() and not force:
            old = yaml.safe_load(path.read_text()) or {}
            diff = [
                k
                for k in config_differences(old, to_dict(cfg))
                if k != "runs_dir" and not any(k == a or k.startswith(a + ".") for a in allow)
            ]
            if diff:
                raise different_config(self.root, diff, "use another run directory or --force to redo them")
        self.root.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.root / "config.yaml")
        write_environment(self.root / "env.json", seed=cfg.seed)

    def begin_stage(
        self, name: str, relevant: dict[str, Any], force: bool = False, redo: bool = False
    ) -> bool:
        """Prepare stage folder ``name``; return True if it is already complete (skip it).

        Raises :class:`ConfigError` if the folder was made by a different config, unless ``force``;
        ``redo`` discards the folder whatever it holds.
        """
        folder = self.stage(name)
        if redo and folder.exists():
            shutil.rmtree(folder)
        try:
            state = self.read_state(name)
        except InputError:
            if not force:
                raise
            state = None
            shutil.rmtree(folder)
        if state is not None:
            diff = config_differences(state.get("config", {}), relevant)
            if diff and not force:
                raise different_config(folder, diff, "use another run name or --force to discard it")
            if diff:
                shutil.rmtree(folder)
            elif state.get("complete"):
                return True
        elif folder.exists() and any(folder.iterdir()):
            if not force:
                raise ConfigError(
                    f"{folder}: exists without stage.json (not made by medseg-weak?); use --force"
                )
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._write_state(name, relevant, complete=False)
        return False

    def complete_stage(self, name: str, relevant: dict[str, Any], **summary: Any) -> None:
        self._write_state(name, relevant, complete=True, **summary)

    def _write_state(self, name: str, relevant: dict[str, Any], complete: bool, **summary: Any) -> None:
        state = {"config": relevant, "complete": complete, **summary}
        self.stage(name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.stage(name) / "stage.json", json.dumps(state, indent=2, default=str) + "\n")


def different_config(where: Path, diff: list[str], hint: str) -> ConfigError:
    """The one message for "this folder was made by another config", naming the differing keys."""
    shown = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
    return ConfigError(f"{where}: made by a different config (differs in {shown}); {hint}")
