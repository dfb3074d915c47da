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


@pytest.mark.integration
def test_bench_bilevel_memory_only_prints_each_settings_flop_estimate_per_proxy_update(script_env):
  """`--memory_only` runs nothing and compiles the program an accelerator would (no CPU rewrites); next to each
  program's peak it prints the FLOP estimate of `bilevel.step.step_flops` over a proxy train step and that estimate
  over the K_in proxy updates of a bilevel step (the target's forward counted only with γ > 0)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from bliss_jax.bilevel.step import BilevelConfig, step_flops  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.config import preset  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.flops import train_flops_per_token  # pylint: disable=g-import-not-at-top
  V, B, L, K = 256, 4, 32, 5
  env = {k: v for k, v in script_env.items() if k != "BLISS_JAX_DENSE_DOT"}
  p = subprocess.run([sys.executable, "scripts/bench_bilevel.py", "--memory_only", "--vocab_size", str(V),
                      "--batch_size", str(B), "--sequence_length", str(L), "--inner_steps", str(K),
                      "--settings", "paper,single_no_kl"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
  assert "XLA dots and einsum attention; compiled, nothing allocated" in p.stdout, p.stdout  # an accelerator's program
  rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in p.stdout.splitlines()
          if line.startswith(("proxy_step", "bilevel:"))}
  # the script's CPU configuration
  proxy = preset("tiny", vocab_size=V, num_layers=2, d_model=128, num_heads=4, num_kv_heads=4, d_ff=512)
  target = preset("tiny", vocab_size=V, num_layers=4, d_model=192, num_heads=4, num_kv_heads=4, d_ff=768)
  paper = BilevelConfig(inner_steps=K)
  single_no_kl = dataclasses.replace(paper, gamma=0.0, warm_start=True, solver_iters=1, schedule="single_pass")
  train = train_flops_per_token(proxy, L) * B * L
  for name, cfg, tgt in (("paper", paper, target), ("single_no_kl", single_no_kl, None)):
    peak, mem_ratio, est, per_update = rows["bilevel:" + name]
    assert peak > 0 and mem_ratio == pytest.approx(peak / rows["proxy_step"][0], abs=0.01)
    assert est == pytest.approx(step_flops(proxy, tgt, cfg, B, L) / train, abs=0.006)
    assert per_update == pytest.approx(est / K, abs=0.006)
  assert rows["proxy_step"][2:] == [1.0, 1.0]
  assert rows["bilevel:single_no_kl"][2] < rows["bilevel:paper"][2]  # no target forward, one HVP-sized pass
