"""Zero- and few-shot evaluation over the benchmark registry (`registry`), in lm-evaluation-harness's results layout.

`run_eval(score_fn, tasks, data_dir, generate_fn=...)` reads each task's items (`registry.load_task`), puts each
item's few-shot examples before it (`fewshot`, `num_fewshot`), asks `score_fn` for the log-likelihood of every
(context, continuation) request of the task in one call, or `generate_fn` for the greedy continuation of every prompt
of a generative task, and aggregates with `metrics`. `score_fn` is any function `[(context, continuation)] ->
[(logprob, num_tokens, is_greedy)]` (`loglikelihood.make_score_fn`, or a fake one in tests), `generate_fn` any
`(contexts, until, max_new_tokens) -> [text]` (`generation.make_generate_fn`). The result is the harness's
`results.json` layout, each metric under its filter ("none", or a generative task's, e.g. "strict-match"):

  {"results": {task: {"alias": task, "acc,none": x, "acc_stderr,none": s, ...}}, "configs": {...},
   "versions": {...}, "n-shot": {...}, "higher_is_better": {...}, "n-samples": {task: {"original", "effective"}},
   "config": {...}}
"""
import math
import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

from bliss_jax.eval import fewshot, registry
from bliss_jax.eval import metrics as metrics_lib

ScoreFn = Callable[[Sequence[Tuple[str, str]]], Sequence[Tuple[float, int, bool]]]
GenerateFn = Callable[[Sequence[str], Sequence[str], int], Sequence[str]]
FILTER = "none"


def effective_limit(n: int, limit: Optional[Union[int, float]]) -> int:
  """The harness's `--limit`: None = all, a float < 1 = that fraction (rounded up), else that many items."""
  if limit is None:
    return n
  if isinstance(limit, float) and limit < 1.0:
    return min(n, int(math.ceil(n * limit)))
  return min(n, int(limit))


def _stderr(x: float) -> Union[float, str]:
  return "N/A" if math.isnan(x) else x


def generate_task(name: str, items: Sequence, generate_fn: GenerateFn, prefixes: Sequence[str]) -> dict:
  """{"exact_match,filter": value, "exact_match_stderr,filter": stderr} of the generative task `name` on `items`, one
  `generate_fn` call for all prompts, every filter of the task's `GenerationSpec` scored on the same responses."""
  spec = registry.task_spec(name)
  gen = spec.generation
  responses = list(generate_fn([item.prompt(prefix) for item, prefix in zip(items, prefixes, strict=True)],
                               gen.until, gen.max_gen_toks))
  if len(responses) != len(items):
    raise ValueError(f"{name}: generate_fn returned {len(responses)} responses for {len(items)} prompts")
  out = {}
  for filter_name, extract in gen.filters:
    answers = responses if extract is None else [extract(r) for r in responses]
    per_item = metrics_lib.exact_match(answers, [item.target for item in items], gen.regexes_to_ignore,
                                       gen.ignore_case, gen.ignore_punctuation)
    out.update({f"{k},{filter_name}": v for k, v in metrics_lib.summarize({"exact_match": per_item}).items()})
  return out


def score_task(name: str, items: Sequence, score_fn: ScoreFn, prefixes: Optional[Sequence[str]] = None) -> dict:
  """{"metric,filter": value, "metric_stderr,filter": stderr} of task `name` on `items`, each after its few-shot
  prefix (`fewshot`; default none), with one `score_fn` call for all requests."""
  spec = registry.task_spec(name)
  prefixes = [""] * len(items) if prefixes is None else prefixes
  requests = [r for item, prefix in zip(items, prefixes, strict=True)
              for r in item.requests(prefix, spec.target_delimiter)]
  scores = list(score_fn(requests))
  if len(scores) != len(requests):
    raise ValueError(f"{name}: score_fn returned {len(scores)} results for {len(requests)} requests")
  if spec.output_type == "loglikelihood":
    out = metrics_lib.lambada_scores([s[0] for s in scores], [s[2] for s in scores])
  else:
    lls, start = [], 0
    for item in items:
      lls.append([s[0] for s in scores[start:start + len(item.choices)]])
      start += len(item.choices)
    per_item = metrics_lib.multiple_choice_scores(lls, [it.choices for it in items], [it.gold for it in items])
    out = metrics_lib.summarize(per_item)
  return {f"{k},{FILTER}": out[k] for m in spec.metrics for k in (m, m + "_stderr")}


def shots(name: str, num_fewshot: Optional[int]) -> int:
  """The number of few-shot examples of task `name`: `num_fewshot`, or when None the task's own."""
  return registry.task_spec(name).num_fewshot if num_fewshot is None else num_fewshot


def required_paths(tasks: Sequence[str], data_dir: str, files=None, num_fewshot: Optional[int] = None) -> List[str]:
  """Every file `run_eval` reads for `tasks`: each task's evaluated files and, when it runs few-shot from another
  split, that split's files (`registry.fewshot_source`)."""
  paths = []
  for name in tasks:
    source = registry.fewshot_source(name, data_dir, files) if shots(name, num_fewshot) else None
    paths += registry.task_paths(name, data_dir, files) + (source[1] if source else [])
  return paths


