"""QualityConfig: defaults, from_dict with dotted keys, and value checks that name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medseg_weak.config import Config, QualityConfig, from_dict, load_config
from medseg_weak.errors import ConfigError


def test_from_dict_and_defaults():
    raw = {"mask_weight": 0, "decoder_channels": [16, 8, 8], "encoder_depth": 3}
    cfg = from_dict(QualityConfig, raw, "quality")
    assert cfg.mask_weight == 0.0 and cfg.decoder_channels == (16, 8, 8) and cfg.in_channels == 3
    with pytest.raises(ConfigError, match=r"unknown key 'quality.mask_wieght' \(did you mean"):
        from_dict(QualityConfig, {"mask_wieght": 1}, "quality")
    with pytest.raises(ConfigError, match=r"'quality\.mask_target' must be one of per_kind, any"):
        from_dict(QualityConfig, {"mask_target": "all"}, "quality")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"mask_weight": -1.0}, "quality.mask_weight"),
        ({"encoder_depth": 3}, "quality.decoder_channels"),  # 5 default channel counts for 3 stages
        ({"in_channels": 2}, "quality.in_channels"),
        ({"monitor": "train/loss"}, "quality.monitor"),
        ({"epochs": 0}, "quality.epochs"),
        ({"dropout": 1.0}, "quality.dropout"),
    ],
)
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        QualityConfig(**changes)


def test_the_run_config_holds_the_validation_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "quality: {epochs: 3}\ninterpret: {methods: [gradcam]}\ninvariance: {transforms: [rotation]}\n"
    )
    cfg = load_config(path, ["invariance.images=8"])
    assert cfg.quality.epochs == 3 and cfg.interpret.methods == ("gradcam",)
    assert cfg.invariance.transforms == ("rotation",) and cfg.invariance.images == 8
    assert Config().interpret.images == 64
    with pytest.raises(ConfigError, match=r"'interpret\.images' must be"):
        load_config(path, ["interpret.images=1"])
    with pytest.raises(ConfigError, match=r"'invariance\.steps' must be"):
        load_config(path, ["invariance.steps=1"])


def test_config_module_is_torch_free():
    code = "import sys, medseg_weak.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
