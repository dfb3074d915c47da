"""A run's computation-relevant configuration, stored in MODEL_DIR/run_config.json and checked on every resume.

The record holds what determines the numbers a run computes: the model's shape, the task vocabulary's size and
fingerprint (`model_vocabulary`), batch size, sequence length, micro-batches, seed, `num_steps` (the learning-rate
schedule depends on it), the optimizer, the loss of every step (phases included), the frozen models (shape and
checkpoint step) and a description of the data source (for SeqIO sources: the task or mixture name and the source's
settings, read from the source function's closure). A function is described by its qualified name, closure and
defaults, and, for one a configuration system wraps (gin), by the arguments bound to it (`bound_arguments`). Fields that do not change the computation — eval/log/checkpoint cadence, kept checkpoints, progress bar,
`stop_at_step`, the mesh, arguments named in `COMPUTE_ONLY_ARGUMENTS` (how a loss computes the same numbers, up to
float summation order, e.g. `losses.lm.make_lm_loss`'s `chunk_tokens`) and dataclass fields whose metadata says
{"recorded": False} (`ModelConfig.attention`, the attention kernel) — are not recorded and may change freely; a field
whose metadata says {"recorded": "unless_default"} (`ModelConfig.head_dtype`) is recorded only when set
(`bliss_jax.recorded_fields`).

A resume whose configuration differs from the record is refused with every changed field (dotted path, old and new
value), unless each change is allowed by name (`allow`, e.g. `("optimizer.peak_lr",)` or `("data",)` for a whole
group); allowed changes update the record and are listed in its `changes` history. A loss change that only concerns
steps the checkpoint has already taken is no change.
"""
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from bliss_jax.recorded_fields import recorded_items

_MAX_ITEMS = 32  # longer sequences are described by length and hash
# Loss-factory arguments that change how the same numbers are computed (up to float summation order), not which ones:
# left out of every description, like the mesh.
COMPUTE_ONLY_ARGUMENTS = frozenset({"chunk_tokens"})
_MAX_DEPTH = 6


def _nothing_bound(fn) -> Optional[dict]:
  return None


# The arguments a configuration system binds to a callable it wraps, or None: the gin edge (`bliss_jax.configurables`)
# sets it to gin's bindings, so a loss given as `train.loss_factory = @selective_loss` is recorded with
# `selective_loss.ratio` and the rest of its bound parameters.
bound_arguments: Callable[[Callable], Optional[dict]] = _nothing_bound


class RunConfigChanged(ValueError):
  """A resume's configuration differs from the run's record in fields the caller did not allow to change."""


def _recorded(arguments: dict) -> dict:
  return {k: v for k, v in arguments.items() if k not in COMPUTE_ONLY_ARGUMENTS}


def describe(x, depth: int = 0):
  """A JSON value describing `x`, stable across processes: scalars as themselves, containers item by item, functions by
  qualified name with their closure's and defaults' values, `functools.partial`s by function and arguments, other
  objects by type (never by address)."""
  if x is None or isinstance(x, (bool, int, str)):
    return x
  if isinstance(x, float):
    return x if math.isfinite(x) else repr(x)
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return describe(x.item(), depth)
  if depth > _MAX_DEPTH:
    return f"<{type(x).__module__}.{type(x).__qualname__}>"
  if isinstance(x, (list, tuple, set, frozenset)):
    items = [describe(v, depth + 1) for v in x]
    if isinstance(x, (set, frozenset)):
      items = sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if len(items) > _MAX_ITEMS:
      digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
      return {"length": len(items), "sha256": digest}
    return items
  if isinstance(x, dict):
    return {str(k): describe(v, depth + 1) for k, v in x.items()}
  if dataclasses.is_dataclass(x) and not isinstance(x, type):  # only the fields records hold (`recorded_fields`)
    return {k: describe(v, depth + 1) for k, v in recorded_items(x).items()}
  if isinstance(x, functools.partial):
    return {"function": describe(x.func, depth + 1), "args": describe(x.args, depth + 1),
            "keywords": describe(_recorded(x.keywords), depth + 1)}
  if hasattr(x, "__wrapped__"):  # functools.wraps, gin configurables
    inner = describe(x.__wrapped__, depth + 1)
    bound = _recorded(bound_arguments(x) or {})
    return dict(inner, bound=describe(bound, depth + 1)) if bound and isinstance(inner, dict) else inner
  if inspect.isfunction(x):
    out = {"function": f"{x.__module__}.{x.__qualname__}"}
    cells = zip(x.__code__.co_freevars, x.__closure__ or ())
    closure = {}
    for name, cell in cells:
      try:
        closure[name] = describe(cell.cell_contents, depth + 1)
      except ValueError:  # an empty cell
        pass
    if closure:
      out["closure"] = closure
    if x.__defaults__:
      out["defaults"] = describe(x.__defaults__, depth + 1)
    if _recorded(x.__kwdefaults__ or {}):
      out["kwdefaults"] = describe(_recorded(x.__kwdefaults__), depth + 1)
    return out
  if inspect.ismethod(x):
    return {"method": f"{type(x.__self__).__qualname__}.{x.__func__.__name__}"}
  if inspect.isbuiltin(x) or isinstance(x, type):
    return f"{getattr(x, '__module__', '')}.{x.__qualname__}"
  return f"<{type(x).__module__}.{type(x).__qualname__}>"


