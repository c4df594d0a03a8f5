"""A rule's hyper-parameters: one config field each, the default in the rule only, refused under
another rule."""

from __future__ import annotations

import dataclasses

import pytest

from medseg_weak.classify.module import build_rule
from medseg_weak.classify.surgery import RULES
from medseg_weak.config import SurgeryConfig
from medseg_weak.errors import ConfigError


@pytest.mark.parametrize("name", RULES.names())
def test_every_rule_parameter_has_exactly_one_config_field(name):
    cls = RULES.get(name)
    params = {f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set()
    owned = {field for field, rule in SurgeryConfig.RULE_PARAMETERS.items() if rule == name}
    assert params == owned
    for field in owned:  # unset = the rule's own default (the config holds no second copy)
        assert getattr(SurgeryConfig(rule=name), field) is None
        assert getattr(build_rule(SurgeryConfig(rule=name)), field) == getattr(cls(), field)


def test_a_parameter_of_another_rule_is_refused_and_ranges_are_checked():
    with pytest.raises(
        ConfigError, match=r"'classifier\.surgery\.tau'.*setting of rule 'and_mask'.*'pcgrad'"
    ):
        SurgeryConfig(rule="pcgrad", tau=0.5)
    with pytest.raises(ConfigError, match=r"'classifier\.surgery\.tau' must be in \[0, 1\]"):
        SurgeryConfig(rule="and_mask", tau=2.0)
    assert build_rule(SurgeryConfig(rule="and_mask", tau=0.5)).tau == 0.5
