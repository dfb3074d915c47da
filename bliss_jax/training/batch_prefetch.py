"""Training batches read and placed on the devices ahead of the step that needs them, on a background thread
(grain's `ThreadPrefetchDatasetIterator`), so that the loop's own thread only dispatches steps."""
import contextlib
from typing import Callable, Iterable, Iterator

import grain


class _Placed:
  """`place(next(batches))`, as the parent iterator grain's prefetch thread reads. It has no state to save: a run's
  data position is counted in steps (`trainer.train`'s checkpoint data), not read off the iterator."""

  def __init__(self, batches: Iterator[dict], place: Callable[[dict], dict]):
    self._batches, self._place = batches, place

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._place(next(self._batches))

  def get_state(self):
    return None


@contextlib.contextmanager
def placed_batches(batches: Iterable[dict], place: Callable[[dict], dict], ahead: int) -> Iterator[Iterator[dict]]:
  """An iterator over `place(batch)` for `batches`, in order. With `ahead` > 0 a background thread reads and places
  up to `ahead` batches (plus the one in hand) before the loop asks for them; an error there (a corrupt record, the
  end of the data) is raised by the `next` that reaches it, as without prefetching. The thread stops when the
  context exits; `ahead` = 0 reads each batch in turn on the caller's thread."""
  if ahead < 0:
    raise ValueError(f"prefetch ahead={ahead}: expected a count >= 0")
  placed = _Placed(iter(batches), place)
  if ahead == 0:
    yield placed
    return
  prefetched = grain.experimental.ThreadPrefetchDatasetIterator(placed, ahead)
  try:
    yield prefetched
  finally:
    prefetched.close()
