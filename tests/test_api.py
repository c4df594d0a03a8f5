"""The Python API end to end: a notebook session from data to the held-out table, typed results."""

from __future__ import annotations

import pytest

import medseg_weak as mw
from medseg_weak.classify.stage import ClassifierResult
from medseg_weak.evaluate.stage import EvalResult
from medseg_weak.explain.stage import CamsResult
from medseg_weak.segment.stage import SegmenterResult

TINY = [
    "data.image_size=32",
    "classifier.epochs=1",
    "segmenter.encoder_depth=3",
    "segmenter.decoder_channels=[16, 8, 8]",
    "segmenter.epochs=1",
]


@pytest.mark.slow
def test_api_end_to_end(synth_mammo, tmp_path):
    cfg = mw.config(None, [f"data.manifest={synth_mammo}", f"runs_dir={tmp_path}", *TINY])
    outcome = mw.run_pipeline(cfg, test_domain="H3")
    assert list(outcome.timings) == ["data", "classifier", "cams", "segmenter", "oracle", "eval", "report"]
    clf, cams, seg, ev = (outcome.results[n] for n in ("classifier", "cams", "segmenter", "eval"))
    assert isinstance(clf, ClassifierResult) and isinstance(cams, CamsResult)
    assert isinstance(seg, SegmenterResult) and isinstance(ev, EvalResult)
    assert clf.best_checkpoint.is_file() and "H3/kappa" in clf.metrics["test"]
    assert clf.load_model().labels == ["A", "B", "C", "D"]
    assert cams.images == 48 and len(cams.rows()) == 48
    rows = ev.rows()
    assert {r["domain"] for r in rows} == {"H3"}  # the held-out hospital only
    assert {r["method"] for r in rows} == {"cam", "unet_cam", "unet_truth"}
    assert "| unet_cam |" in ev.table("dice", "hospital")
    # The config stored is the resolved one: the data kind filled in channels and the CAM target.
    stored = mw.run_config(outcome.run.root)
    assert stored.classifier.in_channels == 1 and stored.cams.target == "D"
    # Stage functions on the existing run: skipped when done, typed results loaded back.
    again = mw.train_segmenter(outcome.run.root)
    assert again.best_checkpoint == seg.best_checkpoint and again.best_score == seg.best_score
    rescored = mw.evaluate(outcome.run.root)
    assert [r["dice"] for r in rescored.rows()] == [r["dice"] for r in rows]
    # A changed stage setting retrains that stage only (and refuses without --force).
    stamp, clf_stamp = seg.best_checkpoint.stat().st_mtime_ns, clf.best_checkpoint.stat().st_mtime_ns
    with pytest.raises(mw.ConfigError, match=r"differs in segmenter\.lr"):
        mw.train_segmenter(outcome.run.root, ["segmenter.lr=0.01"])
    retrained = mw.train_segmenter(outcome.run.root, ["segmenter.lr=0.01"], force=True)
    assert retrained.best_checkpoint.stat().st_mtime_ns != stamp
    assert clf.best_checkpoint.stat().st_mtime_ns == clf_stamp


def test_config_from_a_config_applies_overrides():
    base = mw.config()
    cfg = mw.config(base, ["classifier.lr=0.5"])
    assert cfg.classifier.lr == 0.5 and base.classifier.lr == 1e-3
    with pytest.raises(mw.ConfigError, match=r"'classifier\.lr' must be > 0"):
        mw.config(base, ["classifier.lr=-1"])
