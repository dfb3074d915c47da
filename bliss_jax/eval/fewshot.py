"""Few-shot contexts as lm-evaluation-harness (v0.4) builds them: `ContextSampler.get_context` + `fewshot_context`.

For an item with text x and the k examples (x_i, y_i) drawn for it (each item's `example()`),

  prefix  = description + Σ_{i=1..k} (x_i + target_delimiter + y_i + fewshot_delimiter),
  context = prefix + x,

and the item's requests (or generation prompt) are built on that context (`readers`). The examples are drawn with
one `random.Random(seed)` per task, advanced item by item in evaluation order: `rnd.sample(pool, k)` from another
split, or, when the pool is the evaluated split itself, `rnd.sample(pool, k + 1)` with the item being evaluated
removed and the first k kept. The harness's seed is 1234 (its `fewshot_random_seed`).
"""
import random
from typing import List, Sequence

DEFAULT_SEED = 1234


def labeled_examples(examples: Sequence, target_delimiter: str, fewshot_delimiter: str) -> str:
  """Σ (text + target_delimiter + target + fewshot_delimiter) over `examples` (items with `example()`)."""
  return "".join(text + target_delimiter + target + fewshot_delimiter
                 for text, target in (x.example() for x in examples))


def fewshot_prefixes(items: Sequence, pool: Sequence, num_fewshot: int, *, same_split: bool,
                     seed: int = DEFAULT_SEED, description: str = "", target_delimiter: str = " ",
                     fewshot_delimiter: str = "\n\n") -> List[str]:
  """The prefix (description and solved examples) of each of `items`, in order (module docstring).

  Args:
    items: the evaluated items, in evaluation order (the draws depend on it).
    pool: the items examples are drawn from.
    num_fewshot: k; 0 gives the description alone and draws nothing.
    same_split: `pool` is the evaluated split itself: draw k + 1 and leave the evaluated item out.
  """
  if num_fewshot < 0:
    raise ValueError(f"num_fewshot={num_fewshot} must be >= 0")
  if num_fewshot == 0:
    return [description] * len(items)
  n = num_fewshot + 1 if same_split else num_fewshot
  if n > len(pool):
    raise ValueError(f"{num_fewshot}-shot needs {n} examples to draw from, the few-shot split has {len(pool)}")
  rnd, pool = random.Random(seed), list(pool)
  prefixes = []
  for item in items:
    drawn = [x for x in rnd.sample(pool, n) if x != item][:num_fewshot]
    prefixes.append(description + labeled_examples(drawn, target_delimiter, fewshot_delimiter))
  return prefixes
