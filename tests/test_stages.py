"""The stage runner: validate-all-first, skip / resume / refuse, upstream digests, best checkpoint from
stage.json; and every stage's config mistakes failing from `medseg-weak pipeline` before any work."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medseg_weak.cli import main
from medseg_weak.config import Config
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.rundir import RunDir
from medseg_weak.stages import DataSummary, Runner, Stage, StageContext, StageResult

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
DATA = DataSummary("test data", ("A", "B"), ("H1", "H2"), True)


@dataclass(frozen=True)
class FileResult(StageResult):
    path: Path

    def key_files(self) -> list[Path]:
        return [self.path]


class WriteStage(Stage):
    """Writes ``text`` (upstream's text appended) into out/<name>.txt; counts its runs."""

    def __init__(
        self, name: str, text: str, needs: tuple[str, ...] = (), fail_validate: bool = False
    ) -> None:
        self.name, self.text, self.needs, self.fail_validate = name, text, needs, fail_validate
        self.runs = 0

    def fingerprint(self, cfg: Config) -> dict:
        return {"text": self.text}

    def validate(self, cfg: Config, data: DataSummary) -> None:
        if self.fail_validate:
            raise ConfigError(f"'{self.name}.text' is wrong")

    def run(self, ctx: StageContext) -> FileResult:
        self.runs += 1
        upstream = "".join((ctx.run.stage(n) / f"{n}.txt").read_text() for n in self.needs)
        path = ctx.out / f"{self.name}.txt"
        path.write_text(upstream + self.text)
        return FileResult(ctx.out, path)

    def load(self, ctx: StageContext) -> FileResult:
        return FileResult(ctx.out, ctx.out / f"{self.name}.txt")


def _execute(tmp_path: Path, *stages: Stage, force: bool = False) -> dict:
    return Runner(Config(), RunDir(tmp_path / "run"), force=force, progress=False).execute(stages, None)


def test_complete_stage_is_skipped_and_a_new_upstream_output_reruns_downstream(tmp_path):
    a, b = WriteStage("a", "x"), WriteStage("b", "y", needs=("a",))
    _execute(tmp_path, a, b)
    _execute(tmp_path, a, b)
    assert (a.runs, b.runs) == (1, 1)  # both skipped the second time
    # a changes (with --force): b was made from a's old output, so its fingerprint no longer matches.
    a2, b2 = WriteStage("a", "z"), WriteStage("b", "y", needs=("a",))
    with pytest.raises(ConfigError, match=r"made by a different config \(differs in text\)"):
        _execute(tmp_path, a2, b2)
    _execute(tmp_path, a2, b2, force=True)
    assert (a2.runs, b2.runs) == (1, 1)
    assert (tmp_path / "run" / "b" / "b.txt").read_text() == "zy"
    state = json.loads((tmp_path / "run" / "b" / "stage.json").read_text())
    assert state["complete"] and set(state["config"]["upstream"]) == {"a"}


def test_a_stage_whose_input_is_unfinished_is_refused(tmp_path):
    with pytest.raises(InputError, match="needs 'a', which has not finished"):
        _execute(tmp_path, WriteStage("b", "y", needs=("a",)))


def test_validation_of_every_stage_happens_before_any_runs():
    first, bad = WriteStage("a", "x"), WriteStage("b", "y", fail_validate=True)
    with pytest.raises(ConfigError, match=r"'b\.text'"):
        Runner.validate([first, bad], Config(), DATA)
    assert first.runs == 0
    with pytest.raises(ConfigError, match="twice"):
        Runner.validate([first, WriteStage("a", "z")], Config(), DATA)


def test_best_checkpoint_comes_from_stage_json(tmp_path):
    run = RunDir(tmp_path / "run")
    run.stage("classifier").mkdir(parents=True)
    (run.stage("classifier") / "epoch=3.ckpt").write_bytes(b"weights")
    run.complete_stage("classifier", {}, best_checkpoint="epoch=3.ckpt")
    ctx = StageContext(Config(), None, run, "cams")
    assert ctx.best_checkpoint("classifier") == run.stage("classifier") / "epoch=3.ckpt"
    run.complete_stage("classifier", {}, best_checkpoint="gone.ckpt")
    with pytest.raises(InputError, match="no existing best checkpoint"):
        ctx.best_checkpoint("classifier")


def test_broken_stage_json_is_a_clear_error(tmp_path):
    run = RunDir(tmp_path / "run")
    run.stage("a").mkdir(parents=True)
    (run.stage("a") / "stage.json").write_text("{not json")
    with pytest.raises(InputError, match=r"stage\.json: is not valid JSON"):
        _execute(tmp_path, WriteStage("a", "x"))
    _execute(tmp_path, WriteStage("a", "x"), force=True)  # --force discards it
    assert (run.stage("a") / "a.txt").read_text() == "x"


@pytest.fixture(scope="module")
def warm_imports() -> None:
    """Import the libraries first: the time limit is for validation, not for importing torch (a few
    seconds on a cold machine, far more when the CPUs are shared)."""
    import lightning  # noqa: F401
    import pytorch_grad_cam  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import timm  # noqa: F401

    import medseg_weak.classify.module
    import medseg_weak.explain.cams
    import medseg_weak.segment.module  # noqa: F401


# A mistake in any stage's section fails from `medseg-weak pipeline` in seconds, naming the dotted key,
# before anything is generated or trained.
@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.kind=ct", r"'data\.kind'|'synth\.kind'"),
        ("data.test_domain=H9", r"'data\.test_domain' is 'H9'.*valid: H1, H2, H3, H4"),
        ("classifier.backbone=resnet_typo", r"'classifier\.backbone'"),
        ("classifier.lr=-1", r"'classifier\.lr' must be > 0"),
        ("classifier.epochs=0", r"'classifier\.epochs' must be >= 1"),
        ("classifier.monitor=val/kapa", r"'classifier\.monitor' is 'val/kapa'"),
        ("classifier.classes=[A, E]", r"'classifier\.classes' has E"),
        (
            "classifier.surgery.rule=agr_summ",
            r"'classifier\.surgery\.rule': unknown gradient rule 'agr_summ'.*Did you mean 'agr_sum'",
        ),
        ("classifier.surgery.tau=0.5", r"'classifier\.surgery\.tau'.*setting of rule 'and_mask'"),
        ("cams.method=gradcamm", r"'cams\.method'.*gradcam"),
        ("cams.target=E", r"'cams\.target' is 'E'"),
        ("cams.layer=layer9", r"'cams\.layer' is 'layer9'"),
        ("cams.mask.threshold=otsuu", r"'cams\.mask\.threshold'.*Did you mean 'otsu'"),
        ("segmenter.encoder=resnet1", r"'segmenter\.encoder'"),
        ("segmenter.loss=dice", r"'segmenter\.loss'.*dice_ce"),
        ("segmenter.gce_q=0.5", r"'segmenter\.gce_q'.*setting of loss 'gce'"),
        ("segmenter.pseudo_mask_classes=[X]", r"'segmenter\.pseudo_mask_classes' has X"),
    ],
)
def test_pipeline_fails_fast_on_any_stage_config_mistake(warm_imports, tmp_path, capsys, override, match):
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    code = main(["pipeline", "-q", "--config", str(DEMO), "--run-dir", str(run_dir), "--set", override])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(match, err), err
    assert elapsed < 5.0, f"validation took {elapsed:.1f} s"
    assert not run_dir.exists()  # nothing generated, nothing trained, no provenance written


def test_a_second_process_in_the_same_run_directory_is_refused(warm_imports, tmp_path, capsys):
    from medseg_weak.lock import RunLock

    run_dir = tmp_path / "run"
    with RunLock(run_dir):  # another pipeline holds the run
        code = main(["pipeline", "-q", "--config", str(DEMO), "--run-dir", str(run_dir)])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and str(run_dir) in err
    assert not (run_dir / "config.yaml").exists()  # nothing written by the refused process
