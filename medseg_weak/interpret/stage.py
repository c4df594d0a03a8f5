"""The interpret stage: faithfulness, localisation and sanity checks of the CAM methods of a trained
model (the run's classifier or quality model, or any checkpoint of the project) on test images, into
``<run>/interpret/`` (files: :mod:`medseg_weak.interpret.outputs`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.data.kinds import get_kind
from medseg_weak.errors import ConfigError, InputError, RegistryError
from medseg_weak.stages import DataSummary, Stage, StageContext, StageResult, files_digest, stage_config

INTERPRET = "interpret"


def model_stage(cfg: Config, choice: str) -> str:
    """The stage whose model a validation stage looks at: ``choice``, or for ``auto`` the data kind's
    main model (the quality model for fundus photographs, the classifier for mammograms)."""
    if choice != "auto":
        return choice
    return "quality" if get_kind(cfg.data.kind).chain == "quality" else "classifier"


def test_sample(ctx: StageContext, grader: Any, n: int, manifest: Path | None = None) -> Any:
    """``n`` test images of the run (all images where none is marked test; all of ``manifest`` when
    given) spread over hospitals and classes, preprocessed as ``grader``'s model expects: a
    :class:`medseg_weak.data.sample.Sample`."""
    from medseg_weak.data.dataset import PreprocessedDataset
    from medseg_weak.data.manifest import load_manifest
    from medseg_weak.data.prepare import open_cache
    from medseg_weak.data.sample import load_sample, spread

    size = grader.image_size or ctx.cfg.data.image_size
    source = load_manifest(manifest) if manifest is not None else ctx.manifest
    records = [r for r in source.records if r.split == "test" or manifest is not None] or list(source.records)
    chosen = source.subset(spread(records, n, ctx.cfg.seed))
    dataset = PreprocessedDataset(chosen, grader.preprocess, size, open_cache(ctx.cfg, ctx.run))
    sample = load_sample(dataset, grader.in_channels)
    if len(sample.ids) < 2:
        raise InputError(chosen.source, f"{ctx.name} needs at least 2 test images; found {len(sample.ids)}")
    return sample


@dataclass(frozen=True)
class InterpretStageResult(StageResult):
    headline: dict[str, Any] = field(default_factory=dict)  # metrics.json

    def summary(self) -> dict[str, Any]:
        return {
            "flagged_no_better_than_random": self.headline.get("flagged_no_better_than_random"),
            "sanity_failures": self.headline.get("sanity_failures"),
        }

    def key_files(self) -> list[Path]:
        return [self.folder / "metrics.json"]


class InterpretStage(Stage):
    """``checkpoint``: explain that model instead of the run's own (any kind ``predict`` knows);
    ``manifest``: its images (all of them) instead of the run's test split; ``random_labels``: a
    model trained on shuffled labels, for the data-randomisation test."""

    name = INTERPRET

    def __init__(
        self,
        cfg: Config,
        checkpoint: Path | None = None,
        manifest: Path | None = None,
        random_labels: Path | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.manifest = manifest
        self.random_labels = random_labels
        self.model_stage = model_stage(cfg, cfg.interpret.model)
        self.needs = () if checkpoint else (self.model_stage,)

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        relevant = stage_config(cfg, "data", "interpret")
        given = [p for p in (self.checkpoint, self.manifest, self.random_labels) if p is not None]
        if given:
            relevant["checkpoints"] = files_digest(given)
        return relevant

    def validate(self, cfg: Config, data: DataSummary) -> None:
        from medseg_weak.explain.cam_methods import CAM_METHODS
        from medseg_weak.interpret.faithfulness import REPLACEMENTS

        for key, registry, names in (
            ("interpret.methods", CAM_METHODS, cfg.interpret.methods),
            ("interpret.replacement", REPLACEMENTS, (cfg.interpret.replacement,)),
        ):
            for name in names:
                try:
                    registry.get(name)
                except RegistryError as err:
                    raise ConfigError(f"'{key}': {err}") from None
        for path in (self.checkpoint, self.random_labels, self.manifest):
            if path is not None and not path.is_file():
                raise InputError(path, "file not found")

    def run(self, ctx: StageContext) -> InterpretStageResult:
        from medseg_weak.interpret.measure import interpret_classifier
        from medseg_weak.interpret.outputs import write_interpret_outputs
        from medseg_weak.interpret.road import DEFAULT_PERCENTILES
        from medseg_weak.quality.predict import load_grader

        cfg, icfg = ctx.cfg, ctx.cfg.interpret
        source = self.checkpoint or ctx.best_checkpoint(self.model_stage)
        grader = load_grader(source)
        sample = test_sample(ctx, grader, icfg.images, self.manifest)
        unknown = sorted(set(sample.labels) - set(grader.classes))
        if icfg.target == "label" and unknown:
            raise InputError(source, f"the model has no class {', '.join(unknown)} (its: {grader.classes})")
        targets = [grader.classes.index(v) for v in sample.labels] if icfg.target == "label" else None
        random_model = load_grader(self.random_labels).model if self.random_labels else None
        result = interpret_classifier(
            grader.model,
            sample.images,
            sample.labels,
            masks=sample.masks,
            regions=sample.regions,
            domains=sample.domains,
            methods=icfg.methods,
            steps=icfg.steps,
            batch_size=icfg.batch_size,
            targets=targets,
            ids=sample.ids,
            replacement=icfg.replacement,
            road_percentiles=DEFAULT_PERCENTILES if icfg.road else (),
            sanity=icfg.sanity,
            random_label_model=random_model,
            seed=cfg.seed,
            progress=ctx.progress,
        )
        write_interpret_outputs(result, ctx.out, cfg.seed, icfg.gallery)
        return self.load(ctx)

    def load(self, ctx: StageContext) -> InterpretStageResult:
        path = ctx.out / "metrics.json"
        if not path.is_file():
            raise InputError(ctx.out, "holds no metrics.json; rerun the interpret stage")
        return InterpretStageResult(ctx.out, headline=json.loads(path.read_text()))
