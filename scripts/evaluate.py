#!/usr/bin/env python
r"""Zero- and few-shot evaluation of a trained MODEL_DIR, lm-evaluation-harness style.

  python scripts/evaluate.py --model_dir=/tmp/run \
      --tasks=hellaswag,arc_easy,lambada_openai --limit=200 --output_dir=/tmp/run/eval
  python scripts/evaluate.py --model_dir=/tmp/run --tasks=arc_easy --num_fewshot=1 --output_dir=/tmp/run/eval1
  python scripts/evaluate.py --model_dir=/tmp/run --tasks=gsm8k --task_file=gsm8k=/data/gsm8k/test.jsonl \
      --output_dir=/tmp/run/gsm8k     # generative: 5-shot greedy decoding, exact match

Loads MODEL_DIR/model_config.json, the latest checkpoint's parameters (or --step) and the vocabulary the run recorded
in MODEL_DIR/vocabulary.json (`training.model_vocabulary`; a --vocabulary that is not the same is refused), scores
every task's requests with the batched jitted scorer (`bliss_jax.eval.loglikelihood`; every row starts with id 0, as
training's do) or, for a generative task (gsm8k), decodes greedily from a key/value cache (`bliss_jax.eval.generation`),
writes OUTPUT_DIR/results.json (the harness's layout) and OUTPUT_DIR/results.md, and prints the table. A MODEL_DIR
imported from a Hugging Face checkpoint (`scripts/import_hf.py`) is scored with its own tokenizer and its own start
convention: rows begin with the tokenizer's bos when its AutoTokenizer prepends one, else with nothing (the
vocabulary record's `start_id`, `bliss_jax.data.hf_tokenizer`), as lm-evaluation-harness scores the original model.

Flags:
  --model_dir DIR            a training run's directory (model_config.json, checkpoints/).
  --vocabulary PATH|default  the SentencePiece model the run was trained with (`default`: the embedded one). Default:
                             the one MODEL_DIR recorded; a MODEL_DIR without a record (written before runs recorded
                             theirs) gets the embedded one, with a warning that it could not be checked.
  --tasks A,B,...            task names (default: the nine whose files are in ../shared/data/eval); see --list_tasks.
                             Tasks of one's own are registered by a --tasks_module (`bliss_jax.eval.registry`).
  --limit N                  first N items per task (a number < 1: that fraction), as the harness's --limit.
  --num_fewshot K            K solved examples before each item, drawn (seeded, --fewshot_seed, default 1234) from
                             the task's few-shot split or its own, as the harness does. Default: each task's own
                             (0; gsm8k 5).
  --output_dir DIR           where results.json and results.md go.
  --data_dir DIR             benchmark files (default: <repo>/../shared/data/eval).
  --task_file TASK=PATH      (repeatable) a task's file elsewhere, e.g. sciq=/data/sciq/test.json;
                             TASK:SPLIT=PATH: the split few-shot examples are drawn from, e.g. arc_easy:train=...
  --batch_size B --max_length L   rows per forward pass and the longest row (contexts are left-truncated).
  --step S                   evaluate checkpoint S instead of the latest.
  --data_parallel N          shard batches over N devices (-1: all; 1: one device). Default: all when there are several.
  --heldout TASK:SPLIT       (repeatable) also held-out loss / perplexity / next-token accuracy on a SeqIO split: the
                             whole split, or with --heldout_max_batches K, K batches sampled uniformly over it
                             (seeded); the table says which.
  --gin_file, --gin.KEY=VALUE, --gin_search_paths, --tasks_module
                             task registrations for --heldout, as scripts/train.py takes them
                             (`bliss_jax.cli.register_tasks`; default: the tasks of `tasks`): a task registered in a gin
                             file (`TASK = @register_local_files_task()`) is found. Each --tasks_module is imported
                             first, so it can also register benchmark tasks of one's own (`registry.register_task`).
"""
import argparse
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from bliss_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "eval")
DEFAULT_TASKS = "hellaswag,arc_easy,arc_challenge,piqa,winogrande,boolq,openbookqa,logiqa,lambada_openai"


