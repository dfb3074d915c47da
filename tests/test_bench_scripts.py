"""The benchmark scripts time the programs the training loop runs (docs/ARCHITECTURE.md's figures come from them)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_bench_train_times_the_step_its_warm_up_compiled(script_env, tmp_path):
  """The timed steps run in the mesh and logical-rule context the warm-up compiled in: outside it JAX traces the step
  anew (a second program, without the sharding constraints), which the first GPU run showed as a recompilation in
  the first round. The script reports the compilations and fails if any happens after the warm-up; `--profile`
  traces steps of each variant after the timing (still without compiling) and prints its longest ops; a variant that cannot be built here (the
  cuDNN attention of a float32 model) is reported and left out, and the others are timed."""
  p = subprocess.run([sys.executable, "scripts/bench_train.py", "--preset", "tiny", "--batch_size", "2",
                      "--sequence_length", "32", "--steps", "2", "--rounds", "1", "--warmup_steps", "2",
                      "--data_devices", "1", "--loss_chunk", "256,0", "--attention", "einsum,cudnn",
                      "--profile", str(tmp_path / "trace")],
                     cwd=REPO, env=script_env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
  assert "each variant's step compiled 1, 1 program(s) in its warm-up, none after" in p.stdout, p.stdout
  assert ("left out, failed to compile or run: attention cudnn, head default, loss chunk 0, 1 data device(s): "
          "ValueError: ModelConfig.attention='cudnn' computes in bfloat16") in p.stdout, p.stdout
  for variant in ("einsum_default_256_1", "einsum_default_0_1"):
    assert list((tmp_path / "trace" / variant).glob("plugins/profile/*/*.xplane.pb")), p.stderr[-2000:]
  table = p.stdout.split("device time per step by op, attention einsum, head default, loss chunk 0, 1 data "
                         "device(s)")[1]
  assert " ms per step in " in table and "by kind of op:" in table, p.stdout
