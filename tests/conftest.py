"""Test-session set-up: 8 host CPU devices for the sharding tests, XLA:CPU compiling without LLVM optimisation, quiet
TF, one persistent compilation cache for the session, shared fixtures.

XLA_FLAGS must be set before jax is imported anywhere, so it is done here at import time. Tests that want one
device use ``jax.devices()[:1]``.
"""
import os

# LLVM's backend optimisation off: most test programs run a few times, so compiling them is most of their cost (the
# bilevel step's tests take half the CPU time); scripts run as subprocesses get the default (`script_env`).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from bliss_jax import host_allocator  # noqa: E402

host_allocator.keep_freed_memory()  # freed host memory kept for the next execution, before XLA's threads exist

import pathlib
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

SHARED_DATA = REPO.parent / "shared" / "data"


# Files whose parametrized tests each build their own module fixture (one pipeline per parameter): `scripts/test.sh`'s
# workers take each parameter's tests as one unit, so the pipelines run side by side instead of one after another.
SPLIT_BY_PARAMETER = ("tests/test_pipeline_kills.py",)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) where xdist is not installed
def pytest_xdist_make_scheduler(config, log):
  """pytest-xdist's `--dist loadfile`, with the files of SPLIT_BY_PARAMETER split by parameter, in collection order
  (`pytest_collection_modifyitems`) rather than largest file first."""
  if config.getvalue("dist") != "loadfile":
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=g-import-not-at-top

  class FileOrParameter(LoadFileScheduling):
    def _split_scope(self, nodeid):
      path = nodeid.split("::", 1)[0]
      if path in SPLIT_BY_PARAMETER and nodeid.endswith("]"):
        return path + "[" + nodeid.rsplit("[", 1)[1]
      return path

  config.option.loadscopereorder = False
  return FileOrParameter(config, log)


def pytest_collection_modifyitems(items):
  """Integration tests first (a stable sort, each file's tests kept together): with the suite split over workers by
  file (`scripts/test.sh`), the long files start first and the short unit files fill in behind them."""
  items.sort(key=lambda item: item.get_closest_marker("integration") is None)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """JAX's persistent compilation cache in a directory of this session, for every program however small: each
  `train` (and each test) jits new closures, so the same step for the same shapes would otherwise compile again; the
  cache loads it instead. In-process `cli.setup` and the scripts run as subprocesses (`script_env`) use it too."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
  from bliss_jax import cli  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("jax_cache"))
  os.environ[cli.COMPILATION_CACHE_ENV_VAR] = path
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  cc.reset_cache()
  return path


@pytest.fixture(scope="session")
def shared_data():
  """../shared/data, or a clean skip when the checkout has no shared/ beside it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def spread_params():
  """`spread(params, seed)`: params + 0.5 · N(0, 1) noise, leaf by leaf. Init's 0.02 scale makes every next-token
  distribution nearly uniform, which would hide what a model conditions on and let greedy decoding tie."""
  import jax  # pylint: disable=g-import-not-at-top

  def spread(params, seed):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.5 * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)])

  return spread


@pytest.fixture(scope="session")
def script_env(compilation_cache):
  """The environment of a script run as a subprocess: one CPU device, as on a user's machine, and the session's JAX
  compilation cache, so later runs of the same shapes mostly load executables."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(BLISS_JAX_COMPILATION_CACHE=compilation_cache, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  return env


@pytest.fixture(scope="session")
def run_script(script_env):
  """`run_script(args, log_path)`: the Popen of `python ARGS` in the repository root (`script_env`), its stdout and
  stderr written to `log_path`."""
  def start(args, log_path):
    with open(log_path, "w") as log:
      return subprocess.Popen([sys.executable, *args], cwd=REPO, env=script_env, stdout=log, stderr=subprocess.STDOUT)

  return start


@pytest.fixture(scope="session")
def kill_when_written(run_script):
  """`kill_when_written(args, trigger, sig, log_path)`: runs `python ARGS` (`run_script`) and sends it `sig` as soon
  as the file or directory `trigger` exists (a checkpoint step mid-stage, a stage's record at a boundary), then waits
  for it to end. Fails if the script ended before `trigger` appeared, naming the log's end."""
  def kill(args, trigger, sig, log_path):
    proc = run_script(args, log_path)
    while not trigger.exists() and proc.poll() is None:
      time.sleep(0.05)
    assert proc.poll() is None, f"{args} ended before {trigger} appeared:\n" + log_path.read_text()[-3000:]
    proc.send_signal(sig)
    proc.wait(timeout=60)

  return kill
