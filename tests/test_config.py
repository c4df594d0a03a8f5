from pathlib import Path

import pytest
import yaml

from medseg_weak.config import Config, dump_config, load_config
from medseg_weak.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, Config) and cfg.data.image_size == 128


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name


def test_configs_folder_is_not_empty():
    assert any(p.name == "demo.yaml" for p in CONFIGS)


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        None, ["data.image_size=64", "synth.kind=fundus", "data.labels=[Good, Usable]", "seed=7"]
    )
    assert cfg.data.image_size == 64
    assert cfg.synth.kind == "fundus"
    assert cfg.data.labels == ("Good", "Usable")
    assert cfg.seed == 7


def test_int_accepted_for_float():
    assert load_config(None, ["synth.spurious_cue=1"]).synth.spurious_cue == 1.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.imag_size=3",
            "unknown key 'data.imag_size' (did you mean 'image_size'?); valid keys in 'data'",
        ),
        ("data.image_size=abc", "'data.image_size' must be an integer; got 'abc'"),
        ("data.image_size=true", "'data.image_size' must be an integer"),
        ("nonsense=1", "unknown key 'nonsense'"),
        ("data=3", "'data' must be a mapping"),
        ("data.image_size", "expected KEY=VALUE"),
        ("synth.spurious_cue=[1]", "'synth.spurious_cue' must be a number"),
        ("name=[a]", "'name' must be a string"),
    ],
)
def test_bad_overrides_name_the_dotted_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_bad_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  image_sise: 64\n")
    with pytest.raises(ConfigError, match=r"'data\.image_sise'"):
        load_config(typo)


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["data.labels=[A, D]", "seed=3"])
    path = dump_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["data"]["labels"] == ["A", "D"]
    assert load_config(path) == cfg


def test_unknown_data_kind_names_the_key_and_the_kinds():
    # Kinds are a registry of the data layer, checked when a plan is validated (config stays torch-free
    # and stage-free).
    from medseg_weak.pipeline import data_summary

    with pytest.raises(ConfigError, match=r"'synth\.kind': unknown data kind 'ct'.*Valid: fundus, mammo"):
        data_summary(load_config(None, ["synth.kind=ct"]))


def test_the_data_kind_fills_channels_and_cam_target():
    from medseg_weak.data.kinds import resolve_kind_defaults

    root = Path(__file__).resolve().parents[1] / "configs"
    fundus = resolve_kind_defaults(load_config(root / "fundus_quality.yaml"))
    assert (fundus.classifier.in_channels, fundus.segmenter.in_channels, fundus.cams.target) == (
        3,
        3,
        "Reject",
    )
    mammo = resolve_kind_defaults(load_config(root / "demo.yaml"))
    assert (mammo.classifier.in_channels, mammo.cams.target) == (1, "D")
    grey = resolve_kind_defaults(load_config(root / "fundus_quality.yaml", ["classifier.in_channels=1"]))
    assert grey.classifier.in_channels == 1  # an explicit choice is kept
