"""`medseg-weak <verb>`: the command-line entry point.

User errors (:class:`MedsegError`) print one line and exit non-zero; ``--debug`` shows the traceback.
Every verb takes ``--config FILE`` and repeated ``--set key.sub=value`` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medseg_weak import __version__
from medseg_weak.config import Config, load_config
from medseg_weak.data.kinds import KINDS
from medseg_weak.errors import InputError, MedsegError

# Outside a terminal rich assumes 80 columns, which truncates tables and breaks file paths across
# lines in logs; errors must stay one greppable line.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (defaults are used for missing keys)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set data.image_size=128 (repeatable)",
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    _log_file_option(parser, argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _log_file_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--log-file",
        type=Path,
        default=default,
        metavar="PATH",
        help="also write the whole log, library tracebacks included, to PATH (--debug: one in the temp dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg-weak",
        description="Weakly supervised medical image segmentation from image-level labels.",
    )
    parser.add_argument("--version", action="version", version=f"medseg-weak {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    _log_file_option(parser, None)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    synth = verbs.add_parser("synth", help="generate the built-in multi-hospital benchmark")
    synth.add_argument(
        "kind", choices=KINDS.names(), help="; ".join(f"{k}: {KINDS.get(k).description}" for k in KINDS)
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder (created; reruns resume)")
    synth.add_argument("--n-per-hospital", type=int, help="images per hospital")
    synth.add_argument("--hospitals", type=int, help="number of hospitals (vendor profiles)")
    synth.add_argument("--seed", type=int, help="random seed (same seed = identical files)")
    synth.add_argument("--spurious-cue", type=float, help="strength in [0,1] of a hospital-specific shortcut")
    synth.add_argument("--height", type=int, help="mammogram height in pixels")
    synth.add_argument("--size", type=int, help="fundus image side in pixels")
    synth.add_argument("--workers", type=int, help="processes to generate with")
    synth.add_argument(
        "--cue-mode",
        choices=["per_hospital", "shared"],
        help="per_hospital: each hospital its own marker; shared: one marker, its sign set per hospital"
        " (synth.cue_sign)",
    )
    synth.add_argument(
        "--label-noise",
        type=float,
        metavar="KAPPA",
        help="reader noise: target kappa of noisy vs clean labels",
    )
    _common(synth)
    synth.set_defaults(func=cmd_synth)

    data = verbs.add_parser("data", help="inspect a manifest and its images")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    check = data_verbs.add_parser("check", help="validate a manifest and every file; print a summary table")
    check.add_argument("manifest", type=Path)
    check.add_argument("--no-decode", action="store_true", help="validate the CSV only, do not read images")
    check.add_argument(
        "--problems",
        type=Path,
        metavar="FILE",
        help="write every problem to FILE (CSV: kind,id,path,message)",
    )
    check.add_argument("--workers", type=int, help="processes that decode images (default: every CPU)")
    _common(check)
    check.set_defaults(func=cmd_data_check)
    preview = data_verbs.add_parser("preview", help="write a montage of preprocessed images per hospital")
    preview.add_argument("manifest", type=Path)
    preview.add_argument("--out", type=Path, required=True, help="PNG (or PDF/SVG) file to write")
    preview.add_argument("--per-hospital", type=int, default=6, help="images per hospital row")
    preview.add_argument("--size", type=int, default=256, help="preprocessed size shown")
    _common(preview)
    preview.set_defaults(func=cmd_data_preview)
    _add_data_import(data_verbs)
    train = verbs.add_parser("train-classifier", help="train the image-level classifier (stage 1)")
    train.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    train.add_argument("--test-domain", help="hold this hospital out entirely (leave-one-domain-out)")
    train.add_argument("--force", action="store_true", help="discard outputs made by a different config")
    _common(train)
    train.set_defaults(func=cmd_train_classifier)

    quality = verbs.add_parser(
        "train-quality", help="train the fundus quality model: Good/Usable/Reject + where degraded"
    )
    quality.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    quality.add_argument("--test-domain", help="hold this camera out entirely (leave-one-camera-out)")
    quality.add_argument("--force", action="store_true", help="discard outputs made by a different config")
    _common(quality)
    quality.set_defaults(func=cmd_train_quality)

    pred = verbs.add_parser("predict", help="grade images with a trained classifier or quality model")
    pred.add_argument("--run", type=Path, help="run directory (its quality model, else its classifier)")
    pred.add_argument("--checkpoint", type=Path, help="a checkpoint of this project instead of the run's")
    what = pred.add_mutually_exclusive_group(required=True)
    what.add_argument("--manifest", type=Path, help="manifest CSV of the images to grade")
    what.add_argument("--images", type=Path, help="folder of image files (PNG, JPEG, TIFF, DICOM)")
    pred.add_argument("--out", type=Path, help="CSV to write (default: <run>/predict/predictions.csv)")
    pred.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    pred.add_argument("--image-size", type=int, help="model input size (a classifier checkpoint alone)")
    _common(pred)
    pred.set_defaults(func=cmd_predict)

    for verb, text in (
        ("interpret", "faithfulness, localisation and sanity checks of CAM methods (into <run>/interpret/)"),
        ("invariance", "per-layer invariance to transformations, per hospital, and CAM equivariance"),
    ):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("--run", type=Path, required=True, help="run directory (created if new)")
        sub.add_argument("--checkpoint", type=Path, help="a checkpoint of this project instead of the run's")
        sub.add_argument("--manifest", type=Path, help="images to use (all) instead of the test split")
        if verb == "interpret":
            sub.add_argument("--methods", help="comma-separated CAM methods (sets interpret.methods)")
            sub.add_argument(
                "--random-labels",
                type=Path,
                help="checkpoint trained on shuffled labels",
            )
        else:
            sub.add_argument("--transforms", help="comma-separated transformation sets")
        sub.add_argument("--force", action="store_true", help="discard outputs made by a different config")
        _common(sub)
        sub.set_defaults(func=cmd_interpret if verb == "interpret" else cmd_invariance)

    matrix = verbs.add_parser(
        "invariance-matrix",
        help="a classifier per training augmentation x every evaluation transformation (resumable)",
    )
    matrix.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    matrix.add_argument("--test-domain", help="hold this hospital out (its accuracy beside each row)")
    matrix.add_argument("--train", help="comma-separated training augmentations (invariance.matrix_train)")
    matrix.add_argument("--eval", help="comma-separated evaluation transformations (invariance.matrix_eval)")
    matrix.add_argument("--force", action="store_true", help="discard outputs made by a different config")
    _common(matrix)
    matrix.set_defaults(func=cmd_invariance_matrix)

    dg = verbs.add_parser(
        "dg-benchmark", help="leave-one-hospital-out: every held-out hospital x recipe x seed"
    )
    dg.add_argument(
        "--recipes",
        "--rules",
        dest="recipes",
        default="erm,agr_sum,agr_rand,pcgrad",
        help="comma-separated recipes: a gradient rule, aug (scanner-shift augmentation), adabn "
        "(per-hospital BatchNorm statistics at test time) or several joined by + (aug+pcgrad+adabn)",
    )
    dg.add_argument("--seeds", type=int, default=3, help="trials per (hospital, rule)")
    dg.add_argument("--domains", help="held-out hospitals (default: every hospital in turn)")
    dg.add_argument("--selection", default="training_domain", help="training_domain, oracle or last")
    dg.add_argument(
        "--chain",
        action="store_true",
        help="the whole chain per run (classifier, CAMs, UNet on CAMs, oracle, held-out Dice)",
    )
    dg.add_argument("--metric", default="accuracy", help="metric reported in the table")
    dg.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    _common(dg)
    dg.set_defaults(func=cmd_dg_benchmark)

    search = verbs.add_parser(
        "search", help="pick a backbone and learning rate by training-hospital validation"
    )
    search.add_argument("--backbones", default="tiny_cnn", help="comma-separated backbone names")
    search.add_argument("--lr", default="0.001", help="comma-separated learning rates")
    search.add_argument("--halving", action="store_true", help="successive halving instead of a plain grid")
    search.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    _common(search)
    search.set_defaults(func=cmd_search)

    cams = verbs.add_parser("cams", help="class activation maps -> pseudo-masks and overlays (stage 2)")
    cams.add_argument("--run", type=Path, help="run directory of a trained classifier (uses its config.yaml)")
    cams.add_argument(
        "--checkpoint", type=Path, help="classifier checkpoint (default: the best one of <run>/classifier/)"
    )
    cams.add_argument("--manifest", type=Path, help="images to explain (default: the run's data)")
    cams.add_argument("--evaluate", action="store_true", help="score pseudo-masks against ground-truth masks")
    cams.add_argument("--select", action="store_true", help="choose method, layer and threshold by metrics")
    cams.add_argument("--shard", help="i/n: process every n-th image starting at i (several processes)")
    cams.add_argument("--force", action="store_true", help="discard CAMs made by a different config")
    _common(cams)
    cams.set_defaults(func=cmd_cams)

    seg = verbs.add_parser("train-segmenter", help="train the UNet on a run's CAM pseudo-masks (stage 3)")
    seg.add_argument("--run", type=Path, required=True, help="run directory holding cams/ (uses its config)")
    seg.add_argument(
        "--source",
        choices=["cams", "truth"],
        default="cams",
        help="cams: pseudo-masks (+ self-training rounds) into segmenter/; truth: the oracle into oracle/",
    )
    seg.add_argument("--force", action="store_true", help="discard a segmenter made by a different config")
    _common(seg)
    seg.set_defaults(func=cmd_train_segmenter)

    ev = verbs.add_parser("evaluate", help="score CAM masks, UNet on CAMs and the oracle on the test images")
    ev.add_argument(
        "--run", type=Path, required=True, help="run directory made by `medseg-weak pipeline` (or its folds)"
    )
    _common(ev)
    ev.set_defaults(func=cmd_evaluate)

    pipe = verbs.add_parser(
        "pipeline", help="run every stage (data, classifier, CAMs, UNet, evaluation) in one run directory"
    )
    pipe.add_argument("--run-dir", type=Path, help="run directory (default: <runs_dir>/<name>)")
    pipe.add_argument("--test-domain", help="hold this hospital out entirely (leave-one-domain-out)")
    pipe.add_argument(
        "--leave-one-out",
        action="store_true",
        help="hold out every hospital in turn (one pipeline per fold in <run>/folds/), pool the evaluations",
    )
    pipe.add_argument("--force", action="store_true", help="discard stage outputs made by a different config")
    _common(pipe)
    pipe.set_defaults(func=cmd_pipeline)

    rep = verbs.add_parser("report", help="write <run>/report/index.html: one static page of the whole run")
    rep.add_argument("--run", type=Path, required=True, help="run directory made by `medseg-weak pipeline`")
    _common(rep)
    rep.set_defaults(func=cmd_report)

    ins = verbs.add_parser("inspect", help="write <run>/inspect/index.html: chosen images in toggled layers")
    ins.add_argument("--run", type=Path, required=True, help="run directory made by `medseg-weak pipeline`")
    ins.add_argument("--id", dest="ids", action="append", default=[], help="image id (repeatable)")
    ins.add_argument("--worst", type=int, help="the N images with the lowest pseudo-mask Dice")
    ins.add_argument("--hospital", help="only this hospital's images")
    _common(ins)
    ins.set_defaults(func=cmd_inspect)
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    from medseg_weak.data.kinds import resolve_kind_defaults

    return resolve_kind_defaults(load_config(args.config, args.overrides))


def cmd_synth(args: argparse.Namespace) -> int:
    from medseg_weak.data.synthetic import generate
    from medseg_weak.progress import progress_bar

    cfg = resolve_config(args)
    given = {
        "kind": args.kind,
        "n_per_hospital": args.n_per_hospital,
        "hospitals": args.hospitals,
        "spurious_cue": args.spurious_cue,
        "height": args.height,
        "size": args.size,
        "workers": args.workers,
        "cue_mode": args.cue_mode,
        "label_noise": args.label_noise,
    }
    synth_cfg = dataclasses.replace(cfg.synth, **{k: v for k, v in given.items() if v is not None})
    seed = cfg.seed if args.seed is None else args.seed
    total = synth_cfg.n_per_hospital * synth_cfg.hospitals
    with progress_bar(total, f"synth {synth_cfg.kind}", enabled=not args.quiet) as advance:
        manifest = generate(args.out, synth_cfg, seed=seed, progress=advance)
    console.print(f"wrote {total} images and [bold]{manifest}[/bold]")
    return 0


SHOWN_PER_KIND = 10  # problems of one kind printed; the rest go to --problems FILE


def cmd_data_check(args: argparse.Namespace) -> int:
    from medseg_weak.data.check import check_manifest, size_range
    from medseg_weak.errors import ConfigError

    cfg = resolve_config(args)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {args.workers}")
    report = check_manifest(
        args.manifest,
        labels=cfg.data.labels or None,
        decode=not args.no_decode,
        workers=args.workers,
        progress=not args.quiet,
    )
    manifest = report.manifest
    table = Table(title=f"{args.manifest} ({len(manifest)} images)")
    table.add_column("hospital")
    for label in manifest.labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for column in ("patients", "rows", "cols", "photometric", "bits", "masks"):
        table.add_column(column, justify="right")
    for domain, s in report.domains.items():
        patients = len({r.patient_id for r in manifest.records if r.domain == domain})
        table.add_row(
            domain,
            *(str(s.labels.get(label, 0)) for label in manifest.labels),
            str(sum(s.labels.values())),
            str(patients),
            size_range(s.heights),
            size_range(s.widths),
            ", ".join(sorted(s.photometric)) or "-",
            ", ".join(sorted(s.bits)) or "-",
            str(s.masks),
        )
    console.print(table)
    if args.problems is not None:
        report.write_problems(args.problems)
    if report.ok:
        console.print("[green]no problems found[/green]")
        return 0
    groups = report.by_kind()
    for kind, problems in groups.items():
        err_console.print(f"{kind} ({len(problems)}):", markup=False, highlight=False)
        for problem in problems[:SHOWN_PER_KIND]:  # one line each on screen; the CSV keeps line breaks
            err_console.print(f"  {' '.join(str(problem).split())}", markup=False, highlight=False)
        if len(problems) > SHOWN_PER_KIND:
            err_console.print(
                f"  ... and {len(problems) - SHOWN_PER_KIND} more", markup=False, highlight=False
            )
    counts = ", ".join(f"{len(p)} {kind}" for kind, p in groups.items())
    where = f"all listed in {args.problems}" if args.problems else "--problems FILE lists them all as CSV"
    raise InputError(args.manifest, f"{len(report.problems)} problem(s) found ({counts}); {where}")


def cmd_data_preview(args: argparse.Namespace) -> int:
    from medseg_weak.data.manifest import load_manifest
    from medseg_weak.data.preview import write_preview

    cfg = resolve_config(args)
    manifest = load_manifest(args.manifest, cfg.data.labels or None)
    out = write_preview(manifest, args.out, cfg.data.kind, size=args.size, per_domain=args.per_hospital)
    console.print(f"wrote {out}")
    return 0


def _add_data_import(data_verbs: argparse._SubParsersAction) -> None:
    from medseg_weak.data.importers import IMPORTERS, ImportOptions, describe

    formats = "\n".join(f"  {name:18} {describe(name)}" for name in IMPORTERS.names())
    imp = data_verbs.add_parser(
        "import",
        help="write a manifest from a public dataset's layout, a DICOM folder or any CSV",
        description=f"formats:\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("format", choices=IMPORTERS.names(), metavar="FORMAT", help="see the list above")
    imp.add_argument("--source", type=Path, required=True, help="the dataset's folder as downloaded")
    imp.add_argument("--csv", type=Path, help="the label table, instead of the format's default file")
    imp.add_argument("--columns", type=Path, help="YAML column mapping (formats csv, dicom_folder)")
    imp.add_argument("--domain-by", help="what names the hospital/scanner, where the format offers a choice")
    imp.add_argument(
        "--workers", type=int, default=ImportOptions.workers, help="threads reading DICOM headers"
    )
    imp.add_argument("--out", type=Path, required=True, help="folder for manifest.csv and import_report.md")
    _common(imp)
    imp.set_defaults(func=cmd_data_import)


def cmd_data_import(args: argparse.Namespace) -> int:
    from medseg_weak.data.importers import import_dataset

    result = import_dataset(
        args.format,
        args.source,
        args.out,
        csv=args.csv,
        columns=args.columns,
        domain_by=args.domain_by,
        workers=args.workers,
    )
    dropped = sum(result.dropped.values())
    console.print(f"kept {result.kept} of {result.rows_read} rows ({dropped} dropped): {result.manifest}")
    console.print(result.report.read_text(), markup=False, highlight=False)
    return 0


def _metrics_table(title: str, first: str, metrics: dict, names: tuple[str, ...]) -> Table:
    """Test metrics per hospital / camera (rows) from a stage's metrics.json."""
    test = metrics.get("test", {})
    table = Table(title=title)
    table.add_column(first)
    for name in names:
        table.add_column(name, justify="right")
    for prefix in ["", *(f"{d}/" for d in metrics.get("domains", []))]:
        if f"{prefix}accuracy" in test:
            values = [test.get(f"{prefix}{n}") for n in names]
            table.add_row(prefix.rstrip("/") or "all", *("-" if v is None else f"{v:.3f}" for v in values))
    return table


