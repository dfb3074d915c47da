"""t5x-style command-line handling shared by the scripts: gin files, search paths, `--gin.KEY=VALUE`, task
registrations, multi-host.

Every script that reads a task by name takes the same task registrations (`--tasks_module`, `--gin_file`,
`--gin.KEY=VALUE`) and resolves the registrations a gin file holds (`TASK = @register_local_files_task()`,
`resolve_task_registrations`) before anything reads a task by name, so a task can be named by its string too
(`compare.eval_sets`): training scripts after `setup`, the others with `register_tasks`. A script with flags of its
own takes these out of its arguments with `split_args`.

Errors that users make (a missing gin file, an unknown configurable or parameter, an unparsable value) stop the run
before anything is built, with a `CliError` whose message names the file or binding at fault. `run_script` is every
gin script's entry point: `--help` prints the script's docstring, a `CliError` prints `error: ...` and exits with
status 2.
"""
import argparse
import dataclasses
import importlib
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import gin

from bliss_jax import host_allocator
from bliss_jax.cache_dir import cache_dir

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEARCH_PATHS = (os.path.join(REPO_ROOT, "gin_configs"),)


class CliError(SystemExit):
  """A user error on the command line or in a gin file; exits with status 2 and the message."""

  def __init__(self, message: str):
    super().__init__(f"error: {message}")
    self.message = message
    self.code = 2  # the exit status (SystemExit's own would be 1 for a message)


def run_script(main: Callable[[List[str]], None], doc: str, argv: Optional[List[str]] = None) -> None:
  """Run a script's `main(argv)`: `-h`/`--help` prints `doc` and exits 0; a `CliError` prints `error: <message>` on
  stderr and exits with status 2."""
  argv = sys.argv[1:] if argv is None else argv
  if "-h" in argv or "--help" in argv:
    print(doc.strip())
    raise SystemExit(0)
  try:
    main(argv)
  except CliError as e:
    print(f"error: {e.message}", file=sys.stderr)
    raise SystemExit(2) from None


@dataclasses.dataclass
class Args:
  gin_files: List[str]
  gin_bindings: List[str]
  gin_search_paths: List[str]
  tasks_modules: List[str]
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None


def parse_args(argv: List[str]) -> Args:
  """Splits `--gin.KEY=VALUE` out of argv (argparse cannot express it) and parses the rest; any other flag is an
  error."""
  args, unknown = split_args(argv)
  if unknown:
    raise CliError(f"unknown argument(s) {unknown}; see the script's --help")
  return args


