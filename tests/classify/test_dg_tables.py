"""The dg-benchmark's derived tables: paired gains over ERM and the gradient-conflict summary."""

from pathlib import Path

import pytest

from medseg_weak.classify.dg_benchmark import paired_gains, write_conflicts, write_summary
from medseg_weak.dg_chain import write_chain_tables
from medseg_weak.rundir import RunDir


def _outcome(
    recipe: str, domain: str, seed: int, accuracy: float, selection: str = "training_domain"
) -> dict:
    return {
        "selection": selection,
        "recipe": recipe,
        "test_domain": domain,
        "seed": seed,
        "heldout": {"accuracy": accuracy},
    }


def test_paired_gains_subtract_the_erm_run_of_the_same_hospital_and_seed() -> None:
    outcomes = [
        _outcome("erm", "H1", 0, 0.5),
        _outcome("erm", "H1", 1, 0.9),
        _outcome("erm", "H2", 0, 0.6),
        _outcome("agr_sum", "H1", 0, 0.6),
        _outcome("agr_sum", "H1", 1, 0.95),
        _outcome("agr_sum", "H2", 0, 0.4),
        _outcome("agr_sum", "H2", 1, 0.7),  # no erm run with this seed: not paired
        _outcome("agr_sum", "H1", 0, 0.0, selection="last"),  # another selection rule: ignored
    ]
    chosen = [o for o in outcomes if o["selection"] == "training_domain"]
    gains = paired_gains(chosen, lambda o: o["heldout"]["accuracy"])
    assert [(r, d) for r, d, _ in gains] == [("agr_sum", "H1"), ("agr_sum", "H1"), ("agr_sum", "H2")]
    assert [g for _, _, g in gains] == pytest.approx([0.1, 0.05, -0.2])


def test_summary_reports_paired_gains_and_wins(tmp_path: Path) -> None:
    outcomes = [_outcome("erm", "H1", s, a) for s, a in enumerate((0.5, 0.9, 0.7))]
    outcomes += [_outcome("pcgrad", "H1", s, a) for s, a in enumerate((0.6, 0.9, 0.6))]
    write_summary(tmp_path, outcomes)
    md = (tmp_path / "summary.md").read_text()
    assert "| pcgrad | 0.000 ± 0.058 |" in md  # gains 0.1, 0, -0.1
    assert "pcgrad: better than erm in 1 of 3 pairs, worse in 1, level in 1." in md
    # without an erm run there is nothing to pair with
    write_summary(tmp_path, [o for o in outcomes if o["recipe"] == "pcgrad"])
    assert "paired gain" not in (tmp_path / "summary.md").read_text()


def test_chain_tables_pair_each_recipes_dice_with_the_erm_chain_of_its_seed(tmp_path: Path) -> None:
    def chain(recipe: str, seed: int, cam: float, unet: float) -> dict:
        return {
            "recipe": recipe,
            "test_domain": "H4",
            "seed": seed,
            "dice": {"cam": cam, "unet_cam": unet, "unet_truth": 0.9},
            "classifier": {"accuracy": 0.5, "balanced_accuracy": 0.5, "kappa": 0.0, "auroc": 0.5},
        }

    # seeds spread widely (0.2 vs 0.6) but aug beats erm by 0.1 UNet-on-CAM Dice on both
    outcomes = [chain("erm", 0, 0.3, 0.2), chain("erm", 1, 0.5, 0.6)]
    outcomes += [chain("aug", 0, 0.2, 0.3), chain("aug", 1, 0.5, 0.7)]
    write_chain_tables(tmp_path, outcomes)
    md = (tmp_path / "summary.md").read_text()
    assert "### paired gain over erm: unet_cam Dice" in md
    assert "| aug | 0.100 ± 0.000 |" in md
    assert "| aug | -0.050 ± 0.050 |" in md  # cam: -0.1 and 0
    assert "aug: better than erm in 0 of 2 pairs, worse in 1, level in 1." in md
    assert (tmp_path / "table_gain_unet_cam.csv").is_file()
    write_chain_tables(tmp_path, outcomes[2:])  # no erm chain: nothing to pair with
    assert "paired gain" not in (tmp_path / "summary.md").read_text()


def test_conflict_summary_reads_each_runs_logged_diagnostics(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    logs = {
        "erm": (
            "epoch,step,surgery/cos/h0-h1,surgery/disagree/all,train/loss\n"
            "0,9,0.5,0.6,\n0,10,,,0.3\n0,19,-0.25,0.7,\n"
        ),
        "agr_sum": "epoch,step,train/loss\n0,9,0.4\n",  # logged no diagnostics: left out
    }
    for recipe, text in logs.items():
        folder = run.stage(f"dg/H1/{recipe}/seed0") / "logs"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(text)
    outcomes = [_outcome(r, "H1", 0, 0.5, selection=s) for r in logs for s in ("last", "training_domain")]
    write_conflicts(tmp_path, run, outcomes)
    assert (tmp_path / "conflicts.md").read_text().splitlines()[2] == "| erm | 2 | 0.125 | 0.500 | 0.650 |"
    assert (tmp_path / "conflicts.csv").read_text().splitlines() == [
        "recipe,hospital_pairs_logged,mean_cosine,negative_cosine_fraction,sign_disagreement",
        "erm,2,0.125,0.5,0.65",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_conflicts(empty, RunDir(empty), outcomes)
    assert not list(empty.iterdir())
