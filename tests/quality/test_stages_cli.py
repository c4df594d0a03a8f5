"""The fundus chain end to end on tiny data: `pipeline` (quality -> interpret -> invariance -> report),
`train-quality`, `predict`, `interpret` and `invariance` on a checkpoint, resume and bad input."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml

import medseg_weak as mw
from medseg_weak import cli
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.logs import reset_logging


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    reset_logging()


def test_pipeline_runs_the_fundus_chain_and_writes_every_output(fundus_run):
    for stage in ("quality", "interpret", "invariance", "report"):
        assert json.loads((fundus_run / stage / "stage.json").read_text())["complete"], stage
    metrics = json.loads((fundus_run / "quality" / "metrics.json").read_text())
    assert {"accuracy", "auroc", "f1_macro", "confusion", "mask_dice"} <= set(metrics["test"])
    assert {f"{c}/accuracy" for c in ("C1", "C2", "C3")} & set(metrics["test"])  # per camera
    interpret = json.loads((fundus_run / "interpret" / "metrics.json").read_text())
    assert interpret["images"] == 6 and set(interpret["methods"]) == {
        "gradcam",
        "layercam",
        "random",
        "centre",
    }
    assert all("sanity" in interpret["methods"][m] for m in ("gradcam", "layercam"))
    for name in ("curves.png", "randomisation.png", "gallery_gradcam.png", "by_domain.csv"):
        assert (fundus_run / "interpret" / name).stat().st_size > 0, name
    summary = json.loads((fundus_run / "invariance" / "summary.json").read_text())
    assert set(summary["transformations"]) == {"rotation", "brightness"}
    rotation = summary["transformations"]["rotation"]
    assert summary["settings"]["layers"][-1] == "unet.classification_head"
    assert set(rotation["by_domain"]) == {"C1", "C2", "C3"} and rotation["overall"] >= 0
    with (fundus_run / "invariance" / "cam_equivariance.csv").open() as f:
        rows = list(csv.DictReader(f))
    identity = [r for r in rows if r["transformation"] == "rotation(0)"]
    assert float(identity[0]["pearson"]) == pytest.approx(1.0)  # CAM(x) vs CAM(x)
    page = (fundus_run / "report" / "index.html").read_text()
    for section in ("quality", "interpret", "invariance"):
        assert f'<section id="{section}"' in page


def test_a_rerun_skips_every_finished_stage(fundus_run, monkeypatch):
    from medseg_weak.interpret.stage import InterpretStage
    from medseg_weak.invariance.stage import InvarianceStage
    from medseg_weak.quality.stage import QualityStage

    def refuse(self, ctx):
        raise AssertionError(f"{self.name} ran again")

    for stage in (QualityStage, InterpretStage, InvarianceStage):
        monkeypatch.setattr(stage, "run", refuse)
    outcome = mw.run_pipeline(fundus_run / "config.yaml", run_dir=fundus_run, progress=False)
    assert outcome.results["quality"].metrics["test"]["n"] > 0


def test_another_interpret_section_is_refused_then_redone_with_force(fundus_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(fundus_run, run)
    with pytest.raises(ConfigError, match=r"differs in interpret\.methods"):
        mw.interpret(run, ["interpret.methods=[gradcam]"], progress=False)
    result = mw.interpret(run, ["interpret.methods=[gradcam]"], force=True, progress=False)
    assert set(result.headline["methods"]) == {"gradcam", "random", "centre"}
    assert yaml.safe_load((run / "config.yaml").read_text())["interpret"]["methods"] == ["gradcam"]


def test_predict_grades_a_folder_and_lists_what_it_cannot_read(fundus_run, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for path in sorted((fundus_run / "data" / "images").rglob("*.png"))[:3]:
        shutil.copy(path, images / path.name)
    (images / "broken.png").write_bytes(b"not a png")
    assert cli.main(["predict", "--run", str(fundus_run), "--images", str(images), "-q"]) == 0
    with (fundus_run / "predict" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and set(rows[0]) == {"id", "predicted", "p_Good", "p_Usable", "p_Reject"}
    assert all(abs(sum(float(r[f"p_{c}"]) for c in ("Good", "Usable", "Reject")) - 1) < 1e-3 for r in rows)
    unreadable = (fundus_run / "predict" / "unreadable.csv").read_text()
    assert "broken" in unreadable


def test_interpret_and_invariance_of_a_checkpoint_on_a_manifest_in_a_new_run(fundus_run, tmp_path):
    checkpoint = fundus_run / "quality" / "best.ckpt"
    manifest = fundus_run / "data" / "manifest.csv"
    new = tmp_path / "new_run"
    overrides = [f"{k}={v}" for k, v in (("data.kind", "fundus"), ("data.image_size", 64))]
    result = mw.interpret(
        new, [*overrides, "interpret.methods=[gradcam]", "interpret.images=4", "interpret.steps=3",
              "interpret.sanity=false"], checkpoint=checkpoint, manifest=manifest, progress=False,
    )  # fmt: skip
    assert result.headline["images"] == 4
    inv = mw.invariance(
        new, ["invariance.transforms=[gamma]", "invariance.steps=3", "invariance.images=4",
              "invariance.cam_methods=[]", "invariance.layers=[unet.encoder.layer1]"],
        checkpoint=checkpoint, manifest=manifest, progress=False,
    )  # fmt: skip
    assert list(inv.summary_data["transformations"]["gamma"]["per_layer"]) == ["unet.encoder.layer1"]


def test_bad_input_fails_clearly_before_any_work(fundus_run, tmp_path):
    with pytest.raises(ConfigError, match=r"'invariance.transforms'.*rotaton"):
        mw.invariance(fundus_run, ["invariance.transforms=[rotaton]"], progress=False)
    with pytest.raises(ConfigError, match=r"'interpret.methods'.*gradcamm"):
        mw.interpret(fundus_run, ["interpret.methods=[gradcamm]"], progress=False)
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) 'nope'"):
        mw.invariance(
            tmp_path / "new", ["data.kind=fundus", "invariance.layers=[nope]", "invariance.cam_methods=[]"],
            checkpoint=fundus_run / "quality" / "best.ckpt", manifest=fundus_run / "data" / "manifest.csv",
            progress=False,
        )  # fmt: skip
    not_a_model = tmp_path / "x.ckpt"
    not_a_model.write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        mw.predict(checkpoint=not_a_model, images=fundus_run / "data" / "images", out=tmp_path / "p.csv")
    with pytest.raises(ConfigError, match="exactly one of"):
        mw.predict(fundus_run)
    # the same errors through the CLI: one line, non-zero exit
    assert cli.main(["interpret", "--run", str(fundus_run), "--methods", "gradcamm", "-q"]) != 0
