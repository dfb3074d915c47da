"""Every preset builds (abstractly) to exactly the parameter count of the shape formula, and to the published size."""
import jax
import jax.numpy as jnp
import pytest

from bliss_jax.models.config import PRESETS, count_params, preset
from bliss_jax.models.transformer import Transformer


def _abstract_param_count(cfg):
  shapes = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
  return sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_param_count_matches_formula_and_publication(name):
  cfg = preset(name)
  n = _abstract_param_count(cfg)
  assert n == count_params(cfg)
  _, nominal, exact = PRESETS[name]
  if exact is not None:
    assert n == exact  # e.g. Pythia-70M: 70,426,624 in the released checkpoint
  if nominal is not None:
    assert abs(n - nominal) / nominal < 0.08, f"{name}: {n:,} vs nominal {nominal:,.0f}"


def test_hand_computed_count_pythia_70m():
  # embed_in + embed_out: 2·50304·512; per layer: 2 LayerNorms (4·512), qkv (512·1536+1536), dense (512·512+512),
  # MLP (512·2048+2048 + 2048·512+512); 6 layers; final LayerNorm (2·512).
  per_layer = 4 * 512 + (512 * 1536 + 1536) + (512 * 512 + 512) + (512 * 2048 + 2048 + 2048 * 512 + 512)
  assert count_params(preset("pythia_70m")) == 2 * 50304 * 512 + 6 * per_layer + 2 * 512 == 70_426_624


def test_unknown_preset_and_field_fail_with_names():
  with pytest.raises(ValueError, match="unknown model preset 'pythia_99m'.*pythia_70m"):
    preset("pythia_99m")
  with pytest.raises(ValueError, match="num_layerz"):
    preset("tiny", num_layerz=3)
  with pytest.raises(ValueError, match="num_kv_heads"):
    preset("tiny", num_heads=4, num_kv_heads=3)