def run_eval(score_fn: Optional[ScoreFn], tasks: Sequence[str], data_dir: str,
             limit: Optional[Union[int, float]] = None, *, files=None, config: Optional[dict] = None,
             log: Optional[Callable[[str], None]] = None, num_fewshot: Optional[int] = None,
             fewshot_seed: int = fewshot.DEFAULT_SEED, generate_fn: Optional[GenerateFn] = None) -> dict:
  """Evaluate a model on `tasks`, zero- or few-shot; see the module docstring for the layout.

  Args:
    score_fn: `[(context, continuation)] -> [(logprob, num_tokens, is_greedy)]`, for the log-likelihood tasks.
    tasks: registered task names (`registry.TASKS`), evaluated in this order.
    data_dir: directory of the benchmark files (`TaskSpec.files`).
    limit: only the first `limit` items of each task (a float < 1: that fraction), as the harness's `--limit`.
    files: file overrides, {task: path or [paths]} for the evaluated split, {"task:split": ...} for the split few-shot
      examples come from (`registry.fewshot_source`).
    config: extra entries for the results' "config" (model, checkpoint step, batch size, ...).
    log: called with a line per finished task (e.g. `print`).
    num_fewshot: examples before each item (`fewshot`); None: each task's own `num_fewshot` (0 for all but the
      generative tasks), as the harness without --num_fewshot.
    fewshot_seed: the seed of the examples' draws (the harness's `fewshot_random_seed`).
    generate_fn: `(contexts, until, max_new_tokens) -> [text]` (`generation.make_generate_fn`), for the
      generate_until tasks.
  """
  for name in tasks:
    generative = registry.task_spec(name).output_type == "generate_until"
    if (generate_fn if generative else score_fn) is None:
      raise ValueError(f"task {name!r} needs a {'generate_fn' if generative else 'score_fn'}")
  missing = [p for p in required_paths(tasks, data_dir, files, num_fewshot) if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"benchmark file(s) not found: {', '.join(missing)}")
  paths = {name: registry.task_paths(name, data_dir, files) for name in tasks}
  sources = {name: registry.fewshot_source(name, data_dir, files) if shots(name, num_fewshot) else None
             for name in tasks}
  out = {"results": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
  for name in tasks:
    spec, k = registry.task_spec(name), shots(name, num_fewshot)
    items = registry.load_task(name, data_dir, files)
    used = items[:effective_limit(len(items), limit)]
    if sources[name]:  # examples from another split, else from the evaluated one (each item's own left out)
      split, pool, same_split = sources[name][0], spec.reader(*sources[name][1]), False
    else:
      split, pool, same_split = spec.split, items, True
    prefixes = fewshot.fewshot_prefixes(used, pool, k, same_split=same_split, seed=fewshot_seed,
                                        description=spec.description, target_delimiter=spec.target_delimiter,
                                        fewshot_delimiter=spec.fewshot_delimiter)
    if spec.output_type == "generate_until":
      values = generate_task(name, used, generate_fn, prefixes)
    else:
      values = score_task(name, used, score_fn, prefixes)
    out["results"][name] = {"alias": name, **{key: (_stderr(v) if "_stderr," in key else v)
                                              for key, v in values.items()}}
    out["configs"][name] = {"task": name, "test_split": spec.split, "files": paths[name],
                            "output_type": spec.output_type, "description": spec.description,
                            **({"generation_kwargs": {"until": list(spec.generation.until),
                                                      "max_gen_toks": spec.generation.max_gen_toks,
                                                      "do_sample": False},
                                "filter_list": [f for f, _ in spec.generation.filters]} if spec.generation else {}),
                            "target_delimiter": spec.target_delimiter, "fewshot_delimiter": spec.fewshot_delimiter,
                            "num_fewshot": k, "fewshot_split": split if k else None,
                            **({"fewshot_files": sources[name][1]} if sources[name] else {}),
                            "metric_list": [{"metric": m, "higher_is_better": registry.HIGHER_IS_BETTER[m]}
                                            for m in spec.metrics]}
    out["versions"][name] = spec.version
    out["n-shot"][name] = k
    out["higher_is_better"][name] = {m: registry.HIGHER_IS_BETTER[m] for m in spec.metrics}
    out["n-samples"][name] = {"original": len(items), "effective": len(used)}
    if log:
      log(f"{name} ({k}-shot): " + ", ".join(f"{key.replace(',' + FILTER, '')}={v:.4f}" for key, v in values.items()
                                              if "_stderr," not in key) + f" ({len(used)} items)")
  out["config"] = {"limit": limit, "data_dir": os.path.abspath(data_dir), "fewshot_seed": fewshot_seed,
                   **(config or {})}
  return out


def metric_values(row: dict) -> dict:
  """{name: value} of one task's results row: "acc", "acc_stderr" under the filter "none", "<filter>/exact_match",
  "<filter>/exact_match_stderr" under another."""
  out = {}
  for key, value in row.items():
    if key != "alias":
      metric, filt = key.split(",", 1)
      out[metric if filt == FILTER else f"{filt}/{metric}"] = value
  return out


def _version(v) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def to_markdown(results: dict) -> str:
  """The harness's results table (`make_table`): one row per metric, value and stderr to 4 decimals."""
  header = ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]
  rows = []
  for name, values in results["results"].items():
    hib = results.get("higher_is_better", {}).get(name, {})
    first = True
    for key, value in values.items():
      if key == "alias" or "_stderr," in key:
        continue
      metric, filt = key.split(",", 1)
      stderr = values.get(f"{metric}_stderr,{filt}", "N/A")
      arrow = {True: "↑", False: "↓"}.get(hib.get(metric), " ")
      rows.append([name if first else "", _version(results.get("versions", {}).get(name, "")) if first else "", filt,
                   str(results.get("n-shot", {}).get(name, 0)), metric, arrow, f"{value:.4f}", "±",
                   stderr if isinstance(stderr, str) else f"{stderr:.4f}"])
      first = False
  right = {1, 3, 6, 8}
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

  def fmt(cells):
    return "|" + "|".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + "|"

  rule = "|" + "|".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + "|"
  return "\n".join([fmt(header), rule] + [fmt(r) for r in rows]) + "\n"
