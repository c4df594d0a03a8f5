import pytest

from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.registry import Registry


def test_register_and_get():
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    def alpha():
        return 1

    assert reg.get("alpha") is alpha
    assert "alpha" in reg and len(reg) == 1 and list(reg) == ["alpha"]


def test_unknown_name_lists_valid_and_suggests():
    reg: Registry = Registry("gradient rule")
    for name in ("erm", "agr_sum", "pcgrad"):
        reg.register(name)(object())
    with pytest.raises(RegistryError) as info:
        reg.get("agr_summ")
    message = str(info.value)
    assert "unknown gradient rule 'agr_summ'" in message
    assert "Did you mean 'agr_sum'" in message
    assert "agr_sum, erm, pcgrad" in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)


def test_duplicate_registration_is_a_bug():
    reg: Registry = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
