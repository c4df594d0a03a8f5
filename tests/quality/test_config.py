"""QualityConfig: defaults, from_dict with dotted keys, and value checks that name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medseg_weak.config import from_dict
from medseg_weak.errors import ConfigError
from medseg_weak.quality.config import QualityConfig


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


def test_config_module_is_torch_free():
    code = "import sys, medseg_weak.quality.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
