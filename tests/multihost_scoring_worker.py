"""One process of the two-process offline-scoring test (tests/test_multihost.py); not a test module itself.

Usage: python multihost_scoring_worker.py STORE_DIR [--reference]
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from pydoc_data import topics  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data import seqio_tasks, vocabulary  # noqa: E402
from bliss_jax.models.config import preset  # noqa: E402
from bliss_jax.models.transformer import Transformer  # noqa: E402
from bliss_jax.selection import offline_scoring, scorers  # noqa: E402


def main(store_dir, reference):
  if not reference:
    assert partitioning.initialize_distributed()
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  spm = os.path.join(os.path.dirname(store_dir), f"spm_{jax.process_index()}_{int(reference)}.model")
  vocab = vocabulary.load_vocabulary(vocabulary.train_sentencepiece(texts, spm, 300))
  docs = [(f"d:{i}", " ".join(["word", "list", "value", str(i)] * (1 + 5 * i % 17))) for i in range(37)]
  seqio_tasks.register_document_task("mh_score", lambda: docs, vocab, validation_fraction=0.0)
  model = Transformer(preset("tiny", vocab_size=512))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32), jnp.int32))["params"])
  offline_scoring.score_split(scorers.make_lm_scorer(model), params, task="mh_score", split="train",
                              store_dir=store_dir, sequence_length=32, batch_size=8, batches_per_shard=2,
                              progress=False)


if __name__ == "__main__":
  main(sys.argv[1], "--reference" in sys.argv)