def cmd_train_classifier(args: argparse.Namespace) -> int:
    names = ("accuracy", "balanced_accuracy", "auroc", "f1", "kappa")
    return _train(args, "train_classifier", "classifier", "hospital", names)


def cmd_train_quality(args: argparse.Namespace) -> int:
    names = ("accuracy", "auroc", "f1_macro", "sensitivity_macro", "specificity_macro", "mask_dice")
    return _train(args, "train_quality", "quality model", "camera", names)


def _train(args: argparse.Namespace, function: str, what: str, first: str, names: tuple[str, ...]) -> int:
    import medseg_weak as mw

    result = getattr(mw, function)(
        args.config,
        args.overrides,
        run_dir=args.run_dir,
        test_domain=args.test_domain,
        force=args.force,
        progress=not args.quiet,
    )
    console.print(_metrics_table(f"{what} test metrics ({result.folder})", first, result.metrics, names))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.predict(
        args.run,
        checkpoint=args.checkpoint,
        manifest=args.manifest,
        images=args.images,
        out=args.out,
        batch_size=args.batch_size,
        image_size=args.image_size,
        progress=not args.quiet,
    )
    console.print(f"graded {len(result.ids)} image(s) into {result.path}", markup=False, highlight=False)
    if result.failed:
        unreadable = result.path.with_name("unreadable.csv") if result.path else "unreadable.csv"
        console.print(f"{len(result.failed)} could not be read; listed in {unreadable}", markup=False)
    return 0


