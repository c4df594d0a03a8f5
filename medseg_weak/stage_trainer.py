"""What every training stage's Lightning Trainer shares: checkpoints, early stopping, loggers, quiet.

``last.ckpt`` is written after EVERY epoch by its own checkpoint callback: since Lightning 2.6 a
``save_last=True`` on the monitored checkpoint is only refreshed in epochs whose score improved, so a
run killed after a non-improving epoch would resume from an older epoch (and a stage's "last" weights
would not be the last epoch's).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger


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


def fit_resumable(
    trainer: L.Trainer, module: L.LightningModule, out: Path, **data: object
) -> tuple[Path, float | None]:
    """Fit, continuing from ``out/last.ckpt`` when an earlier run was interrupted; return the best
    checkpoint (by the first ModelCheckpoint's monitor; last.ckpt when nothing was monitored) and its
    score. The one place every training stage resumes and picks its best weights."""
    last = out / "last.ckpt"
    trainer.fit(module, ckpt_path=str(last) if last.is_file() else None, **data)  # type: ignore[arg-type]
    checkpoint = trainer.checkpoint_callback
    best = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else last
    score = checkpoint.best_model_score if checkpoint else None
    return best, (float(score) if score is not None else None)