def parse_args(argv):
  """(this script's flags, the task-registration flags `bliss_jax.cli.split_args` takes)."""
  tasks_args, argv = cli.split_args(argv)
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
  p.add_argument("--model_dir")
  p.add_argument("--vocabulary", default=None)
  p.add_argument("--tasks", default=DEFAULT_TASKS)
  p.add_argument("--limit", type=float, default=None)
  p.add_argument("--num_fewshot", type=int, default=None)
  p.add_argument("--fewshot_seed", type=int, default=1234)
  p.add_argument("--output_dir")
  p.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
  p.add_argument("--task_file", action="append", default=[])
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--max_length", type=int, default=2048)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--data_parallel", type=int, default=None)
  p.add_argument("--heldout", action="append", default=[])
  p.add_argument("--heldout_max_batches", type=int, default=None)
  p.add_argument("--heldout_sequence_length", type=int, default=512,
                 help="packed rows of this length for --heldout (the last batch is padded, not dropped)")
  p.add_argument("--no_progress", action="store_true")
  p.add_argument("--list_tasks", action="store_true")
  args = p.parse_args(argv)
  if not args.list_tasks:
    missing = [f"--{k}" for k in ("model_dir", "output_dir") if not getattr(args, k)]
    if missing:
      p.error(f"the following arguments are required: {', '.join(missing)}")
  if args.num_fewshot is not None and args.num_fewshot < 0:
    p.error(f"--num_fewshot={args.num_fewshot}: expected a number of examples >= 0")
  if args.limit is not None:
    if not (args.limit > 0 and (args.limit < 1 or args.limit == int(args.limit))):
      p.error(f"--limit={args.limit:g}: expected a whole number of items >= 1 or a fraction in (0, 1)")
    if args.limit >= 1:
      args.limit = int(args.limit)
  return args, tasks_args


def check_output_dir(path):
  """Create `path` (and its parents) and check it is writable, before any work is done."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise SystemExit(f"error: --output_dir {path!r} cannot be created: {e}") from None
  if not os.access(path, os.W_OK):
    raise SystemExit(f"error: --output_dir {path!r} is not writable")


def _files(pairs):
  files = {}
  for pair in pairs:
    if "=" not in pair:
      raise SystemExit(f"error: --task_file {pair!r}: expected TASK=PATH")
    name, path = pair.split("=", 1)
    files.setdefault(name, []).append(path)
  return files


def _mesh(data_parallel):
  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  n = jax.device_count() if data_parallel in (None, -1) else data_parallel
  if n <= 1:
    return None
  return partitioning.make_mesh(data=n, model=1, devices=jax.devices()[:n])


def check_heldout_vocabularies(model_dir, names):
  """Refuse a --heldout task whose vocabulary is not the one MODEL_DIR recorded (`model_vocabulary.check`)."""
  from bliss_jax.data import pipeline, vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import model_vocabulary  # pylint: disable=g-import-not-at-top
  for name in names:
    task = name.partition(":")[0]
    model_vocabulary.check(model_dir, vocabulary.vocabulary_record(pipeline.task_vocabulary(task)),
                           what=f"--heldout task {task!r}")


def heldout_metrics(model, params, names, *, sequence_length, batch_size, max_batches):
  """{"TASK:SPLIT": {"loss", "perplexity", "accuracy", "num_tokens", "eval_sample"}} with
  `training.evaluation.evaluate` on the whole split, or on `max_batches` batches sampled over it."""
  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import evaluation  # pylint: disable=g-import-not-at-top
  eval_step = jax.jit(evaluation.make_eval_step(model))
  out = {}
  for name in names:
    task, _, split = name.partition(":")
    ds = pipeline.get_dataset(task, split or "validation", sequence_length, batch_size, shuffle=False, seed=0,
                              repeat=False, drop_remainder=False)
    held = evaluation.heldout(ds.as_numpy_iterator(), max_batches)
    out[name] = dict(evaluation.evaluate(eval_step, params, held.batches), eval_sample=held.estimator)
  return out


def heldout_markdown(heldout):
  lines = ["|Split|Loss|Perplexity|Accuracy|Tokens|Batches|", "|-----|---:|---:|---:|---:|---|"]
  lines += [f"|{k}|{v['loss']:.4f}|{v['perplexity']:.3f}|{v['accuracy']:.4f}|{int(v['num_tokens'])}|{v['eval_sample']}|"
            for k, v in heldout.items()]
  return "\n".join(lines) + "\n"


def import_task_modules(modules):
  """Import each --tasks_module: the modules that register SeqIO tasks and benchmark tasks
  (`bliss_jax.eval.registry.register_task`) of one's own."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in modules or ():
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise SystemExit(f"error: --tasks_module {module!r} cannot be imported: {e}") from None