def _list_override(key: str, value: str | None) -> list[str]:
    from medseg_weak.classify.dg_benchmark import parse_list

    return [f"{key}=[{','.join(parse_list(value))}]"] if value else []


def cmd_interpret(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.interpret(
        args.run,
        [*args.overrides, *_list_override("interpret.methods", args.methods)],
        cfg=args.config,
        checkpoint=args.checkpoint,
        manifest=args.manifest,
        random_labels=args.random_labels,
        force=args.force,
        progress=not args.quiet,
    )
    table = Table(title=f"interpretability ({result.headline.get('images')} images, {result.folder})")
    for column in (
        "method",
        "deletion_auc",
        "insertion_auc",
        "road_morf",
        "pointing",
        "relevance_mass",
        "flags",
    ):
        table.add_column(column)
    for method, entry in result.headline.get("methods", {}).items():
        flags = []
        if entry.get("flagged_no_better_than_random"):
            flags.append("no better than random")
        if entry.get("sanity", {}).get("passed") is False:
            flags.append("fails sanity check")
        cells = [
            entry.get(m, {}).get("mean") for m in ("deletion_auc", "insertion_auc", "road_morf", "pointing")
        ]
        cells.append(entry.get("relevance_mass", {}).get("mean"))
        table.add_row(method, *("-" if v is None else f"{v:.3f}" for v in cells), ", ".join(flags) or "-")
    console.print(table)
    return 0


def cmd_invariance(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.invariance(
        args.run,
        [*args.overrides, *_list_override("invariance.transforms", args.transforms)],
        cfg=args.config,
        checkpoint=args.checkpoint,
        manifest=args.manifest,
        force=args.force,
        progress=not args.quiet,
    )
    console.print((result.folder / "by_domain.md").read_text(), markup=False, highlight=False)
    flagged = [m for m, stays in (result.summary_data.get("cam_stays_put") or {}).items() if stays]
    if flagged:
        console.print(f"CAM maps that stay put while the image moves: {', '.join(flagged)}", markup=False)
    console.print(f"tables and plots in {result.folder}", markup=False, highlight=False)
    return 0


def cmd_invariance_matrix(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    lists = [
        *_list_override("invariance.matrix_train", args.train),
        *_list_override("invariance.matrix_eval", args.eval),
    ]
    result = mw.invariance_matrix(
        args.config,
        [*args.overrides, *lists],
        run_dir=args.run_dir,
        test_domain=args.test_domain,
        force=args.force,
        progress=not args.quiet,
    )
    console.print(result.paths["md"].read_text(), markup=False, highlight=False)
    console.print(f"matrix (CSV, Markdown, heatmap) in {result.folder}", markup=False, highlight=False)
    return 0


def cmd_dg_benchmark(args: argparse.Namespace) -> int:
    from medseg_weak.classify.dg_benchmark import check_arguments, parse_list, run_dg_benchmark, summary_path
    from medseg_weak.rundir import RunDir

    cfg = resolve_config(args)
    check_arguments(parse_list(args.recipes), args.seeds, args.selection)  # before the run directory exists
    run = RunDir.for_config(cfg, args.run_dir)
    if args.chain:
        from medseg_weak.dg_chain import CHAIN, run_chain_benchmark

        run_chain_benchmark(
            cfg, run, parse_list(args.recipes), args.seeds, parse_list(args.domains) or None, not args.quiet
        )
        console.print((run.stage(CHAIN) / "summary.md").read_text(), markup=False, highlight=False)
        console.print(f"tables, plot and results.jsonl in {run.stage(CHAIN)}")
        return _benchmark_report(run.root, args.quiet)
    run.write_provenance(cfg)
    run_dg_benchmark(
        cfg,
        run,
        parse_list(args.recipes),
        args.seeds,
        parse_list(args.domains) or None,
        selection=args.selection,
        metric=args.metric,
        progress=not args.quiet,
    )
    console.print(summary_path(run, args.selection).read_text(), markup=False, highlight=False)
    console.print(f"tables, plot and results.jsonl in {run.stage('dg')}")
    return _benchmark_report(run.root, args.quiet)


def _benchmark_report(run: Path, quiet: bool) -> int:
    import medseg_weak as mw

    console.print(f"report: {mw.report(run, progress=not quiet).page}", markup=False, highlight=False)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from medseg_weak.classify.dg_benchmark import parse_list
    from medseg_weak.classify.search import check_candidates, parse_floats, run_search
    from medseg_weak.rundir import RunDir

    cfg = resolve_config(args)
    backbones, lrs = parse_list(args.backbones), parse_floats(args.lr, "--lr")
    check_candidates(cfg, backbones, lrs)  # before the run directory exists
    run = RunDir.for_config(cfg, args.run_dir)
    run.write_provenance(cfg)
    run_search(cfg, run, backbones, lrs, halving=args.halving, progress=not args.quiet)
    out = run.stage("search")
    console.print((out / "ranking.md").read_text(), markup=False, highlight=False)
    console.print(
        f"winner's config: {out / 'best.yaml'}  (medseg-weak train-classifier --config {out / 'best.yaml'})"
    )
    return 0


def cmd_cams(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.make_cams(
        args.run,
        args.config,
        args.overrides,
        checkpoint=args.checkpoint,
        manifest=args.manifest,
        evaluate=args.evaluate,
        select=args.select,
        shard=args.shard,
        force=args.force,
        progress=not args.quiet,
    )
    out = result.folder
    console.print(f"{result.images} CAMs, pseudo-masks and overlays in {out} (index: {result.index})")
    for name in ("selection.md", "quality_by_hospital.md", "quality_by_class.md"):
        if (out / name).is_file():
            console.print((out / name).read_text(), markup=False, highlight=False)
    return 0


def cmd_train_segmenter(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.train_segmenter(
        args.run, args.overrides, source=args.source, force=args.force, progress=not args.quiet
    )
    console.print(f"segmenter in {result.folder}: best {result.monitor} = {result.best_score}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.evaluate(args.run, args.overrides, progress=not args.quiet)
    for metric, by in (("dice", "hospital"), ("hd95", "hospital"), ("dice", "class")):
        console.print(result.table(metric, by), markup=False, highlight=False)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    outcome = mw.run_pipeline(
        args.config,
        args.overrides,
        run_dir=args.run_dir,
        test_domain=args.test_domain,
        leave_one_out=args.leave_one_out,
        force=args.force,
        progress=not args.quiet,
    )
    table = Table(title="pipeline stages (seconds)")
    if outcome.folds:  # leave-one-out: one row per held-out hospital
        stages = list(next(iter(outcome.folds.values())).timings)
        table.add_column("held out")
        for stage in stages:
            table.add_column(stage, justify="right")
        for domain, fold in outcome.folds.items():
            table.add_row(domain, *(f"{fold.timings.get(s, 0.0):.1f}" for s in stages))
        table.caption = "shared: " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.timings.items())
    else:
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, seconds in outcome.timings.items():
            table.add_row(name, f"{seconds:.1f}")
    console.print(table)
    summary = outcome.run.stage("eval") / "dice_by_hospital.md"
    if summary.is_file():  # the method's central question, answered where the user is looking
        console.print(summary.read_text(), markup=False, highlight=False)
    page = outcome.run.stage("report") / "index.html"
    if page.is_file():
        console.print(f"report: {page}", markup=False, highlight=False)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    result = mw.report(args.run, progress=not args.quiet)
    console.print(f"report: {result.page}", markup=False, highlight=False)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import medseg_weak as mw

    page = mw.inspect(args.run, args.ids, worst=args.worst, hospital=args.hospital)
    console.print(f"inspect: {page}", markup=False, highlight=False)
    return 0


def _print_error(message: str) -> None:
    """The error as the last lines of stderr: details first, then one line starting with ``error:``."""
    for handler in logging.getLogger().handlers:  # anything logged so far goes out before, not after
        handler.flush()
    head, *details = message.splitlines() or [""]
    for line in details:
        err_console.print(line, markup=False, highlight=False)
    if details and head.endswith(":"):
        head = f"{head[:-1]} (listed above)"
    # escape: messages quote config values such as [low, high], which rich would take for markup
    err_console.print(f"[red]error:[/red] {escape(head)}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    from medseg_weak.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    log_file = setup_logging(debug=debug, log_file=getattr(args, "log_file", None))
    log = logging.getLogger("medseg_weak.cli")
    if log_file is not None:
        log.info("full log in %s", log_file)
    try:
        return args.func(args)
    except MedsegError as err:
        log.debug("error", exc_info=True)  # the traceback, for the log file only
        if debug:
            traceback.print_exc()
        _print_error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted; rerun the same command to continue where it stopped")
        return 130
    except Exception as err:  # a bug: its traceback, then still our last line
        log.debug("unexpected error", exc_info=True)
        traceback.print_exc()
        _print_error(f"unexpected {type(err).__name__} (a bug in medseg-weak; the traceback is above)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
