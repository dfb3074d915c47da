"""Selection rules on hand-made score vectors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.counting import fraction_to_count
from bliss_jax.selection import rules


def test_top_k_order_and_ties():
  s = [0.5, 2.0, 2.0, -1.0, 0.5, 3.0]
  np.testing.assert_array_equal(rules.top_k(s, 4), [5, 1, 2, 0])  # tie 1/2 and 0/4: lower index first
  np.testing.assert_array_equal(rules.top_k(s, 3, largest=False), [3, 0, 4])
  assert rules.top_k(s, 0).size == 0


def test_top_fraction_counts():
  s = np.arange(10.0)
  np.testing.assert_array_equal(rules.top_fraction(s, 0.2), [9, 8])
  assert fraction_to_count(10, 0.25) == 2 and fraction_to_count(8, 0.25) == 2
  assert fraction_to_count(3, 1.0) == 3


@pytest.mark.parametrize("num,den", [(0, 1), (1, 10), (3, 10), (3, 5), (7, 10), (3, 4), (9, 10), (1, 1), (123, 1000),
                                     (1, 3), (2, 3), (48, 1000), (9999, 10000)])
def test_fraction_to_count_is_the_exact_floor_on_the_host_and_traced(num, den):
  n = np.arange(0, 5000)
  want = (num * n) // den
  assert [fraction_to_count(int(i), num / den) for i in n] == want.tolist()
  traced = jax.jit(lambda m: fraction_to_count(m, num / den))(jnp.asarray(n, jnp.int32))
  assert traced.dtype == jnp.int32
  np.testing.assert_array_equal(traced, want)
  big = 2 ** 31 - 1  # no int32 overflow at the largest count
  assert int(jax.jit(lambda m: fraction_to_count(m, num / den))(jnp.int32(big))) == (num * big) // den


def test_fraction_to_count_refuses_what_it_cannot_count_exactly():
  with pytest.raises(ValueError, match="outside"):
    fraction_to_count(10, 1.5)
  with pytest.raises(ValueError, match="not a ratio num/den with den <= 46340"):
    fraction_to_count(10, 0.99999)


def test_uniform_subset_is_sorted_distinct_and_seeded():
  got = rules.uniform_subset(50, 12, seed=7)
  np.testing.assert_array_equal(got, np.sort(np.random.default_rng(7).choice(50, size=12, replace=False)))
  assert len(set(got.tolist())) == 12 and (np.diff(got) > 0).all() and got.max() < 50
  np.testing.assert_array_equal(rules.uniform_subset(50, 12, seed=7), got)
  assert not np.array_equal(rules.uniform_subset(50, 12, seed=8), got)
  np.testing.assert_array_equal(rules.uniform_subset(5, 5, seed=0), np.arange(5))


def test_nan_and_bad_k_are_named():
  with pytest.raises(ValueError, match="non-finite score.*index 1"):
    rules.top_k([0.0, np.nan], 1)
  with pytest.raises(ValueError, match="k=3 outside"):
    rules.top_k([0.0, 1.0], 3)


def test_gumbel_top_k_deterministic_and_distributed_as_softmax():
  s = np.log(np.array([0.6, 0.3, 0.1]))
  np.testing.assert_array_equal(rules.gumbel_top_k(s, 2, seed=7), rules.gumbel_top_k(s, 2, seed=7))
  firsts = np.array([rules.gumbel_top_k(s, 1, seed=i)[0] for i in range(4000)])
  freq = np.bincount(firsts, minlength=3) / firsts.size
  # binomial standard error at n=4000 is <= 0.008: 4 sigma
  np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.032)
  # temperature -> 0 is top-k
  np.testing.assert_array_equal(rules.gumbel_top_k(s, 2, temperature=1e-6, seed=3), [0, 1])


def test_sample_proportional():
  w = [0.0, 1.0, 3.0]
  draws = rules.sample_proportional(w, 4000, seed=1, replace=True)
  np.testing.assert_allclose(np.bincount(draws, minlength=3) / 4000, [0, 0.25, 0.75], atol=0.03)
  assert sorted(rules.sample_proportional(w, 2, seed=0)) == [1, 2]
  with pytest.raises(ValueError, match="non-negative"):
    rules.sample_proportional([-1.0, 1.0], 1)
  with pytest.raises(ValueError, match="cannot draw 3 distinct"):
    rules.sample_proportional(w, 3)
