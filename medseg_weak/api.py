"""The Python API: one typed function per stage, for notebooks and scripts (``import medseg_weak as mw``).

Each function takes a config (a :class:`~medseg_weak.config.Config`, a YAML path, or None for the
defaults) plus ``--set``-style overrides, runs its stage through the one runner (validation of every
stage first, skip / resume / refuse, provenance), and returns a typed result. The CLI verbs are thin
calls of these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg_weak.config import Config, load_config
from medseg_weak.errors import InputError
from medseg_weak.rundir import RunDir
from medseg_weak.stages import Stage, StageResult

if TYPE_CHECKING:
    from medseg_weak.classify.stage import ClassifierResult
    from medseg_weak.evaluate.stage import EvalResult
    from medseg_weak.explain.stage import CamsResult
    from medseg_weak.interpret.stage import InterpretStageResult
    from medseg_weak.invariance.matrix import MatrixResult
    from medseg_weak.invariance.stage import InvarianceStageResult
    from medseg_weak.pipeline import RunOutcome
    from medseg_weak.quality.predict import Predictions
    from medseg_weak.quality.stage import QualityResult
    from medseg_weak.report.stage import ReportResult
    from medseg_weak.segment.stage import SegmenterResult
    from medseg_weak.tables import Table

ConfigLike = Config | str | Path | None


def config(cfg: ConfigLike = None, overrides: Sequence[str] = ()) -> Config:
    """A Config from a Config (overrides applied on top), a YAML path, or None (the defaults)."""
    if isinstance(cfg, Config):
        if not overrides:
            return cfg
        from medseg_weak.config import apply_override, from_dict, to_dict

        raw = to_dict(cfg)
        for override in overrides:
            apply_override(raw, override)
        return from_dict(Config, raw)
    return load_config(cfg, overrides)


def run_config(run: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The config a run directory was made with (overrides apply on top)."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise InputError(run, "not a run directory (no config.yaml); run medseg-weak pipeline first")
    return load_config(path, overrides)


def _with(cfg: Config, test_domain: str | None) -> Config:
    return cfg if test_domain is None else config(cfg, [f"data.test_domain={test_domain}"])


def _run(cfg: Config, run_dir: str | Path | None) -> RunDir:
    return RunDir.for_config(cfg, run_dir)


def train_classifier(
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    test_domain: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> ClassifierResult:
    """Train the density / quality classifier into ``<run>/classifier/``."""
    from medseg_weak.classify.stage import ClassifierStage

    return _train(ClassifierStage(), cfg, overrides, run_dir, test_domain, force, progress)  # type: ignore[return-value]


def train_quality(
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    test_domain: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> QualityResult:
    """Train the fundus quality model (Good / Usable / Reject + where degraded) into ``<run>/quality/``."""
    from medseg_weak.quality.stage import QualityStage

    return _train(QualityStage(), cfg, overrides, run_dir, test_domain, force, progress)  # type: ignore[return-value]


def _train(
    stage: Stage,
    cfg: ConfigLike,
    overrides: Sequence[str],
    run_dir: str | Path | None,
    test_domain: str | None,
    force: bool,
    progress: bool,
) -> StageResult:
    """One model-training stage in its run directory (made from the config, or ``run_dir``)."""
    from medseg_weak.pipeline import run_plan

    c = _with(config(cfg, overrides), test_domain)
    outcome = run_plan(c, _run(c, run_dir), [stage], force=force, progress=progress)
    return outcome.results[stage.name]


def _validation_run(
    run: str | Path, cfg: ConfigLike, overrides: Sequence[str], manifest: str | Path | None
) -> tuple[Config, RunDir]:
    """The config of a validation verb: the run's own (its data untouched: other images come as
    ``manifest``), or for a new run directory ``cfg`` with ``manifest`` as its data."""
    if (Path(run) / "config.yaml").is_file():
        return run_config(run, overrides), RunDir(Path(run))
    extra = [f"data.manifest={manifest}"] if manifest else []
    return config(cfg, [*overrides, *extra]), RunDir(Path(run))


def interpret(
    run: str | Path,
    overrides: Sequence[str] = (),
    *,
    cfg: ConfigLike = None,
    checkpoint: str | Path | None = None,
    manifest: str | Path | None = None,
    random_labels: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> InterpretStageResult:
    """Faithfulness, localisation and sanity checks of the CAM methods (``interpret.*``) into
    ``<run>/interpret/``: of the run's own model, or of ``checkpoint`` on ``manifest``'s images."""
    from medseg_weak.interpret.stage import InterpretStage
    from medseg_weak.pipeline import run_plan

    c, root = _validation_run(run, cfg, overrides, manifest)
    paths = [Path(p) if p else None for p in (checkpoint, manifest, random_labels)]
    stage = InterpretStage(c, *paths)
    outcome = run_plan(c, root, [stage], force=force, progress=progress, allow=("interpret",))
    return outcome.results["interpret"]  # type: ignore[return-value]


def invariance(
    run: str | Path,
    overrides: Sequence[str] = (),
    *,
    cfg: ConfigLike = None,
    checkpoint: str | Path | None = None,
    manifest: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> InvarianceStageResult:
    """Per-layer invariance to ``invariance.transforms`` (pooled and per hospital) and CAM
    equivariance into ``<run>/invariance/``: of the run's own model, or of ``checkpoint``."""
    from medseg_weak.invariance.stage import InvarianceStage
    from medseg_weak.pipeline import run_plan

    c, root = _validation_run(run, cfg, overrides, manifest)
    paths = [Path(p) if p else None for p in (checkpoint, manifest)]
    stage = InvarianceStage(c, *paths)
    outcome = run_plan(c, root, [stage], force=force, progress=progress, allow=("invariance",))
    return outcome.results["invariance"]  # type: ignore[return-value]


