"""What every training stage's Lightning Trainer shares: checkpoints, early stopping, loggers, quiet.

``last.ckpt`` is written after EVERY epoch by its own checkpoint callback: since Lightning 2.6 a
``save_last=True`` on the monitored checkpoint is only refreshed in epochs whose score improved, so a
run killed after a non-improving epoch would resume from an older epoch (and a stage's "last" weights
would not be the last epoch's).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg_weak.io_utils import atomic_write

log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Silence Lightning chatter that is expected here: stage folders hold stage.json before the
    first checkpoint, small demo epochs have few batches, and the logger tip is advertising."""
    for pattern in (
        r"Checkpoint directory .* exists and is not empty",
        r"The number of training batches .* is smaller than the logging interval",
        r".*isinstance\(treespec, LeafSpec\)",
        r"The '(val|test|train)_dataloader' does not have many workers",
        # per-hospital AUROC on a small split where a class is absent: reported as 0, not an error
        r"No (positive|negative) samples in targets",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def stage_callbacks(out: Path, monitor: str, mode: str, patience: int = 0) -> list[L.Callback]:
    """``best.ckpt`` on ``monitor`` (first, so it is ``trainer.checkpoint_callback``), ``last.ckpt``
    after every epoch (the resume point), and early stopping when ``patience`` > 0."""
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=out, filename="best", monitor=monitor, mode=mode, enable_version_counter=False
        ),
        ModelCheckpoint(
            dirpath=out, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
        ),
    ]
    if patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    return callbacks


def stage_loggers(out: Path) -> list[Logger]:
    """CSV (``logs/metrics.csv``) and TensorBoard (``tensorboard/``) logs in the stage folder."""
    return [CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed into place: a process killed while saving
    leaves the previous checkpoint whole, never a truncated one that a rerun would try to resume."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options: object = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: torch.save(checkpoint, tmp))


@dataclass(frozen=True)
class Fitted:
    best: Path  # the best checkpoint (by the first ModelCheckpoint's monitor; last.ckpt without one)
    score: float | None
    resumed_from_epoch: int | None  # epochs an interrupted run had finished; None for a fresh start


def resume_point(out: Path) -> tuple[Path | None, int | None]:
    """``out/last.ckpt`` and its finished epochs if it can be resumed; an unreadable one (a disk error,
    a file from elsewhere) is set aside as ``last.ckpt.unreadable`` with a warning, and training
    starts over rather than fail or resume from garbage."""
    last = out / "last.ckpt"
    if not last.is_file():
        return None, None
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
        return last, int(state["epoch"]) + 1
    except Exception as err:  # any failure to read means "cannot resume from it"
        aside = last.with_name("last.ckpt.unreadable")
        last.replace(aside)
        log.warning(
            "%s cannot be read (%s: %s); moved to %s, training starts over",
            last,
            type(err).__name__,
            err,
            aside,
        )
        return None, None


def fit_resumable(trainer: L.Trainer, module: L.LightningModule, out: Path, **data: object) -> Fitted:
    """Fit, continuing from ``out/last.ckpt`` when an earlier run was interrupted; return the best
    checkpoint and its score. The one place every training stage resumes and picks its best weights."""
    last, epochs_done = resume_point(out)
    if last is not None:
        log.info("%s: resuming after epoch %d", out, epochs_done)
    trainer.fit(module, ckpt_path=str(last) if last else None, **data)  # type: ignore[arg-type]
    checkpoint = trainer.checkpoint_callback
    best = (
        Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else out / "last.ckpt"
    )
    score = checkpoint.best_model_score if checkpoint else None
    return Fitted(best, float(score) if score is not None else None, epochs_done)


def stage_trainer(out: Path, section: Any, progress: bool = True, **options: Any) -> L.Trainer:
    """The Trainer every training stage uses, from its config section (``epochs``, ``accelerator``,
    ``precision``, ``monitor``, ``monitor_mode``, ``patience``): best and last checkpoints written
    atomically in ``out``, optional early stopping, CSV and TensorBoard logs. ``options`` add or
    override Trainer arguments (``devices``, ``strategy``, ``deterministic``)."""
    quiet_lightning()
    settings: dict[str, Any] = {
        "default_root_dir": out,
        "plugins": [AtomicCheckpointIO()],
        "max_epochs": section.epochs,
        "accelerator": section.accelerator,
        "devices": "auto",
        "precision": section.precision,
        "callbacks": stage_callbacks(out, section.monitor, section.monitor_mode, section.patience),
        "logger": stage_loggers(out),
        "log_every_n_steps": 1,
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **options,
    }
    return L.Trainer(**settings)