def split_args(argv: List[str]) -> Tuple[Args, List[str]]:
  """(the gin and task-registration flags of argv, the other arguments, in order): for a script with flags of its
  own, which parses the rest itself."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      bindings.append(arg[len("--gin."):])
    elif arg.startswith("--gin."):
      raise CliError(f"{arg!r}: a gin binding needs a value, as --gin.KEY=VALUE")
    else:
      rest.append(arg)
  parser = argparse.ArgumentParser(allow_abbrev=False)
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--gin_search_paths", default="")
  parser.add_argument("--tasks_module", action="append", default=None)
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  ns, unknown = parser.parse_known_args(rest)
  search = [p for p in ns.gin_search_paths.split(",") if p] + list(DEFAULT_SEARCH_PATHS)
  return Args(gin_files=ns.gin_file, gin_bindings=ns.gin_bindings + bindings, gin_search_paths=search,
              tasks_modules=ns.tasks_module if ns.tasks_module is not None else ["tasks"],
              coordinator_address=ns.coordinator_address, num_processes=ns.num_processes,
              process_id=ns.process_id), unknown


def resolve_gin_file(path: str, search_paths: List[str]) -> str:
  candidates = [path] + [os.path.join(d, path) for d in search_paths]
  if path.startswith("gin_configs/"):
    candidates.append(os.path.join(REPO_ROOT, path))
  for c in candidates:
    if os.path.isfile(c):
      return c
  raise CliError(f"gin file {path!r} not found (looked in: {', '.join(candidates)})")


def _not_a_package_probe(record: logging.LogRecord) -> bool:
  """False for the `Path not found` error gin logs while it probes each search path for an `include`d file as a
  Python package resource, before it finds the file in a later search path (a real miss raises an IOError)."""
  return not (record.levelno == logging.ERROR and str(record.msg).startswith("Path not found:"))


def parse_gin(args: Args) -> None:
  """Parse gin files then bindings; unknown names and bad values become `CliError`s naming the culprit."""
  for p in args.gin_search_paths:
    gin.add_config_file_search_path(p)
  files = [resolve_gin_file(f, args.gin_search_paths) for f in args.gin_files]
  root_logger = logging.getLogger()
  root_logger.addFilter(_not_a_package_probe)
  try:
    for f in files:
      try:
        gin.parse_config_file(f)
      except (ValueError, SyntaxError, IOError) as e:
        raise CliError(f"in gin file {f}: {e}") from None
  finally:
    root_logger.removeFilter(_not_a_package_probe)
  for b in args.gin_bindings:
    try:
      gin.parse_config(b)
    except (ValueError, SyntaxError) as e:
      hint = ""
      if "=" in b and not b.split("=", 1)[1].strip()[:1] in "'\"@%[({-0123456789TFN":
        hint = " (gin values are Python literals: quote strings, e.g. --gin.MODEL_DIR=\"'/tmp/x'\")"
      raise CliError(f"bad gin binding {b!r}: {e}{hint}") from None


COMPILATION_CACHE_ENV_VAR = "BLISS_JAX_COMPILATION_CACHE"


def enable_compilation_cache() -> Optional[str]:
  """JAX's persistent compilation cache under `$BLISS_JAX_COMPILATION_CACHE` (default: `$BLISS_JAX_CACHE/jax`, i.e.
  ~/.cache/bliss_jax/jax; "0" or "" turns it off). A pipeline compiles the same train step for many models of one
  shape (every method's target), and a rerun compiles everything again: both load the executable instead."""
  path = os.environ.get(COMPILATION_CACHE_ENV_VAR, os.path.join(cache_dir(), "jax"))
  if path in ("", "0"):
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return path


CPU_DEVICES_ENV_VAR = "BLISS_JAX_CPU_DEVICES"
# One XLA:CPU device per core: the host device count, and XLA:CPU's concurrency-optimised scheduler off (with it, two
# all-reduces of one step were issued in different orders on the two devices and deadlocked, docs/ARCHITECTURE.md).
CPU_DEVICE_FLAGS = ("--xla_force_host_platform_device_count={n}",
                    "--xla_cpu_enable_concurrency_optimized_scheduler=false")


def cpu_device_count(value: str) -> int:
  """The device count `$BLISS_JAX_CPU_DEVICES` asks for: a positive integer, or "cores": the cores this process may
  run on, rounded down to a power of two (so that the usual power-of-two batch sizes split evenly)."""
  if value == "cores":
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 << (max(cores, 1).bit_length() - 1)
  if not value.isdigit() or int(value) < 1:
    raise CliError(f"{CPU_DEVICES_ENV_VAR}={value!r} is neither a positive device count nor 'cores'")
  return int(value)


def use_cpu_cores(environ=os.environ) -> Optional[int]:
  """With `$BLISS_JAX_CPU_DEVICES` set (opt-in), split the CPU into that many XLA devices (`cpu_device_count`) by
  adding `CPU_DEVICE_FLAGS` to XLA_FLAGS, unless XLA_FLAGS sets the host device count already. XLA:CPU runs most of
  a step's fusions on one thread; a batch split over per-core devices (data parallelism: the same global batch and
  gradient up to summation order) uses the cores one device leaves idle. Only CPU devices change (a GPU/TPU run
  ignores them); it must run before JAX starts its backends, as `setup` does. Returns the count set, or None."""
  value = environ.get(CPU_DEVICES_ENV_VAR, "")
  flags = environ.get("XLA_FLAGS", "")
  if not value or "--xla_force_host_platform_device_count" in flags:
    return None
  n = cpu_device_count(value)
  environ["XLA_FLAGS"] = " ".join([flags] * bool(flags) + [f.format(n=n) for f in CPU_DEVICE_FLAGS])
  return n


def setup(args: Args) -> None:
  """Per-core CPU devices (`use_cpu_cores`), the host allocator (`host_allocator.keep_freed_memory`), logging,
  multi-host start-up, task modules, configurables, gin parsing (`load_gin`); in that order. A script then resolves
  the gin file's task registrations (`resolve_task_registrations`)."""
  use_cpu_cores()
  host_allocator.keep_freed_memory()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("absl", "orbax", "jax"):  # orbax logs every save at INFO
    logging.getLogger(noisy).setLevel(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  enable_compilation_cache()
  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  partitioning.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # the input pipeline never takes accelerator memory
  load_gin(args)


def load_gin(args: Args) -> None:
  """Import the tasks modules and the configurables, then parse the gin files and bindings."""
  for module in args.tasks_modules:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise CliError(f"--tasks_module {module!r} could not be imported: {e}") from None
  importlib.import_module("bliss_jax.configurables")
  parse_gin(args)


def register_tasks(args: Args) -> list:
  """The task registration of a script that trains nothing: `load_gin`, then the registrations the gin config holds
  (`resolve_task_registrations`). Returns what they returned (the registered names)."""
  load_gin(args)
  return resolve_task_registrations(args.tasks_modules)


def resolve_task_registrations(tasks_modules: Sequence[str]) -> list:
  """Call, once each, every evaluated reference (`@fn()`, any scope) in the parsed gin config to a configurable defined
  in one of `tasks_modules` or their submodules (their configurables register tasks: `register_local_files_task`,
  `register_local_mixture`, `benchmark_mixture`, `c4_task`, ...; the library's own, `bliss_jax.*`, never do), in the
  order gin holds them; a registration that fails is a `CliError` naming it. A configurable that takes the name (a
  training function) calls the registration again when it resolves its bindings: registering is idempotent."""
  import gin.config  # pylint: disable=g-import-not-at-top
  in_tasks = lambda module: not (module == "bliss_jax" or module.startswith("bliss_jax.")) and any(
      module == m or module.startswith(m + ".") for m in tasks_modules)
  results = {}
  for ref in gin.config.iterate_references(gin.config._CONFIG):  # pylint: disable=protected-access
    if ref.evaluate and ref.scoped_selector not in results and in_tasks(ref.configurable.wrapped.__module__):
      try:
        results[ref.scoped_selector] = ref.scoped_configurable_fn()
      except (FileNotFoundError, ValueError) as e:
        message = str(e).split("\n  In call to configurable")[0]  # without the line gin adds
        raise CliError(f"registering the tasks of @{ref.scoped_selector}(): {message}") from None
  return list(results.values())


def run_gin_function(name: str, args: Args):
  """Call configurable `name` (a training function taking `extra_records`), which writes the parsed config to
  MODEL_DIR/config.gin with its own records once the command is known to be valid and compatible with the run there:
  a failed command leaves an existing run's config.gin as it was."""
  del args
  return gin.get_configurable(name)(extra_records={"config.gin": gin.config_str()})


def write_config_gin(root: str, *, finished: bool) -> None:
  """ROOT/config.gin of a pipeline: written when ROOT has none yet (a new run) and, atomically, once the command has
  finished (`finished=True`); a failed command leaves an existing run's record as it was."""
  from bliss_jax.training import run_config  # pylint: disable=g-import-not-at-top
  path = os.path.join(root, "config.gin")
  if finished or not os.path.exists(path):
    os.makedirs(root, exist_ok=True)
    run_config.write_atomically(path, gin.config_str())


def print_summary(result) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0 or result is None:
    return
  run = ModelDir(result.model_dir)
  print(f"\nfinished step {result.final_step}")
  if result.last_eval:
    e = result.last_eval
    print(f"held-out loss {e['loss']:.4f}  perplexity {e['perplexity']:.2f}  next-token accuracy {e['accuracy']:.4f}  "
          f"({e['eval_sample']}, {int(e['num_tokens'])} tokens)")
  print(f"metrics:      {run.metrics_path}")
  print(f"tensorboard:  tensorboard --logdir {run.tensorboard_dir()}")
  print(f"checkpoints:  {run.checkpoints_dir}")
