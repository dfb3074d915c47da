"""The t5x-style CLI end to end: resume after stopping the process is bit-exact; bad input fails with a named cause."""
import json
import logging
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bliss_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--gin_file=base.gin", "--gin_file=models/tiny.gin", "--gin_file=data/synthetic.gin", "--tasks_module=bliss_jax",
        "--gin.NUM_STEPS=8", "--gin.SEQUENCE_LENGTH=16", "--gin.TrainSpec.log_every=1",
        "--gin.TrainSpec.eval_every=4", "--gin.TrainSpec.checkpoint_every=2", "--gin.OptimizerConfig.warmup_steps=2",
        "--gin.train.mesh_data=2", "--gin.train.mesh_model=2"]


def _run(model_dir, *extra):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), *BASE, f"--gin.MODEL_DIR='{model_dir}'", *extra]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _train_rows(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rows]


def _params(model_dir, step):
  with ocp.CheckpointManager(os.path.join(model_dir, "checkpoints"), item_names=("state", "data")) as mgr:
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  return out.state["params"], out.data


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory):
  straight = str(tmp_path_factory.mktemp("straight"))
  resumed = str(tmp_path_factory.mktemp("resumed"))
  procs = [_run(straight), _run(resumed, "--gin.train.stop_at_step=4")]
  for p in procs:
    assert p.returncode == 0, p.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["2", "4"]
  second = _run(resumed)  # a new process picks up the latest checkpoint
  assert second.returncode == 0, second.stderr[-3000:]
  return straight, resumed, second.stdout


@pytest.mark.integration
def test_resume_is_bit_exact(straight_and_resumed):
  straight, resumed, _ = straight_and_resumed
  p_straight, data_straight = _params(straight, 8)
  p_resumed, data_resumed = _params(resumed, 8)
  assert data_straight == data_resumed == {"position": 8}
  for a, b in zip(jax.tree.leaves(p_straight), jax.tree.leaves(p_resumed)):
    np.testing.assert_array_equal(a, b)
  assert _train_rows(straight) == _train_rows(resumed)  # identical loss trajectory, step by step
  losses = [r["loss"] for r in _train_rows(straight) if r["split"] == "train"]
  assert len(losses) == 8 and losses[-1] < losses[0]


@pytest.mark.integration
def test_cli_writes_metrics_config_and_prints_paths(straight_and_resumed):
  straight, _, stdout = straight_and_resumed
  assert "metrics:" in stdout and "checkpoints:" in stdout and "held-out loss" in stdout
  assert os.path.exists(os.path.join(straight, "config.gin"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(straight, "tensorboard", "train")))
  assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == ["4", "6", "8"]  # keep-last-3


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_missing_gin_file_is_named(clean_gin):
  args = cli.parse_args(["--gin_file=models/no_such_model.gin", "--tasks_module=bliss_jax"])
  with pytest.raises(cli.CliError, match="gin file 'models/no_such_model.gin' not found"):
    cli.setup(args)


def test_unknown_parameter_binding_is_named(clean_gin):
  args = cli.parse_args(["--gin_file=base.gin", "--gin.train.num_stepz=3", "--tasks_module=bliss_jax"])
  with pytest.raises(cli.CliError, match="num_stepz"):
    cli.setup(args)


def test_unquoted_string_binding_gets_a_hint(clean_gin):
  args = cli.parse_args(["--gin_file=base.gin", "--gin.MODEL_DIR=/tmp/x", "--tasks_module=bliss_jax"])
  with pytest.raises(cli.CliError, match="quote strings"):
    cli.setup(args)


def test_unknown_preset_fails_before_training(clean_gin, tmp_path):
  args = cli.parse_args(["--gin_file=base.gin", "--gin_file=models/tiny.gin", "--gin_file=data/synthetic.gin",
                         "--gin.model_config.preset='pythia_99m'", f"--gin.MODEL_DIR='{tmp_path}'",
                         "--tasks_module=bliss_jax"])
  cli.setup(args)
  with pytest.raises(ValueError, match="unknown model preset 'pythia_99m'"):
    cli.run_gin_function("train", args)
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


@pytest.mark.integration
def test_load_params_reads_only_parameters_equal_to_the_full_restore(straight_and_resumed):
  from bliss_jax.training import checkpoints
  from bliss_jax.training.model_dir import ModelDir
  straight, _, _ = straight_and_resumed
  cfg = ModelDir(straight).read_model_config()
  assert cfg.vocab_size == 512 and cfg.num_layers == 2
  step, params = checkpoints.load_params(straight)
  full, _ = _params(straight, 8)
  assert step == 8
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full)):
    np.testing.assert_array_equal(a, b)


def _script(name, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args], env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.parametrize("script", ["train.py", "run_pipeline.py", "compare.py"])
def test_help_prints_the_scripts_usage(script):
  p = _script(script, "--help")
  assert p.returncode == 0, p.stderr[-2000:]
  assert "--gin_file" in p.stdout


@pytest.mark.integration
def test_a_command_line_error_exits_2_naming_the_binding():
  p = _script("train.py", "--gin_file=base.gin", "--gin.train.num_stepz=3", "--tasks_module=bliss_jax")
  assert p.returncode == 2
  assert "\nerror: bad gin binding 'train.num_stepz=3'" in "\n" + p.stderr
  p = _script("run_pipeline.py", "--gin_file=base.gin")
  assert (p.returncode, p.stderr.strip()) == (2, "error: --pipeline=NAME is required (e.g. miniplm)")


def test_an_include_found_on_the_search_path_logs_no_error_and_a_missing_one_is_named(clean_gin, tmp_path, caplog):
  (tmp_path / "mine.gin").write_text("include 'methods/mates.gin'\n")
  cli.setup(cli.parse_args([f"--gin_file={tmp_path / 'mine.gin'}", "--tasks_module=bliss_jax"]))
  assert gin.query_parameter("MatesScorer.num_probe") == 256
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
  gin.clear_config()
  (tmp_path / "bad.gin").write_text("include 'methods/no_such_method.gin'\n")
  with pytest.raises(cli.CliError, match="no_such_method.gin"):
    cli.setup(cli.parse_args([f"--gin_file={tmp_path / 'bad.gin'}", "--tasks_module=bliss_jax"]))


def test_the_compilation_cache_needs_no_seqio(tmp_path):
  """The benchmarks turn the persistent compilation cache on (`cli.enable_compilation_cache`) on machines with the
  core stack only: its directory comes from `bliss_jax.cache_dir`, not from the SeqIO vocabulary module."""
  code = ("import sys; sys.modules['seqio'] = None\n"
          "from bliss_jax import cli; import jax\n"
          "print(cli.enable_compilation_cache(), jax.config.jax_compilation_cache_dir)")
  env = dict(os.environ, BLISS_JAX_CACHE=str(tmp_path))
  env.pop(cli.COMPILATION_CACHE_ENV_VAR, None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
  assert out.split() == [str(tmp_path / "jax")] * 2
