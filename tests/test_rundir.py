import pytest

from medseg_weak.config import load_config
from medseg_weak.errors import ConfigError
from medseg_weak.pipeline import leave_one_out_dir
from medseg_weak.rundir import RunDir


def test_a_run_directory_refuses_another_config_before_anything_is_written(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_provenance(load_config(None, ["segmenter.epochs=3"]))
    run.write_provenance(load_config(None, ["segmenter.epochs=3", "runs_dir=elsewhere"]))  # same run
    before = (run.root / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"made by a different config \(differs in segmenter.epochs\)"):
        run.write_provenance(load_config(None, ["segmenter.epochs=4"]))
    assert (run.root / "config.yaml").read_text() == before  # nothing overwritten
    run.write_provenance(load_config(None, ["segmenter.epochs=4"]), force=True)
    assert "epochs: 4" in (run.root / "config.yaml").read_text()


def test_leave_one_out_directory_sits_next_to_the_single_run(tmp_path):
    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=demo"])
    assert leave_one_out_dir(cfg).root == tmp_path / "demo_loo"
    assert RunDir.for_config(cfg).root == tmp_path / "demo"
    assert leave_one_out_dir(cfg, tmp_path / "x").root == tmp_path / "x"


def test_a_setting_added_after_the_run_was_made_matches_at_its_default(tmp_path):
    """A run made before a setting existed (its config.yaml lacks the key) is still the same run when
    the setting is at its default, and another run when it is not."""
    import yaml

    from medseg_weak.config import load_config, to_dict
    from medseg_weak.rundir import RunDir, config_differences

    cfg = load_config(None, [])
    old = to_dict(cfg)
    del old["segmenter"]["augment"]  # as written by a version without segmenter.augment
    del old["synth"]["vendor_mode"]
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    (run.root / "config.yaml").write_text(yaml.safe_dump(old))
    run.write_provenance(cfg)  # accepted: the new settings are at their defaults
    assert config_differences(old, to_dict(load_config(None, ["segmenter.augment.gamma=0.3"]))) == [
        "segmenter.augment.gamma"
    ]
    (run.root / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r"synth\.vendor_mode"):
        run.write_provenance(load_config(None, ["synth.vendor_mode=shared"]))
    assert config_differences(to_dict(cfg), old) == []  # nor is a key the new config lacks at default
