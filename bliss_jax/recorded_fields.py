"""Which fields of a configuration dataclass go into the records of a model, run or stage.

A field's metadata {"recorded": False} (`UNRECORDED`) keeps it out of every record: it picks a kernel for the same
function (e.g. `ModelConfig.attention`), so a run resumes, a stage's result is reused and a checkpoint is evaluated
under another choice. {"recorded": "unless_default"} (`RECORDED_UNLESS_DEFAULT`) records a field that changes the
numbers only when it is set to something other than its default, so records written before the field existed still
match a configuration that leaves it alone. Any other field is recorded.
"""
import dataclasses

UNRECORDED = {"recorded": False}
RECORDED_UNLESS_DEFAULT = {"recorded": "unless_default"}


def _kept(field: dataclasses.Field, value) -> bool:
  rule = field.metadata.get("recorded", True)
  if rule == RECORDED_UNLESS_DEFAULT["recorded"]:
    return value != field.default
  return bool(rule)


def recorded_items(x) -> dict:
  """The fields of dataclass instance `x` that its records hold, by name (not recursed into)."""
  return {f.name: getattr(x, f.name) for f in dataclasses.fields(x) if _kept(f, getattr(x, f.name))}