def main(argv):
  args, tasks_args = parse_args(argv)
  from bliss_jax.eval import harness, registry  # pylint: disable=g-import-not-at-top
  import_task_modules(tasks_args.tasks_modules)
  if args.list_tasks:
    for name, spec in registry.TASKS.items():
      print(f"{name:15s} {', '.join(spec.files):45s} {', '.join(spec.metrics)}")
    return None
  check_output_dir(args.output_dir)
  tasks = [t for t in args.tasks.split(",") if t]
  files = _files(args.task_file)
  try:  # Fail on an unknown task or a missing benchmark file before loading anything.
    missing = [p for p in harness.required_paths(tasks, args.data_dir, files, args.num_fewshot)
               if not os.path.isfile(p)]
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  if missing:
    raise SystemExit(f"error: benchmark file(s) not found: {', '.join(missing)} (--data_dir={args.data_dir}, "
                     "or --task_file TASK=PATH / TASK:SPLIT=PATH)")
  generative = [t for t in tasks if registry.task_spec(t).output_type == "generate_until"]

  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  from bliss_jax.eval import generation, loglikelihood  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.config import as_record  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import checkpoints, model_vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top

  partitioning.initialize_distributed()
  cfg = ModelDir(args.model_dir).read_model_config()
  try:
    vocab, vocab_record = model_vocabulary.vocabulary_for(args.model_dir, args.vocabulary)
    if args.heldout:
      cli.register_tasks(tasks_args)
      check_heldout_vocabularies(args.model_dir, args.heldout)
  except (model_vocabulary.VocabularyMismatch, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  if vocab.vocab_size > cfg.vocab_size:
    raise SystemExit(f"error: vocabulary {model_vocabulary.summary(vocab_record)} has {vocab.vocab_size} ids but the "
                     f"model only {cfg.vocab_size}: is it the vocabulary {args.model_dir} was trained with?")
  step, params = checkpoints.load_params(args.model_dir, step=args.step)
  model = Transformer(cfg)
  start_id = vocab_record.get("start_id", loglikelihood.START_ID)  # an imported tokenizer's own (None: no bos)
  mesh = _mesh(args.data_parallel)
  score_fn = loglikelihood.make_score_fn(model, params, vocab, start_id=start_id, batch_size=args.batch_size,
                                         max_length=args.max_length, mesh=mesh, progress=not args.no_progress)
  generate_fn = (generation.make_generate_fn(model, params, vocab, start_id=start_id, batch_size=args.batch_size,
                                             max_length=args.max_length, mesh=mesh, progress=not args.no_progress)
                 if generative else None)
  start = time.time()
  results = harness.run_eval(
      score_fn, tasks, args.data_dir, args.limit, files=files, log=print, num_fewshot=args.num_fewshot,
      fewshot_seed=args.fewshot_seed, generate_fn=generate_fn,
      config={"model": "bliss_jax", "model_dir": os.path.abspath(args.model_dir), "step": int(step),
              "vocabulary": vocab_record, "start_id": start_id, "batch_size": args.batch_size,
              "max_length": args.max_length, "num_fewshot": args.num_fewshot,
              "model_config": as_record(cfg), "num_devices": jax.device_count()})
  results["config"]["eval_seconds"] = round(time.time() - start, 1)
  markdown = harness.to_markdown(results)
  if args.heldout:
    results["heldout"] = heldout_metrics(
        model, params, args.heldout, sequence_length=args.heldout_sequence_length, batch_size=args.batch_size,
        max_batches=args.heldout_max_batches)
    markdown += "\n" + heldout_markdown(results["heldout"])
  header = (f"bliss_jax ({args.model_dir}, step {step}), limit: {args.limit}, num_fewshot: {args.num_fewshot}, "
            f"batch_size: {args.batch_size}")
  if jax.process_index() == 0:
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
      f.write(header + "\n\n" + markdown)
    print(header)
    print(markdown)
  return results


if __name__ == "__main__":
  cli.run_script(main, __doc__)
