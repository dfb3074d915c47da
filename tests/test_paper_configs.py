"""Paper-shaped gin configs build and compile: one sharded train step is traced abstractly (jax.eval_shape), so no
parameter of the billion-parameter models is allocated."""
import gin
import jax
import pytest

from bliss_jax import cli
from bliss_jax.losses.kd import make_kd_loss
from bliss_jax.models.config import preset
from bliss_jax.training import trainer

pytestmark = pytest.mark.integration  # 8 devices (paper configs: traced at paper scale)


@pytest.fixture
def parsed():
  gin.clear_config()

  def parse(*files, bindings=()):
    args = cli.parse_args([f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings] +
                          ["--tasks_module=bliss_jax"])
    cli.setup(args)
    return args
  yield parse
  gin.clear_config()


def _spec(scope):
  with gin.config_scope(scope):
    return gin.get_configurable("TrainSpec")()


@pytest.mark.parametrize("student", ["qwen_200m", "qwen_500m", "qwen_1p2b"])
def test_miniplm_paper_students_trace(parsed, student):
  parsed("paper/miniplm_qwen.gin", bindings=[f"STUDENT='{student}'"])
  spec = _spec("student")
  assert (spec.batch_size, spec.sequence_length, spec.num_steps) == (512, 1024, 100_000)
  assert spec.optimizer.b2 == 0.98 and spec.model_config == preset(student, vocab_size=151936)
  state, metrics = trainer.abstract_train_step(spec.model_config, batch_size=spec.batch_size,
                                               sequence_length=spec.sequence_length, optimizer=spec.optimizer,
                                               num_steps=spec.num_steps)
  assert metrics["loss"].shape == () and int(state.step.size) == 1


def test_miniplm_paper_vanilla_kd_and_reference_trace(parsed):
  parsed("paper/miniplm_qwen.gin")
  spec, ref = _spec("student"), _spec("reference")
  teacher = preset(gin.query_parameter("%TEACHER_PRESET"))
  _, metrics = trainer.abstract_train_step(
      spec.model_config, batch_size=spec.batch_size, sequence_length=spec.sequence_length,
      loss_factory=lambda m, fm: make_kd_loss(m, fm, omega=1.0, rho=1.0), frozen_configs={"teacher": teacher},
      optimizer=spec.optimizer, num_steps=spec.num_steps)
  assert "kl_teacher_student" in metrics
  assert ref.model_config == preset("qwen_104m", vocab_size=151936)
  trainer.abstract_train_step(ref.model_config, batch_size=ref.batch_size, sequence_length=ref.sequence_length,
                              optimizer=ref.optimizer, num_steps=ref.num_steps)
  assert jax.device_count() == 8  # traced over the 8-device (data) mesh with FSDP rules


def test_adafactor_with_fsdp_traces_on_8_devices():
  """Adafactor's (1,)-shaped placeholders and factored moments cannot take the parameters' FSDP sharding over 8
  devices; they are replicated instead (partitioning._fit)."""
  state, metrics = trainer.abstract_train_step(
      preset("tiny", vocab_size=512), batch_size=8, sequence_length=16, fsdp=True, num_steps=10,
      optimizer=trainer.OptimizerConfig(name="adafactor", warmup_steps=1))
  assert metrics["loss"].shape == ()
  kernel = state.params["layer_0"]["mlp"]["wi"]["kernel"]
  assert kernel.sharding.spec[0] == "data"  # the parameters themselves stay FSDP-sharded


@pytest.mark.parametrize("target,proxy", [("pythia_410m", "pythia_31m"), ("pythia_1b", "pythia_31m"),
                                          ("pythia_410m", "pythia_160m")])
