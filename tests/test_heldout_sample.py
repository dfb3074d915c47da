"""Held-out numbers and pools under a limit come from a seeded sample over the whole split, never its first files.

The fixture task's validation and train splits hold two sources in file order: all documents of lowercase English
("a:"), then all of digit codes ("b:"). The first batches or examples of a split hold the first source only.
"""
import itertools
import json

import jax
import numpy as np
import pytest

from bliss_jax.data import pipeline, seqio_tasks, vocabulary
from bliss_jax.data.keyed import example_keys
from bliss_jax.models.config import preset
from bliss_jax.pipelines import common
from bliss_jax.training import evaluation, trainer
from bliss_jax.training.model_dir import ModelDir

L, B = 32, 2
TASK = "heldout_two_sources"
WORDS = ("the list holds items in order and a loop reads each one then the function returns a value to the caller "
         "who prints it").split()


def _documents():
  rng = np.random.default_rng(0)
  english = [(f"a:{i}", " ".join(rng.choice(WORDS, 60))) for i in range(40)]
  codes = [(f"b:{i}", " ".join(f"{x}7{y}" for x, y in rng.integers(0, 10, (60, 2)))) for i in range(40)]
  return english + codes


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  texts = [t for _, t in _documents()]
  path = vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp("spm") / "two.model"), 80)
  vocab = vocabulary.load_vocabulary(path)
  seqio_tasks.register_document_task(TASK, _documents, vocab, validation_fraction=0.4)
  return vocab


def _sources(vocab, batches):
  """The sources ("a", "b") whose tokens the batches' rows hold."""
  out = set()
  for batch in batches:
    for row, weights in zip(batch["decoder_target_tokens"], batch["decoder_loss_weights"]):
      if weights.any():
        text = vocab.decode([int(t) for t, w in zip(row, weights) if w and t > 1])
        out.add("b" if any(c.isdigit() for c in text) else "a")
  return out


def test_sample_batches_is_a_seeded_uniform_choice_in_split_order():
  sample = evaluation.sample_batches(iter(range(100)), 8, seed=3)
  assert sample.batches == sample.indices == sorted(sample.indices) and len(set(sample.indices)) == 8
  assert evaluation.sample_batches(iter(range(100)), 8, seed=3).indices == sample.indices
  assert evaluation.sample_batches(iter(range(100)), 8, seed=4).indices != sample.indices
  assert sample.estimator() == "8 of 100 batches, a seeded uniform sample over the split (seed 3)"
  whole = evaluation.sample_batches(iter(range(5)), 8)
  assert whole.indices == [0, 1, 2, 3, 4] and whole.estimator() == "whole split (5 batches)"
  # Every batch is equally likely: 2,000 seeds choosing 5 of 20 include each ~500 times (sd ~19).
  counts = np.zeros(20)
  for seed in range(2000):
    counts[evaluation.sample_batches(iter(range(20)), 5, seed=seed).indices] += 1
  assert np.all(np.abs(counts - 500) < 100)


def test_limited_heldout_batches_cover_both_sources_the_first_ones_do_not(task):
  first = list(itertools.islice(common.heldout_batches(TASK, sequence_length=L, batch_size=B).batches, 4))
  assert _sources(task, first) == {"a"}  # the old estimator: the first 4 batches in file order
  sampled = common.heldout_batches(TASK, sequence_length=L, batch_size=B, max_batches=4)
  assert _sources(task, sampled.batches) == {"a", "b"} and len(sampled.batches) == 4
  n = sum(1 for _ in common.heldout_batches(TASK, sequence_length=L, batch_size=B).batches)
  assert sampled.estimator == f"4 of {n} batches, a seeded uniform sample over the split (seed 0)"
  again = common.heldout_batches(TASK, sequence_length=L, batch_size=B, max_batches=4)
  assert all(np.array_equal(x["decoder_target_tokens"], y["decoder_target_tokens"])
             for x, y in zip(sampled.batches, again.batches))


def test_without_a_limit_the_whole_split_is_evaluated(task):
  whole = common.heldout_batches(TASK, sequence_length=L, batch_size=B)
  assert whole.estimator == "whole split"
  tokens = sum(int(b["decoder_loss_weights"].sum()) for b in whole.batches)
  assert tokens == pipeline.token_counts(TASK, "validation", sequence_length=L).sum()


def test_pool_sample_is_uniform_over_the_split_in_its_order(task):
  keys = example_keys(TASK, "train", L)
  assert {k[0] for k in keys[:12]} == {"a"}  # the first examples in file order: one source
  pool = common.pool_keys(TASK, "train", L, max_examples=12)
  assert len(pool) == 12 and {k[0] for k in pool} == {"a", "b"}
  assert pool == [k for k in keys if k in set(pool)] == common.pool_keys(TASK, "train", L, max_examples=12)
  assert common.pool_keys(TASK, "train", L) == keys
  assert common.pool_sample_inputs(12) == {"max_examples": 12, "sample_seed": 0} and common.pool_sample_inputs(None) == {}


