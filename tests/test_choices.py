"""`check_choice`: an option's value is one of its choices, or a `ValueError` names the option, value and choices."""
import pytest

from bliss_jax.choices import check_choice


def test_a_choice_passes():
  check_choice("average", "sequence", ("token", "sequence"))
  check_choice("dtype", "bfloat16", {"float32": 4, "bfloat16": 2})  # a mapping's keys are its choices


def test_another_value_names_option_value_and_choices():
  with pytest.raises(ValueError) as e:
    check_choice("SALT student", "salt_x", ("baseline", "salt"))
  assert str(e.value) == "SALT student='salt_x': expected one of ('baseline', 'salt')"
  with pytest.raises(ValueError, match=r"dtype='fp8': expected one of \('float32', 'bfloat16'\)"):
    check_choice("dtype", "fp8", {"float32": 4, "bfloat16": 2})
