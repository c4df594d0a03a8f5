"""End-to-end: dg-benchmark and search through the real CLI on the tiny built-in benchmark."""

import json

import pytest

from medseg_weak.cli import main
from tests.conftest import tiny_args


@pytest.fixture
def common(synth_mammo):
    return ["-q", *tiny_args(synth_mammo, "classifier.batch_size=4")]


@pytest.mark.slow
def test_dg_benchmark_writes_tables_for_every_selection_rule(tmp_path, common):
    run = tmp_path / "dg"
    args = [
        "dg-benchmark",
        "--recipes",
        "erm,aug+agr_sum",
        "--seeds",
        "2",
        "--domains",
        "H2",
        "--run-dir",
        str(run),
    ]
    assert main(args + common) == 0
    out = run / "dg"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2 * 2 * 3  # recipes x seeds x selection rules
    assert {r["selection"] for r in results} == {"training_domain", "oracle", "last"}
    assert {(r["recipe"], r["rule"], r["augment"]) for r in results} == {
        ("erm", "erm", False),
        ("aug+agr_sum", "agr_sum", True),
    }
    md = (out / "table_training_domain.md").read_text()
    assert "| erm |" in md and "| aug+agr_sum |" in md and "H2" in md and "±" in md
    assert (out / "table_training_domain.png").is_file()
    for recipe in ("erm", "aug+agr_sum"):
        records = (out / "H2" / recipe / "seed0" / "records.jsonl").read_text().splitlines()
        assert len(records) == 1 and {"val", "oracle", "heldout"} <= set(json.loads(records[0]))
    saved = json.loads((out / "H2" / "aug+agr_sum" / "seed0" / "stage.json").read_text())["config"]
    assert saved["classifier"]["augment"]["histogram_matching"] > 0  # "aug" switched augmentation on
    summary = (out / "summary.md").read_text()
    for selection in ("training_domain", "oracle", "last"):
        for metric in ("accuracy", "balanced_accuracy", "kappa", "auroc"):
            assert f"### {metric}, selection: {selection}" in summary
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0] == "selection,metric,recipe,heldout,mean,se,n"
    # selections x metrics x recipes (one held-out hospital, no average), then the paired gains of the
    # other recipe over erm per metric under the first selection rule
    assert len(rows) == 1 + 3 * 4 * 2 + 4
    assert "### paired gain over erm: kappa, selection: training_domain" in summary
    paired = next(line for line in rows if line.startswith("training_domain paired,kappa,aug+agr_sum,H2,"))
    chosen = {
        (r["recipe"], r["seed"]): r["heldout"]["kappa"]
        for r in results
        if r["selection"] == "training_domain"
    }
    gain = sum(chosen["aug+agr_sum", s] - chosen["erm", s] for s in (0, 1)) / 2
    assert float(paired.split(",")[4]) == pytest.approx(gain, abs=1e-5)
    seed_scores = sorted(
        r["heldout"]["kappa"] for r in results if r["selection"] == "last" and r["recipe"] == "erm"
    )
    page = (run / "report" / "index.html").read_text()  # the benchmark ends by writing the run's page
    assert 'id="benchmark"' in page and "selected on the training hospitals" in page
    kappa = next(line for line in rows if line.startswith("last,kappa,erm,H2,"))
    assert float(kappa.split(",")[4]) == pytest.approx(sum(seed_scores) / 2, abs=1e-5)
    # rerun: every run is complete and skipped; the tables are rebuilt identically
    before = (out / "results.jsonl").read_text()
    assert main(args + common) == 0
    assert (out / "results.jsonl").read_text() == before


def test_dg_benchmark_rejects_unknown_rule_before_training(tmp_path, common):
    assert main(["dg-benchmark", "--rules", "erm,agr_summ", "--run-dir", str(tmp_path / "x"), *common]) == 3
    assert not (tmp_path / "x" / "dg").exists()


@pytest.mark.parametrize(
    ("text", "rule", "augment", "adapt_bn"),
    [
        ("erm", "erm", False, False),
        ("aug", "erm", True, False),
        ("aug+pcgrad", "pcgrad", True, False),
        ("agr_sum+aug", "agr_sum", True, False),
        ("adabn", "erm", False, True),
        ("aug+pcgrad+adabn", "pcgrad", True, True),
    ],
)
def test_recipe_names_say_rule_and_augmentation(text, rule, augment, adapt_bn):
    from medseg_weak.classify.dg_benchmark import Recipe

    recipe = Recipe.parse(text)
    assert (recipe.name, recipe.rule, recipe.augment, recipe.adapt_bn) == (text, rule, augment, adapt_bn)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("bogus", "'bogus' is not"),
        ("pcgrad+agr_sum", "at most one"),
        ("aug+aug", "at most one"),
        ("adabn+adabn", "at most one"),
    ],
)
def test_bad_recipes_say_what_a_recipe_is(text, says):
    from medseg_weak.classify.dg_benchmark import Recipe
    from medseg_weak.errors import ConfigError

    with pytest.raises(ConfigError, match=says) as err:
        Recipe.parse(text)
    assert "pcgrad" in str(err.value) and "adabn" in str(err.value) and "joined by '+'" in str(err.value)