def loss_schedule(loss_factory: Callable, loss_phases: Optional[Sequence[Tuple[int, Callable]]]) -> list:
  """[[last_step, description], ..., [None, description]]: the loss of every step, as `train`'s phases define it."""
  return [[int(last), describe(f)] for last, f in (loss_phases or ())] + [[None, describe(loss_factory)]]


def _losses_after(schedule: list, step: int) -> list:
  """The schedule restricted to the steps after `step` (merging neighbours with the same loss)."""
  out = []
  for last, desc in schedule:
    if last is not None and last <= step:
      continue
    if out and out[-1][1] == desc:
      out[-1][0] = last
    else:
      out.append([last, desc])
  return out


def canonical(x):
  """`x` as it reads back from JSON (tuples become lists), so records compare equal to fresh values."""
  return json.loads(json.dumps(x, sort_keys=True))


def _flatten(x, prefix: str = "") -> dict:
  if isinstance(x, dict) and x:
    out = {}
    for k, v in x.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  return {prefix: x}


def _allowed(key: str, allow: Sequence[str]) -> bool:
  return any(key == a or key.startswith(a + ".") for a in allow)


def changes(old: dict, new: dict, step: int) -> dict:
  """{dotted field: (old, new)} between two records, for a run resumed after `step` (losses compared from there on;
  frozen models compared by the names both have: a loss that needs a missing one fails on its own; fields one
  record lacks are not compared)."""
  old, new = canonical(old), canonical(new)
  if "loss" in old and "loss" in new:
    old["loss"], new["loss"] = _losses_after(old["loss"], step), _losses_after(new["loss"], step)
  shared = set(old.get("frozen_models", {})) & set(new.get("frozen_models", {}))
  for rec in (old, new):
    if "frozen_models" in rec:
      rec["frozen_models"] = {k: v for k, v in rec["frozen_models"].items() if k in shared}
  old.pop("changes", None)
  a, b = _flatten(old), _flatten(new)
  # a field only one side has (a record from an older version, a dataclass field added since) is not compared
  return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def check_resume(old: dict, new: dict, step: int, allow: Sequence[str] = ()) -> dict:
  """The allowed changes between the stored record `old` and this command's `new` at checkpoint `step`; raises
  `RunConfigChanged` naming every other one. `num_steps` below `step` is refused whatever `allow` says."""
  if new.get("num_steps") is not None and new["num_steps"] < step:
    raise RunConfigChanged(f"num_steps={new['num_steps']} is below the latest checkpoint's step {step}: the run is "
                           "already past it (train a new MODEL_DIR, or evaluate that step's checkpoint)")
  diff = changes(old, new, step)
  refused = {k: v for k, v in diff.items() if not _allowed(k, allow)}
  if refused:
    lines = "\n".join(f"  {k}: {_short(a)} -> {_short(b)}" for k, (a, b) in refused.items())
    groups = sorted({k.split(".")[0] for k in refused})
    raise RunConfigChanged(
        f"the run's checkpoint (step {step}) was trained with another configuration; changed:\n{lines}\n"
        f"Resuming would not continue the same computation. Use a new MODEL_DIR, restore the old values, or allow "
        f"the change explicitly with train(allow_config_change=(...)), e.g. --gin.train.allow_config_change="
        f"\"{tuple(groups)}\" (dotted names such as 'optimizer.peak_lr' allow one field).")
  return diff


def _short(v) -> str:
  s = json.dumps(v, sort_keys=True)
  return s if len(s) <= 200 else s[:200] + "..."


def write_atomically(path: str, text: str) -> None:
  """Write `text` to `path` by write-then-rename: readers see the old file or the new one, never a part."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj) -> None:
  write_atomically(path, json.dumps(obj, indent=1, sort_keys=True))


def updated(old: Optional[dict], new: dict, diff: dict, step: int) -> dict:
  """The record to store when `new` resumes the run recorded in `old` at `step`: `new`, with `old`'s losses of the
  steps already taken, `old`'s frozen models that `new` no longer loads, and `old`'s change history plus `diff`."""
  if not old:
    return canonical(new)
  old, record = canonical(old), canonical(new)
  if "loss" in old:
    record["loss"] = [p for p in old["loss"] if p[0] is not None and p[0] <= step] + _losses_after(record["loss"], step)
  if "frozen_models" in record:
    record["frozen_models"] = dict(old.get("frozen_models", {}), **record["frozen_models"])
  history = old.get("changes", []) + ([{"step": step, "fields": {k: [a, b] for k, (a, b) in diff.items()}}]
                                      if diff else [])
  if history:
    record["changes"] = history
  return record