def test_bliss_paper_configs_trace(parsed, target, proxy):
  """The target's train step and one bilevel step (proxy + score model + the target in the KL, LAMBADA-style
  prefix-LM reference batch) at the paper's shapes, sharded FSDP over 8 devices."""
  from bliss_jax.bilevel.loop import abstract_bilevel_step  # pylint: disable=g-import-not-at-top
  parsed("paper/bliss_pythia.gin", bindings=[f"TARGET='{target}'", f"PROXY='{proxy}'"])
  t, p = _spec("target"), _spec("proxy")
  cfg = gin.get_configurable("BilevelConfig")()
  assert (t.batch_size, t.sequence_length, t.num_steps) == (512, 1024, 50_000)
  assert (cfg.gamma, cfg.l2, cfg.proxy_lr, cfg.score_lr, cfg.solver) == (1e-2, 1e-7, 1e-5, 1e-5, "normalized")
  assert cfg.remat  # traced below as the config runs it: rematerialised
  assert t.model_config == preset(target, vocab_size=50304, dtype="bfloat16")
  assert p.model_config == preset(proxy, vocab_size=50304)
  _, metrics = trainer.abstract_train_step(t.model_config, batch_size=t.batch_size,
                                           sequence_length=t.sequence_length, optimizer=t.optimizer,
                                           num_steps=t.num_steps)
  assert metrics["loss"].shape == ()
  state, m = abstract_bilevel_step(p.model_config, t.model_config, cfg, batch_size=32, sequence_length=1024,
                                   num_steps=3000, prefix_lm_reference=True)
  assert m["upper_F"].shape == () and m["hypergrad_norm"].shape == ()
  assert state.score["head"]["kernel"].shape == (p.model_config.d_model, 1)
  assert jax.tree.structure(state.z) == jax.tree.structure(state.proxy)


def test_compare_paper_config_traces_every_methods_step(parsed):
  """compare/paper.gin: one Pythia-1B target for every method; its plain step, RHO-1's SLM step and SALT's KD step
  with the 160M small model, Vanilla KD's step with the 2.8B teacher, and BLISS's bilevel step, all traced sharded
  over 8 devices; every per-method argument is one its pipeline takes."""
  import inspect  # pylint: disable=g-import-not-at-top
  from bliss_jax.losses.salt import salt_kd_loss_factory  # pylint: disable=g-import-not-at-top
  from bliss_jax.losses.selective import make_selective_loss  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines import bliss, miniplm, rho1, salt  # pylint: disable=g-import-not-at-top
  from bliss_jax.bilevel.loop import abstract_bilevel_step  # pylint: disable=g-import-not-at-top
  parsed("compare/paper.gin")
  t, s, l = _spec("target"), _spec("small"), _spec("large")
  assert (t.batch_size, t.sequence_length, t.num_steps) == (512, 1024, 50_000)
  assert t.model_config == preset("pythia_1b", vocab_size=50304, dtype="bfloat16")
  assert s.model_config == preset("pythia_160m", vocab_size=50304)
  assert l.model_config == preset("salt_2p8b", vocab_size=50304, dtype="bfloat16")
  assert set(gin.query_parameter("compare.options")) == {"rho1", "salt", "miniplm", "bliss"}
  for fn, name in ((rho1.run, "RHO1"), (salt.run, "SALT"), (miniplm.run, "MINIPLM"), (bliss.run, "BLISS")):
    inspect.signature(fn).bind_partial(**gin.query_parameter(f"%{name}"))
  salt_kw = gin.query_parameter("%SALT")
  assert salt_kw["n_kd"] == round(36 / 208 * t.num_steps)
  common = dict(batch_size=t.batch_size, sequence_length=t.sequence_length, optimizer=t.optimizer,
                num_steps=t.num_steps)
  _, m = trainer.abstract_train_step(t.model_config, **common)
  assert m["loss"].shape == ()
  _, m = trainer.abstract_train_step(t.model_config, loss_factory=lambda mo, fm: make_selective_loss(mo, fm, ratio=0.6),
                                     frozen_configs={"reference": s.model_config}, **common)
  assert m["selected_fraction"].shape == ()
  _, m = trainer.abstract_train_step(t.model_config, loss_factory=salt_kd_loss_factory(n_kd=salt_kw["n_kd"]),
                                     frozen_configs={"teacher": s.model_config}, **common)
  _, m = trainer.abstract_train_step(t.model_config, loss_factory=lambda mo, fm: make_kd_loss(mo, fm, omega=1.0,
                                                                                                rho=1.0),
                                     frozen_configs={"teacher": l.model_config}, **common)
  assert "kl_teacher_student" in m
  cfg = gin.get_configurable("BilevelConfig")()
  state, m = abstract_bilevel_step(s.model_config, t.model_config, cfg, batch_size=32, sequence_length=1024,
                                   num_steps=3000, prefix_lm_reference=True)
  assert m["upper_F"].shape == ()
