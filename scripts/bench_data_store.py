#!/usr/bin/env python
r"""The chunk store at work, measured in one run: write throughput, resume cost, scoring throughput, selection under a
memory cap.

  JAX_PLATFORMS=cpu python scripts/bench_data_store.py
  JAX_PLATFORMS=cpu python scripts/bench_data_store.py --docs 20000 --column_rows 268435456 --memory_cap_mb 96

* write: a synthetic document task (random words, seqio's ByteVocabulary, 1 token a byte) materialised at
  --sequence_length in --shards shards (`data/chunk_store.py`) by 1 process, then, in a fresh directory, by 2
  processes at once (each writes every other shard); tokens/s = stored tokens / wall seconds from the first process's
  start of writing to the last one's end (interpreter and TensorFlow start-up excluded).
* resume: the training source over the store (`data/store_source.py`, read in the calling thread, no prefetch)
  started at batch position p for each of --positions: chunk records read before the first batch, and seconds to it,
  unpacked in Grain's index-shuffle order, packed in that order and packed in the SeqIO order (what the pipelines
  read: packing plans the rows before p from the length files, and the SeqIO order streams its positions up to
  there); then the same positions through the SeqIO stream (`pipeline.seqio_batch_source(pack=False)`, which skips p
  batches). Each source is read once from position 0 first, so one-time set-up is not counted.
* score: the first --score_chunks chunks scored by a randomly initialised --score_preset LM (mean log-probability,
  `selection.scorers.make_lm_scorer`) three ways, alternated --score_repeats times after a warm-up: the jitted forward
  over the batches already in memory (the bound), `offline_scoring.score_split` reading the chunks by index from the
  store (what the selection rounds' scorers do) and `score_split` streaming the same keys from the SeqIO split; tokens/s
  and each one's time over the forward's.
* select: a score column of --column_rows float32 values on disk, 20% of it selected by
  `rules.iter_top_k_in_index_order` and written as a selection file (`selection/score_columns.py`) in a child
  process whose data segment is capped at --memory_cap_mb (RLIMIT_DATA: heap and private mappings, where every numpy
  array lives); its peak RSS (VmHWM) and seconds. The column's store directory holds only a manifest and the column
  (no chunks: selection reads scores only, however many tokens the chunks hold).
Wall seconds depend on the machine's load; CPU seconds (this process's threads, and for the write the
processes' sum) much less. Figures are from one run; rerun for another sample.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WORDS = ("the of a value is assigned to each name in list when loop ends data model score select train token chunk "
         "store shard record index order batch resume").split()


def _register(docs: int, words: int) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  texts = [" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(words // 2, 2 * words)))
           for _ in range(docs)]
  seqio_tasks.register_document_task("bench_store", lambda: [(f"b:{i}", t) for i, t in enumerate(texts)],
                                     seqio.ByteVocabulary(), validation_fraction=0.0)
  return "bench_store"


def _write_worker(a) -> None:
  from bliss_jax.data import chunk_store  # pylint: disable=g-import-not-at-top
  task = _register(a.docs, a.words)
  start, cpu = time.time(), time.process_time()
  chunk_store.write_chunk_store(a.store, task, "train", a.sequence_length, num_shards=a.shards,
                                process_index=a.process_index, process_count=a.process_count)
  print(json.dumps({"start": start, "end": time.time(), "cpu": time.process_time() - cpu}))


def _select_worker(a) -> None:
  cap = a.memory_cap_mb << 20
  resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
  from bliss_jax.selection import score_columns  # pylint: disable=g-import-not-at-top  (numpy only)
  start, cpu = time.time(), time.process_time()
  blocks = score_columns.select_from_column(a.store, "score", fraction=0.2, order="index", block_size=a.block_size)
  score_columns.write_selection(a.store, "top20", blocks, column="score", rule="top_k", seed=None,
                                       scorer="random normal", fraction=0.2)
  seconds, cpu = time.time() - start, time.process_time() - cpu
  with open("/proc/self/status") as f:  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's)
    peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
  indices, _ = score_columns.read_selection(a.store, "top20")
  heavy = sorted(m for m in ("tensorflow", "seqio", "jax") if m in sys.modules)
  print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss_mb": peak_kb / 1024, "selected": len(indices),
                    "modules": heavy}))


def _child(args, **extra):
  argv = [sys.executable, os.path.abspath(__file__)] + args + [f"--{k}={v}" for k, v in extra.items()]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", OPENBLAS_NUM_THREADS="1")
  return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


def _result(proc) -> dict:
  out, _ = proc.communicate()
  if proc.returncode:
    raise RuntimeError(f"a child process failed ({proc.returncode}): {out[-2000:]}")
  return json.loads(out.strip().splitlines()[-1])


def bench_write(a, root: str) -> str:
  common = ["--_worker=write", f"--docs={a.docs}", f"--words={a.words}", f"--shards={a.shards}",
            f"--sequence_length={a.sequence_length}"]
  store = None
  for processes in (1, 2):
    store = os.path.join(root, f"store_{processes}p")
    runs = [_result(p) for p in [_child(common, store=store, process_index=i, process_count=processes)
                                 for i in range(processes)]]
    with open(os.path.join(store, "manifest.json")) as f:
      manifest = json.load(f)
    seconds = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    size = sum(os.path.getsize(os.path.join(store, n)) for n in os.listdir(store))
    cpu = sum(r["cpu"] for r in runs)
    print(f"write, {processes} process(es): {manifest['num_records']} chunks, {manifest['num_tokens']} tokens, "
          f"{size / 2**20:.1f} MiB on disk, {seconds:.1f} s ({cpu:.1f} CPU s), "
          f"{manifest['num_tokens'] / seconds:,.0f} tokens/s ({manifest['num_tokens'] / cpu:,.0f} per CPU s)")
  return store


def bench_resume(a, store: str) -> None:
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.store_source import store_batch_source  # pylint: disable=g-import-not-at-top
  task = _register(a.docs, a.words)
  for pack, order in ((False, "index_shuffle"), (True, "index_shuffle"), (True, "seqio")):
    for position in a.positions:
      source = store_batch_source(store, batch_size=a.batch_size, seed=0, read_threads=0, pack=pack, order=order)
      next(source("train"))  # warm-up: the reader's files opened, the first window planned
      source.store.records_read = 0
      start, cpu = time.perf_counter(), time.process_time()
      next(source("train", start_position=position))
      print(f"resume, chunk store ({'packed' if pack else 'unpacked'}, {order} order) at batch {position}: "
            f"{source.store.records_read} records read, {time.perf_counter() - start:.3f} s "
            f"({time.process_time() - cpu:.3f} CPU s) to the first batch")
  seqio_source = pipeline.seqio_batch_source(task, batch_size=a.batch_size, sequence_length=a.sequence_length,
                                             seed=0, pack=False)
  if a.seqio_resume:
    next(seqio_source("train"))  # warm-up: TensorFlow's and SeqIO's one-time set-up
  for position in a.positions if a.seqio_resume else ():
    start, cpu = time.perf_counter(), time.process_time()
    next(seqio_source("train", start_position=position))
    print(f"resume, SeqIO stream at batch {position}: {position * a.batch_size} examples skipped, "
          f"{time.perf_counter() - start:.3f} s ({time.process_time() - cpu:.3f} CPU s) to the first batch")


def bench_select(a, root: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.chunk_manifest import FORMAT, atomic_json  # pylint: disable=g-import-not-at-top
  from bliss_jax.selection import score_columns  # pylint: disable=g-import-not-at-top
  store = os.path.join(root, "column_store")
  os.makedirs(store)
  atomic_json(os.path.join(store, "manifest.json"), {"format": FORMAT, "complete": True, "task": "synthetic",
                                                     "split": "train", "sequence_length": a.sequence_length,
                                                     "num_records": a.column_rows})
  rng = np.random.default_rng(0)
  block = 1 << 22
  start = time.perf_counter()
  score_columns.write_column(store, "score", (rng.normal(size=min(block, a.column_rows - i)).astype(np.float32)
                                              for i in range(0, a.column_rows, block)))
  column_mb = os.path.getsize(score_columns.column_path(store, "score")) / 2**20
  print(f"select: a column of {a.column_rows:,} scores ({column_mb:.0f} MiB, "
        f"{column_mb / a.memory_cap_mb:.1f}x the {a.memory_cap_mb} MiB cap) written in "
        f"{time.perf_counter() - start:.1f} s")
  r = _result(_child(["--_worker=select", f"--store={store}", f"--memory_cap_mb={a.memory_cap_mb}",
                      f"--block_size={a.block_size}"]))
  print(f"select: 20% ({r['selected']:,} indices) in {r['seconds']:.1f} s ({r['cpu']:.1f} CPU s) under "
        f"RLIMIT_DATA={a.memory_cap_mb} MiB, peak RSS {r['peak_rss_mb']:.0f} MiB (interpreter included; imported "
        f"{r['modules'] or 'no'} TF/SeqIO/JAX)")


def bench_score(a, store: str) -> None:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.chunk_store import ChunkStore  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.store_source import keyed_store_batches  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.config import preset  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from bliss_jax.selection import offline_scoring, scorers  # pylint: disable=g-import-not-at-top
  task = _register(a.docs, a.words)
  chunks = ChunkStore(store)
  keys = chunks.keys()[:a.score_chunks]
  model = Transformer(preset(a.score_preset, vocab_size=512))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, a.sequence_length), jnp.int32))["params"])
  fn = scorers.make_lm_scorer(model)
  batches = list(keyed_store_batches(chunks, keys, a.score_batch_size))
  model_batches = [{k: b[k] for k in offline_scoring.MODEL_FEATURES if k in b} for b in batches]
  tokens = int(sum(b["decoder_loss_weights"].sum() for b in batches))
  forward = jax.jit(fn)

  def bare():
    for b in model_batches:
      jax.block_until_ready(forward(params, b))

  def scored(**kw):
    def run():
      out = os.path.join(a.score_root, "scores")
      shutil.rmtree(out, ignore_errors=True)
      offline_scoring.score_split(fn, params, task=task, split="train", store_dir=out,
                                  sequence_length=a.sequence_length, batch_size=a.score_batch_size, keys=keys,
                                  progress=False, **kw)
    return run

  runs = {"forward over batches in memory": bare,
          "score_split, chunks by index from the store": scored(chunks=chunks),
          "score_split, the keys streamed from the SeqIO split": scored()}
  for run in runs.values():
    run()  # warm-up: compilation, TensorFlow's one-time set-up
  seconds = {name: [] for name in runs}
  for _ in range(a.score_repeats):  # alternated, so that a change of load hits every variant alike
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)
  base = float(np.median(seconds["forward over batches in memory"]))
  for name, values in seconds.items():
    median = float(np.median(values))
    print(f"score ({a.score_preset}, {len(keys):,} chunks, {tokens:,} tokens, batch {a.score_batch_size}): {name}: "
          f"{tokens / median:,.0f} tokens/s (median of {len(values)}), {median / base:.2f}x the forward's time")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--docs", type=int, default=4000)
  p.add_argument("--words", type=int, default=200, help="mean-ish words per document (uniform in [w/2, 2w))")
  p.add_argument("--shards", type=int, default=8)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--positions", type=lambda s: [int(x) for x in s.split(",")], default=[10, 10_000])
  p.add_argument("--seqio_resume", type=int, default=1, help="also time the SeqIO stream's resume (0: skip)")
  p.add_argument("--column_rows", type=int, default=1 << 28)
  p.add_argument("--memory_cap_mb", type=int, default=96)
  p.add_argument("--block_size", type=int, default=1 << 19)
  p.add_argument("--score_chunks", type=int, default=2048, help="chunks scored in the scoring comparison")
  p.add_argument("--score_batch_size", type=int, default=32)
  p.add_argument("--score_preset", default="tiny")
  p.add_argument("--score_repeats", type=int, default=3)
  p.add_argument("--root", default=None, help="work directory (default: a temporary one, removed after)")
  p.add_argument("--_worker", default=None)
  p.add_argument("--store", default=None)
  p.add_argument("--process_index", type=int, default=0)
  p.add_argument("--process_count", type=int, default=1)
  a = p.parse_args()
  if a._worker == "write":  # pylint: disable=protected-access
    return _write_worker(a)
  if a._worker == "select":  # pylint: disable=protected-access
    return _select_worker(a)
  root = a.root or tempfile.mkdtemp(prefix="bench_data_store_")
  try:
    store = bench_write(a, root)
    bench_resume(a, store)
    a.score_root = root
    bench_score(a, store)
    bench_select(a, root)
  finally:
    if a.root is None:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
