"""A deterministic synthetic batch source (for benchmarks and tests that must not depend on a corpus).

Batch `i` of process `p` is a pure function of (seed, split, i, p): resuming at a position reproduces the stream.
Sequences follow a fixed random bigram chain, so there is something to learn (loss falls below log V).
"""
import numpy as np


class SyntheticBatches:
  """Iterator of SeqIO-decoder-feature batches [batch, length] with a `.position` (batches yielded so far)."""

  def __init__(self, *, vocab_size: int, batch_size: int, sequence_length: int, seed: int = 0, split: str = "train",
               start_position: int = 0, process_index: int = 0, process_count: int = 1, repeat: bool = True,
               num_batches: int = 16):
    self.vocab_size, self.batch_size, self.length = vocab_size, batch_size // process_count, sequence_length
    self.seed, self.split, self.process_index = seed, split, process_index
    self.position, self.repeat, self.num_batches = start_position, repeat, num_batches
    # Each token has 4 likely successors: the bigram entropy is about log(4) nats.
    table_rng = np.random.default_rng(seed)
    self._successors = table_rng.integers(2, vocab_size, size=(vocab_size, 4))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if not self.repeat and self.position >= self.num_batches:
      raise StopIteration
    rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1, self.position, self.process_index])
    tokens = np.empty((self.batch_size, self.length + 1), np.int32)
    tokens[:, 0] = rng.integers(2, self.vocab_size, self.batch_size)
    choice = rng.integers(0, 4, size=(self.batch_size, self.length))
    for t in range(self.length):
      tokens[:, t + 1] = self._successors[tokens[:, t], choice[:, t]]
    self.position += 1
    ones = np.ones((self.batch_size, self.length), np.int32)
    return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
            "decoder_loss_weights": ones, "decoder_segment_ids": ones,
            "decoder_positions": np.broadcast_to(np.arange(self.length, dtype=np.int32), ones.shape).copy()}


def synthetic_source(*, vocab_size: int, batch_size: int, sequence_length: int, seed: int = 0, eval_batches: int = 4):
  """A `trainer.BatchSource` over `SyntheticBatches`."""
  def source(split, *, start_position=0, process_index=0, process_count=1, repeat=True):
    return SyntheticBatches(vocab_size=vocab_size, batch_size=batch_size, sequence_length=sequence_length, seed=seed,
                            split=split, start_position=start_position, process_index=process_index,
                            process_count=process_count, repeat=repeat, num_batches=eval_batches)
  return source
