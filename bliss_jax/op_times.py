"""Per-op device time in a `jax.profiler` trace, by HLO instruction: which ops a compiled step spends its time in.

A trace directory holds one `*.xplane.pb` per host (`jax.profiler.trace`). Its events are read with jaxlib's
`ProfileData` (no TensorBoard or XProf needed). An event of an XLA op carries the stats "hlo_module" and "hlo_op";
on a GPU or TPU they lie on the device planes ("/device:..."; a fusion's kernels are summed into it), on the CPU on
the host threads that run the program. With an HLO dump of the same run (`XLA_FLAGS=--xla_dump_to=DIR`), each op is
shown with its line of the optimised module: result shape, kind and the JAX operation it came from. On a GPU, XLA
launches runs of kernels as CUDA graphs ("command_buffer" ops), which a trace shows as one op each: profile with
`XLA_FLAGS=--xla_gpu_enable_command_buffer=` to see the kernels. On the CPU, XLA runs independent ops side by side
on its threads, so an op's time is its wall time next to whatever else ran, not its cost alone.
"""
import collections
import dataclasses
import glob
import os
import re
from typing import Dict, List, Optional


@dataclasses.dataclass(frozen=True)
class OpTime:
  module: str
  op: str
  seconds: float  # summed over the trace
  count: int  # events (kernels) summed


def _xplane_files(trace_dir: str) -> List[str]:
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not files:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir!r}: not a jax.profiler trace directory")
  return files


def op_times(trace_dir: str) -> List[OpTime]:
  """The ops of every XLA program in the trace, by total self time (less that of the ops nested in them), longest
  first. Device planes are read where the trace has any (accelerators), else the host's (CPU). Events without
  "hlo_op" (copies, host callbacks) are summed under their own name in module "(other)" on device planes and left
  out on the host."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  device, host = collections.Counter(), collections.Counter()
  counts = collections.Counter()
  for path in _xplane_files(trace_dir):
    for plane in ProfileData.from_file(path).planes:
      on_device = plane.name.startswith("/device:")
      if not on_device and not plane.name.startswith("/host:CPU"):
        continue
      for line in plane.lines:
        for event, self_ns in _self_times(line.events):
          stats = dict(event.stats)
          op = stats.get("hlo_op")
          if op is None and not on_device:
            continue
          key = ((on_device, str(stats.get("hlo_module", "")), str(op)) if op is not None
                 else (on_device, "(other)", event.name))
          (device if on_device else host)[key] += self_ns
          counts[key] += 1
  times = device or host
  return sorted((OpTime(k[1], k[2], ns * 1e-9, counts[k]) for k, ns in times.items()), key=lambda t: -t.seconds)


def _self_times(events):
  """(event, its duration less that of the events nested in it on the same line): a CPU program's while loop or call
  encloses the ops of its body, whose time is theirs."""
  events = sorted(events, key=lambda e: (e.start_ns, -e.duration_ns))
  self_ns = [e.duration_ns for e in events]
  stack = []  # indices of the enclosing events
  for i, e in enumerate(events):
    while stack and events[stack[-1]].end_ns <= e.start_ns:
      stack.pop()
    if stack:
      self_ns[stack[-1]] -= e.duration_ns
    stack.append(i)
  return zip(events, self_ns)


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(dump_dir: str, module: str) -> Dict[str, str]:
  """Instruction name -> "result-shape kind (jax op name)" of the optimised HLO of `module` in an XLA dump directory
  (the largest `*<module>*after_optimizations.txt`); empty when the dump holds no such module."""
  candidates = [p for p in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
                if f".{module}." in os.path.basename(p)]
  if not candidates:
    return {}
  out = {}
  with open(max(candidates, key=os.path.getsize)) as f:
    for text in f:
      m = _INSTRUCTION.match(text)
      if not m or m.group(1) in out:
        continue
      body = m.group(2)
      shape = body.split(" ", 1)[0]
      kind = re.search(r"\b(fusion|custom-call|convolution|dot|copy|all-reduce|scatter|gather|reduce|"
                       r"dynamic-update-slice|dynamic-slice|transpose|bitcast|while|conditional)\(", body)
      fusion_kind = re.search(r"kind=(k\w+)", body)
      target = re.search(r'custom_call_target="([^"]*)"', body)
      op_name = _OP_NAME.search(body)
      out[m.group(1)] = " ".join(x for x in (
          shape[:60], kind.group(1) if kind else "", fusion_kind.group(1) if fusion_kind else "",
          target.group(1) if target else "", f"({op_name.group(1)[-90:]})" if op_name else "") if x)
  return out


def xla_dump_dir() -> Optional[str]:
  """The directory `XLA_FLAGS=--xla_dump_to=...` names, if any."""
  m = re.search(r"--xla_dump_to=(\S+)", os.environ.get("XLA_FLAGS", ""))
  return m.group(1) if m else None


def by_kind(times: List[OpTime]) -> List[OpTime]:
  """The ops summed by kind, their name without its numeric suffix ("fusion.12" -> "fusion"; module "*" where they
  come from several), longest first; `count` is the number of ops."""
  seconds, ops, modules = collections.Counter(), collections.Counter(), collections.defaultdict(set)
  for t in times:
    kind = re.sub(r"[._]\d+$", "", t.op)
    seconds[kind] += t.seconds
    ops[kind] += 1
    modules[kind].add(t.module)
  return sorted((OpTime(next(iter(modules[k])) if len(modules[k]) == 1 else "*", k, seconds[k], ops[k])
                 for k in seconds), key=lambda t: -t.seconds)


def format_table(times: List[OpTime], per: int = 1, top: int = 20, dump_dir: Optional[str] = None,
                 kinds: int = 0) -> str:
  """The `top` ops as lines "ms (per `per` steps)  share  count  op  [HLO line]", then the rest summed; with `kinds`,
  then the longest kinds of op (`by_kind`) as "ms  share  number of ops  kind"."""
  total = sum(t.seconds for t in times)
  if not total:
    return "no op events in the trace"
  lookup = {}
  lines = [f"{1e3 * total / per:9.2f} ms per step in {len(times)} ops (all)"]
  for t in times[:top]:
    if dump_dir and t.module not in lookup:
      lookup[t.module] = hlo_instructions(dump_dir, t.module)
    hlo = lookup.get(t.module, {}).get(t.op, "")
    lines.append(f"{1e3 * t.seconds / per:9.2f} ms {100 * t.seconds / total:5.1f}% x{t.count // per:<4d} "
                 f"{t.op}  {hlo}".rstrip())
  rest = sum(t.seconds for t in times[top:])
  if rest:
    lines.append(f"{1e3 * rest / per:9.2f} ms {100 * rest / total:5.1f}% in the other {len(times) - top} ops")
  if any(t.op.startswith("command_buffer") for t in times[:top]):
    lines.append("(command_buffer ops are CUDA graphs of many kernels: XLA_FLAGS=--xla_gpu_enable_command_buffer= "
                 "runs the kernels one by one, to see them)")
  if kinds:
    lines.append("by kind of op:")
    lines += [f"{1e3 * k.seconds / per:9.2f} ms {100 * k.seconds / total:5.1f}% {k.count:4d} ops  {k.op}"
              for k in by_kind(times)[:kinds]]
  return "\n".join(lines)