def invariance_matrix(
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    test_domain: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> MatrixResult:
    """The seed study's table: a classifier per training augmentation (``invariance.matrix_train``),
    each measured under every evaluation transformation, into ``<run>/matrix/``; finished rows and
    cells are reused."""
    from medseg_weak.invariance.matrix import run_invariance_matrix

    c = _with(config(cfg, overrides), test_domain)
    return run_invariance_matrix(c, _run(c, run_dir), force=force, progress=progress)


def dg_benchmark(
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    recipes: Sequence[str] = ("erm", "agr_sum", "agr_rand", "pcgrad"),
    seeds: int = 3,
    domains: Sequence[str] | None = None,
    selection: str = "training_domain",
    metric: str = "accuracy",
    chain: bool = False,
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> Table:
    """Leave-one-hospital-out: a classifier per held-out hospital x recipe (``erm``, ``aug``,
    ``pcgrad``, ``adabn``, ``aug+pcgrad+adabn``, ...) x seed under ``<run>/dg/``; finished runs are
    reused. Returns the ``metric`` table (recipes x held-out hospitals, mean ± SE over seeds) under
    ``selection``; ``dg/summary.md`` holds every selection rule x metric.

    ``chain``: the whole chain per run instead (classifier, CAMs, UNet on CAMs, oracle) under
    ``<run>/chain/``; returns the held-out Dice table."""
    from medseg_weak.classify.dg_benchmark import check_arguments, run_dg_benchmark

    c = config(cfg, overrides)
    check_arguments(list(recipes), seeds, selection)  # before the run directory is made
    run = _run(c, run_dir)
    if chain:
        from medseg_weak.dg_chain import run_chain_benchmark

        return run_chain_benchmark(c, run, list(recipes), seeds, domains, progress=progress)
    run.write_provenance(c)
    return run_dg_benchmark(
        c, run, list(recipes), seeds, domains, selection=selection, metric=metric, progress=progress
    )


def predict(
    run: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    manifest: str | Path | None = None,
    images: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int = 32,
    image_size: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Grade ``manifest``'s images or the image files under ``images`` with the run's model (its
    quality model, else its classifier) or ``checkpoint``, into ``out`` (default
    ``<run>/predict/predictions.csv``); unreadable images are listed in ``unreadable.csv``."""
    from medseg_weak.data.manifest import load_manifest
    from medseg_weak.errors import ConfigError
    from medseg_weak.quality.predict import predict as grade

    if (manifest is None) == (images is None):
        raise ConfigError("predict: give exactly one of --manifest CSV or --images DIR")
    if run is None and checkpoint is None:
        raise ConfigError("predict: give --run (a trained run) or --checkpoint")
    size = image_size
    if checkpoint is None:
        root = RunDir(Path(run))  # type: ignore[arg-type]
        c = run_config(root.root)
        size = size or c.data.image_size
        checkpoint = _best_model(root)
    target = Path(out) if out else (Path(run) / "predict" / "predictions.csv" if run else None)
    if target is None:
        raise ConfigError("predict: give --out FILE (no --run to write into)")
    inputs = load_manifest(Path(manifest)) if manifest is not None else Path(images)  # type: ignore[arg-type]
    return grade(checkpoint, inputs, target, batch_size=batch_size, progress=progress, image_size=size)


def _best_model(root: RunDir) -> Path:
    """The run's quality model's best checkpoint, else its classifier's."""
    for stage in ("quality", "classifier"):
        state = root.read_state(stage)
        if state is not None and state.get("complete") and state.get("best_checkpoint"):
            return root.stage(stage) / str(state["best_checkpoint"])
    raise InputError(root.root, "holds no finished quality model or classifier; train one first")


def make_cams(
    run: str | Path | None = None,
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    manifest: str | Path | None = None,
    evaluate: bool = False,
    select: bool = False,
    shard: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> CamsResult:
    """CAMs, pseudo-masks and overlays of every image into ``<run>/cams/`` (the run's own classifier,
    or ``checkpoint``); ``evaluate`` scores them against the ground truth, ``select`` chooses the
    method, layer and threshold by metrics first, ``shard`` ("i/n") does this process's share."""
    from medseg_weak.explain.stage import CamsStage
    from medseg_weak.pipeline import run_plan

    if cfg is None and run is not None and (Path(run) / "config.yaml").is_file():
        cfg = Path(run) / "config.yaml"
    elif run is not None and checkpoint is None and not (Path(run) / "config.yaml").is_file():
        raise InputError(run, "not a run directory (no config.yaml); train a classifier there first")
    extra = [f"data.manifest={manifest}"] if manifest else []
    c = config(cfg, [*overrides, *extra])
    stage = CamsStage(Path(checkpoint) if checkpoint else None, evaluate=evaluate, select=select, shard=shard)
    # Shards of one CAM stage are several processes sharing the run: no run lock for them.
    outcome = run_plan(
        c, _run(c, run), [stage], force=force, progress=progress, allow=("cams",), lock=shard is None
    )
    return outcome.results["cams"]  # type: ignore[return-value]


def train_segmenter(
    run: str | Path,
    overrides: Sequence[str] = (),
    *,
    source: str = "cams",
    force: bool = False,
    progress: bool = True,
) -> SegmenterResult:
    """The UNet on the run's CAM pseudo-masks (and its self-training rounds), or on the ground truth
    (``source="truth"``: the oracle); returns the last stage's result."""
    from medseg_weak.errors import ConfigError
    from medseg_weak.pipeline import run_plan
    from medseg_weak.segment.stage import SegmenterStage, segmenter_stages

    if source not in ("cams", "truth"):
        raise ConfigError(f"source must be cams or truth; got {source!r}")
    c = run_config(run, overrides)
    plan = [SegmenterStage("truth")] if source == "truth" else segmenter_stages(c)
    outcome = run_plan(c, RunDir(Path(run)), plan, force=force, progress=progress, allow=("segmenter",))
    return outcome.results[plan[-1].name]  # type: ignore[return-value]


def evaluate(run: str | Path, overrides: Sequence[str] = (), *, progress: bool = True) -> EvalResult:
    """Rescore a run's test images (a leave-one-out run: every fold, then the pooled table)."""
    from medseg_weak.evaluate.stage import EvalStage, PooledEvalStage
    from medseg_weak.pipeline import data_summary, run_plan
    from medseg_weak.stages import Runner

    root = RunDir(Path(run))
    c = run_config(run, overrides)
    domains = root.held_out_domains()
    if domains is None:
        outcome = run_plan(c, root, [EvalStage(c)], progress=progress, redo=["eval"], allow=("eval",))
        return outcome.results["eval"]  # type: ignore[return-value]
    for domain in domains:
        fold = root.fold(domain)
        fold_cfg = run_config(fold.root, overrides)
        run_plan(fold_cfg, fold, [EvalStage(fold_cfg)], progress=progress, redo=["eval"], allow=("eval",))
    labels = list(data_summary(c).labels)
    runner = Runner(c, root, progress=progress, redo=["eval"])
    return runner.execute([PooledEvalStage(root, domains, labels)], None)["eval"]  # type: ignore[return-value]


def run_pipeline(
    cfg: ConfigLike = None,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    test_domain: str | None = None,
    leave_one_out: bool = False,
    force: bool = False,
    progress: bool = True,
) -> RunOutcome:
    """Every stage in one run directory: data -> classifier -> CAMs -> UNet (+ oracle) -> eval.

    ``leave_one_out`` holds out every hospital in turn (``<runs_dir>/<name>_loo`` by default)."""
    from medseg_weak.pipeline import leave_one_out_dir, run_leave_one_out, run_plan

    c = _with(config(cfg, overrides), test_domain)
    if leave_one_out:
        return run_leave_one_out(c, leave_one_out_dir(c, run_dir), force=force, progress=progress)
    return run_plan(c, _run(c, run_dir), force=force, progress=progress)


def report(run: str | Path, *, progress: bool = True) -> ReportResult:
    """Write ``<run>/report/index.html``: one static page of every finished stage of the run (a
    leave-one-out run: the pooled table and a part per fold); rewritten on every call, with the
    gallery's pictures taken from the cache where nothing they show has changed. The run's
    config.yaml and env.json are read, not rewritten: they describe how the run was made."""
    from medseg_weak.data.prepare import prepare, resolve_manifest
    from medseg_weak.report.stage import ReportStage, finished_stages
    from medseg_weak.stages import Runner

    root = RunDir(Path(run))
    c = run_config(run)
    manifest = prepare(c, root) if root.held_out_domains() is None else resolve_manifest(c, root)
    runner = Runner(c, root, progress=progress, redo=["report"])
    return runner.execute([ReportStage(finished_stages(root))], manifest)["report"]  # type: ignore[return-value]


def inspect(
    run: str | Path, ids: Sequence[str] = (), *, worst: int | None = None, hospital: str | None = None
) -> Path:
    """Write ``<run>/inspect/index.html``: the chosen images (``ids``; else the ``worst`` by
    pseudo-mask Dice, of ``hospital`` if given) in layers with toggles; return the page's path."""
    from medseg_weak.data.prepare import prepare
    from medseg_weak.report.inspect import write_inspect

    root = RunDir(Path(run))
    if root.held_out_domains() is not None:
        raise InputError(run, "a leave-one-out run: inspect one fold's run (folds/<hospital>)")
    c = run_config(run)
    return write_inspect(c, root, prepare(c, root), ids, worst, hospital)
