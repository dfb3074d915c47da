"""`training.batch_prefetch`: batches placed ahead on a background thread arrive in order, errors arrive at the batch
that raised them, and the thread stops with the context."""
import threading
import time

import pytest

from bliss_jax.training import batch_prefetch


class _Counting:
  """Batches {"x": i} for i = 0, 1, ...; raises `error` in place of batch `fail_at`; counts the batches read."""

  def __init__(self, n=None, fail_at=None, error=None):
    self.n, self.fail_at, self.error, self.read = n, fail_at, error, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.read == self.fail_at:
      raise self.error
    if self.n is not None and self.read >= self.n:
      raise StopIteration
    self.read += 1
    return {"x": self.read - 1}


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name.startswith("grain-thread-prefetch") and t.is_alive()]


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_batches_arrive_in_order_and_placed(ahead):
  placed = lambda b: {"x": 10 * b["x"]}
  with batch_prefetch.placed_batches(_Counting(n=7), placed, ahead) as it:
    assert [b["x"] for b in it] == [0, 10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("ahead", [0, 2])
def test_an_error_reaches_the_next_that_asks_for_that_batch(ahead):
  source = _Counting(fail_at=3, error=OSError("corrupt record 3 in shard 0"))
  with batch_prefetch.placed_batches(source, lambda b: b, ahead) as it:
    assert [next(it)["x"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(OSError, match="corrupt record 3 in shard 0"):
      next(it)


def test_reads_at_most_ahead_plus_two_and_the_thread_stops_at_exit():
  source = _Counting()  # endless
  with batch_prefetch.placed_batches(source, lambda b: b, 2) as it:
    assert next(it)["x"] == 0
    time.sleep(0.2)  # the thread fills its buffer, then waits
    # the batch handed out, two in the buffer and one the thread holds while it waits for room
    assert source.read <= 4
    assert len(_prefetch_threads()) == 1
  assert not _prefetch_threads()


def test_a_negative_count_is_refused():
  with pytest.raises(ValueError, match="prefetch ahead=-1: expected a count >= 0"):
    with batch_prefetch.placed_batches(iter(()), lambda b: b, -1):
      pass