def test_proportional_counts_by_hand():
  from bliss_jax.sampling import proportional_counts
  # p = (3/4, 1/4): a allows 40 / 0.75 = 53.3, b 10 / 0.25 = 40 -> T = 40: 30 and 10.
  assert proportional_counts([40, 10], [3, 1]) == [30, 10]
  assert proportional_counts([40, 10], [3, 1], total=7) == [5, 2]  # 5.25, 1.75: the remainder to b
  assert proportional_counts([9, 9, 9], [1, 1, 1], total=8) == [3, 3, 2]  # ties to the lower index
  assert proportional_counts([5, 100], [0, 2]) == [0, 100]
  with pytest.raises(ValueError, match="at least one > 0"):
    proportional_counts([5], [0])


def test_a_mixtures_pool_is_drawn_in_its_rates(task):
  """The stream samples a mixture's tasks in its rates; its pool is drawn in them too (before: every example once,
  here about half of each source, whatever the rates)."""
  import seqio  # pylint: disable=g-import-not-at-top
  docs = _documents()
  for name, prefix in (("pool_rates_a", "a:"), ("pool_rates_b", "b:")):
    seqio_tasks.register_document_task(name, lambda p=prefix: [d for d in docs if d[0].startswith(p)], task,
                                       validation_fraction=0.4)
  seqio.MixtureRegistry.remove("pool_rates_mix")
  seqio.MixtureRegistry.add("pool_rates_mix", [("pool_rates_a", 3.0), ("pool_rates_b", 1.0)])
  a, b = example_keys("pool_rates_a", "train", L), example_keys("pool_rates_b", "train", L)
  pool = common.pool_keys("pool_rates_mix", "train", L)
  in_a, in_b = [k for k in pool if k[0] == "a"], [k for k in pool if k[0] == "b"]
  assert set(in_a) <= set(a) and set(in_b) <= set(b) and len(in_a) + len(in_b) == len(pool) == len(set(pool))
  want = proportional_counts_of(len(a), len(b))
  assert (len(in_a), len(in_b)) == want and abs(len(in_a) / len(pool) - 0.75) < 0.02
  assert in_a == [k for k in a if k in set(in_a)] and pool == common.pool_keys("pool_rates_mix", "train", L)
  assert len(common.pool_keys("pool_rates_mix", "train", L, max_examples=8)) == 8
  # SALT_DS's scorer reads the whole split unless given keys: a mixture always gives them.
  assert common.pool_subset_keys("pool_rates_mix", "train", L) == pool
  assert common.pool_subset_keys("pool_rates_a", "train", L) is None


def proportional_counts_of(n_a, n_b):
  """The counts of a 3:1 pool from n_a and n_b examples, by hand."""
  t = min(n_a * 4 // 3, n_b * 4)
  c_a = (3 * t + 2) // 4  # 3t/4 rounded, a half up (ties to the lower index)
  return c_a, t - c_a


@pytest.mark.parametrize("eval_batches", [3, None])
def test_trainer_periodic_evaluation_says_which_batches(task, tmp_path, eval_batches):
  source = pipeline.seqio_batch_source(TASK, batch_size=B, sequence_length=L)
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None, num_layers=1), num_steps=1, batch_size=B,
                           sequence_length=L, optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=1,
                           checkpoint_every=1, log_every=1)
  result = trainer.train(model_dir=str(tmp_path), spec=spec, batch_source=source,
                         vocab_size=pipeline.vocabulary_size(TASK), eval_batches=eval_batches,
                         devices=jax.devices()[:1], progress_bar=False)
  validation = list(source("validation", repeat=False))
  # What the trainer evaluates: the same choice over the whole (packed) validation split.
  held = evaluation.heldout(iter(validation), eval_batches)
  row, = ModelDir(str(tmp_path)).metrics("validation")
  assert row["eval_sample"] == result.last_eval["eval_sample"] == held.estimator
  assert row["num_tokens"] == sum(float(b["decoder_loss_weights"].sum()) for b in held.batches)
  if eval_batches is None:
    assert row["eval_sample"] == "whole split"
    assert row["num_tokens"] == sum(float(b["decoder_loss_weights"].sum()) for b in validation)
  else:
    assert row["eval_sample"] == f"3 of {len(validation)} batches, a seeded uniform sample over the split (seed 0)"
    assert _sources(task, held.batches) == {"a", "b"} and _sources(task, validation[:3]) == {"a"}
  with open(ModelDir(str(tmp_path)).metrics_path) as f:
    assert all(isinstance(json.loads(line)["loss"], float) for line in f)