def test_a_recipe_names_all_its_augmentation():
    from medseg_weak.classify.dg_benchmark import DEFAULT_AUGMENT, Recipe, run_config
    from medseg_weak.config import AugmentConfig, load_config

    plain = load_config(None, [])
    augmented = load_config(None, ["classifier.augment.gamma=0.5"])
    erm, aug = Recipe.parse("erm"), Recipe.parse("aug+pcgrad")
    assert run_config(augmented, erm, "H1", 0).classifier.augment == AugmentConfig()  # off: not named
    assert run_config(augmented, aug, "H1", 0).classifier.augment.gamma == 0.5  # the config's own
    c = run_config(plain, aug, "H2", 3)
    assert c.classifier.augment == DEFAULT_AUGMENT and DEFAULT_AUGMENT.enabled
    assert (c.classifier.surgery.rule, c.data.test_domain, c.seed) == ("pcgrad", "H2", 3)
    adapted = load_config(None, ["classifier.test_bn=hospital"])
    assert run_config(adapted, erm, "H1", 0).classifier.test_bn == "training"  # not named: off
    assert run_config(plain, Recipe.parse("adabn"), "H1", 0).classifier.test_bn == "hospital"


@pytest.mark.slow
def test_search_with_halving_ranks_and_writes_best_config(tmp_path, common):
    from medseg_weak.config import load_config

    run = tmp_path / "s"
    args = [
        "search",
        "--backbones",
        "tiny_cnn",
        "--lr",
        "0.003,0.0003,0.01",
        "--halving",
        "--run-dir",
        str(run),
    ]
    assert main(args + common) == 0
    out = run / "search"
    lines = (out / "ranking.csv").read_text().splitlines()
    assert len(lines) == 1 + 3
    assert lines[1].split(",")[3] == "2"  # the winner survived both halvings (3 -> 2 -> 1)
    assert (run / "search" / "round2").is_dir()
    best = load_config(out / "best.yaml")
    assert best.classifier.lr == float(lines[1].split(",")[2]) and best.classifier.epochs == 4


def test_search_rejects_bad_lr(tmp_path, common):
    assert main(["search", "--lr", "fast", "--run-dir", str(tmp_path / "s"), *common]) == 3


@pytest.mark.slow
def test_chain_benchmark_scores_each_recipes_segmenter_and_trains_one_oracle(tmp_path, common):
    import csv

    run = tmp_path / "chain"
    args = ["dg-benchmark", "--chain", "--recipes", "erm,pcgrad,aug", "--seeds", "1", "--domains", "H2"]
    assert main([*args, "--run-dir", str(run), *common]) == 0
    out = run / "chain"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["recipe"], r["test_domain"], r["seed"]) for r in results] == [
        ("erm", "H2", 0),
        ("pcgrad", "H2", 0),
        ("aug", "H2", 0),
    ]
    for r in results:  # each run's Dice is the mean over its held-out images, per method
        rows = list(csv.DictReader((out / "H2" / r["recipe"] / "seed0" / "eval" / "per_image.csv").open()))
        for method in ("cam", "unet_cam", "unet_truth"):
            scores = [float(x["dice"]) for x in rows if x["method"] == method]
            assert scores and all(x["domain"] == "H2" for x in rows)
            assert r["dice"][method] == pytest.approx(sum(scores) / len(scores))
        assert set(r["classifier"]) == {"accuracy", "balanced_accuracy", "kappa", "auroc"}
    erm, pcgrad, aug = (out / "H2" / recipe / "seed0" for recipe in ("erm", "pcgrad", "aug"))
    # One oracle per oracle config: pcgrad's run holds a copy of erm's finished stage, not a retrained
    # one; aug's oracle trains with the segmenter's intensity augmentation, so it is its own.
    assert (erm / "oracle" / "last.ckpt").read_bytes() == (pcgrad / "oracle" / "last.ckpt").read_bytes()
    assert results[0]["dice"]["unet_truth"] == results[1]["dice"]["unet_truth"]
    assert (erm / "oracle" / "last.ckpt").read_bytes() != (aug / "oracle" / "last.ckpt").read_bytes()
    saved = json.loads((aug / "oracle" / "stage.json").read_text())["config"]["segmenter"]["augment"]
    assert saved["gamma"] > 0 and saved["contrast"] > 0
    assert (erm / "classifier" / "last.ckpt").read_bytes() != (
        pcgrad / "classifier" / "last.ckpt"
    ).read_bytes()
    md = (out / "table_dice.md").read_text()
    for row in (
        "| erm cam |",
        "| erm unet_cam |",
        "| aug unet_cam |",
        "| erm unet_truth |",
        "| aug unet_truth |",
    ):
        assert row in md
    assert "classifier kappa" in (out / "summary.md").read_text()
    assert (out / "table_dice.png").is_file()
    # dg-benchmark ended by writing the run's page, with the benchmark section
    page = (run / "report" / "index.html").read_text()
    assert 'id="benchmark"' in page and "whole chain: held-out Dice per recipe" in page
    assert "aug unet_cam" in page and "img/chain_dice.png" in page
    before = (out / "results.jsonl").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")}
    assert main([*args, "--run-dir", str(run), *common]) == 0  # rerun: every stage skipped
    assert (out / "results.jsonl").read_text() == before
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_chain_benchmark_refuses_data_without_masks_before_training(tmp_path, common, synth_mammo):
    import csv

    rows = list(csv.DictReader(synth_mammo.open()))
    for row in rows:
        row["mask_path"] = ""
    no_masks = tmp_path / "no_masks.csv"
    with no_masks.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = main(
        [
            "dg-benchmark",
            "--chain",
            "--run-dir",
            str(tmp_path / "x"),
            *common,
            "--set",
            f"data.manifest={no_masks}",
        ]
    )
    assert code != 0
    assert not (tmp_path / "x" / "chain").exists()
