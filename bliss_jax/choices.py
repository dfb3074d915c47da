"""The check that an option names one of its choices, for every layer (models, losses, training, bilevel, selection,
pipelines, data): one `ValueError` that names the option, the value given and the values allowed."""
from typing import Collection


def check_choice(name: str, value, choices: Collection) -> None:
  """Raise `ValueError("{name}={value!r}: expected one of (...)")` unless `value` is in `choices`."""
  if value not in choices:
    raise ValueError(f"{name}={value!r}: expected one of {tuple(choices)}")
