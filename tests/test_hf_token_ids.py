"""Batches of tasks in a Hugging Face tokenizer whose id 0 is a token: that token (GPT-NeoX's eos, Qwen's "!",
Llama's unk) is packed, segmented, weighted and scored like any other, rows of a tokenizer with a bos start with it,
and a task in the project's own SentencePiece vocabulary (pad 0) is batched exactly as seqio batches it.

The tokenizers are built here without `transformers`: byte-level BPE `tokenizer.json`s with no merges (one token per
byte, GPT-2's byte order, so "!" is the first byte token) and a Llama-convention SentencePiece model, each with the
`tokenizer_config.json` its family ships (as tests/test_hf_import.py's tokenizers have).
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tokenizers
from pydoc_data import topics

from bliss_jax.data import hf_tokenizer, pipeline, seqio_tasks, vocabulary
from bliss_jax.data.keyed import keyed_batches
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.selection import reference_losses, scorers

LENGTH = 16
EOT = "<|endoftext|>"


def _byte_tokens():
  """GPT-2's byte-to-character map in its order: the printable bytes from "!" first, then the rest."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  rest = [b for b in range(256) if b not in printable]
  return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def _byte_bpe(directory, specials, specials_first, config):
  """A byte-level BPE tokenizer directory: one token per byte, `specials` before or after the bytes."""
  tokens = specials + _byte_tokens() if specials_first else _byte_tokens() + specials
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  tok.add_special_tokens(specials)
  os.makedirs(directory)
  tok.save(os.path.join(directory, hf_tokenizer.TOKENIZER_JSON))
  with open(os.path.join(directory, hf_tokenizer.TOKENIZER_CONFIG), "w") as f:
    json.dump(config, f)
  return str(directory)


def _texts():
  return [text for _, text in sorted(topics.topics.items())][:20]


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
  """{family: tokenizer directory}: "neox" (<|endoftext|> = 0 is bos, eos and unk; <|padding|> 1), "qwen" ("!" = 0;
  <|endoftext|> eos and pad, no bos), "llama" (SentencePiece: unk 0, bos 1 added, eos 2, no pad) and "t5" (the
  project's own SentencePiece model, pad 0, in a tokenizer directory)."""
  work = tmp_path_factory.mktemp("tokenizers")
  dirs = {
      "neox": _byte_bpe(work / "neox", [EOT, "<|padding|>"], True,
                        {"eos_token": EOT, "bos_token": EOT, "unk_token": EOT, "pad_token": "<|padding|>"}),
      "qwen": _byte_bpe(work / "qwen", [EOT, "<|im_start|>", "<|im_end|>"], False,
                        {"eos_token": EOT, "pad_token": EOT, "bos_token": None, "unk_token": None})}
  llama = work / "llama"
  os.makedirs(llama)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter([l for t in _texts() for l in t.splitlines() if l.strip()]),
      model_prefix=str(llama / "spm"), vocab_size=200, model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      character_coverage=1.0, num_threads=1, minloglevel=2)
  os.replace(llama / "spm.model", llama / hf_tokenizer.SPM_FILE)
  with open(llama / hf_tokenizer.TOKENIZER_CONFIG, "w") as f:
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}, f)
  dirs["llama"] = str(llama)
  t5 = work / "t5"
  os.makedirs(t5)
  vocabulary.train_sentencepiece(_texts(), str(t5 / hf_tokenizer.SPM_FILE), 300)
  dirs["t5"] = str(t5)
  return dirs


def _register(name, vocab, texts, objective="lm"):
  docs = [(f"{name}:{i}", t) for i, t in enumerate(texts)]
  seqio_tasks.register_document_task(name, lambda: docs, vocab, validation_fraction=0.0, objective=objective)
  return name


def _examples(name):
  """The targets of the task's train examples, in order."""
  lengths = pipeline.task_feature_lengths(LENGTH)
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False, num_epochs=1)
  return [x["targets"].tolist() for x in ds.as_numpy_iterator()]


def _rows(name, pack):
  """Every train row of the task, unshuffled, one pass, as one dict of [rows, LENGTH] arrays."""
  ds = pipeline.get_dataset(name, "train", LENGTH, 4, shuffle=False, seed=0, pack=pack, repeat=False,
                            drop_remainder=False)
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _check_rows(rows, examples, first_input):
  """The rows hold `examples` in order, one segment each: its tokens as targets with weight 1, positions 0, 1, ...,
  decoder inputs `first_input` then the tokens shifted right; padding is 0 everywhere."""
  i = 0
  for r in range(len(rows["decoder_target_tokens"])):
    ids = rows["decoder_segment_ids"][r]
    for s in range(1, ids.max() + 1):
      at = np.flatnonzero(ids == s)
      example = examples[i]
      i += 1
      assert at.tolist() == list(range(at[0], at[0] + len(example))), (r, s)
      np.testing.assert_array_equal(rows["decoder_target_tokens"][r, at], example)
      np.testing.assert_array_equal(rows["decoder_input_tokens"][r, at], [first_input] + example[:-1])
      np.testing.assert_array_equal(rows["decoder_positions"][r, at], np.arange(len(example)))
      np.testing.assert_array_equal(rows["decoder_loss_weights"][r, at], 1)
    pad = ids == 0
    for k in ("decoder_target_tokens", "decoder_loss_weights", "decoder_positions"):
      assert not rows[k][r, pad].any(), (k, r)
  assert i == len(examples)


def test_id0_is_a_token_for_the_imported_tokenizers_and_padding_for_a_t5_model(tokenizer_dirs):
  got = {family: hf_tokenizer.load_tokenizer(d) for family, d in tokenizer_dirs.items()}
  assert {f: (v.id0_is_token, v.start_id) for f, v in got.items()} == {
      "neox": (True, None), "qwen": (True, None), "llama": (True, 1), "t5": (False, None)}
  assert got["neox"].eos_id == 0 and got["qwen"].encode("!") == [0] and got["llama"].unk_id == 0


@pytest.mark.parametrize("pack", [True, False])
def test_gpt_neox_eos_id_0_is_packed_and_carries_loss(tokenizer_dirs, pack):
  """Every document ends with eos = 0 (and one spells it inside): each is a token of its segment with weight 1."""
  vocab = hf_tokenizer.load_tokenizer(tokenizer_dirs["neox"])
  name = _register("hf_ids_neox", vocab, ["Hello world", f"a {EOT} b", "abcdefghijklmnopqrstuvwxyz", "x"])
  examples = _examples(name)
  assert all(x[-1] == 0 for x in examples) and any(0 in x[:-1] for x in examples)
  rows = _rows(name, pack)
  _check_rows(rows, examples, 0)
  eos = (rows["decoder_target_tokens"] == 0) & (rows["decoder_segment_ids"] > 0)
  assert eos.sum() == sum(x.count(0) for x in examples) == 6
  np.testing.assert_array_equal(rows["decoder_loss_weights"][eos], 1)


@pytest.mark.parametrize("pack", [True, False])
def test_qwen_exclamation_mark_id_0_inside_text_is_packed_and_carries_loss(tokenizer_dirs, pack):
  vocab = hf_tokenizer.load_tokenizer(tokenizer_dirs["qwen"])
  name = _register("hf_ids_qwen", vocab, ["Hi! You!", "!!", "no mark here at all, none", "wow!"])
  examples = _examples(name)
  assert sum(x.count(0) for x in examples) == 5
  rows = _rows(name, pack)
  _check_rows(rows, examples, 0)
  assert rows["decoder_loss_weights"].sum() == sum(map(len, examples))


@pytest.mark.parametrize("pack", [True, False])
def test_llama_rows_start_with_bos_and_unk_id_0_carries_loss(tokenizer_dirs, pack):
  vocab = hf_tokenizer.load_tokenizer(tokenizer_dirs["llama"])
  name = _register("hf_ids_llama", vocab, ["the value ☃ of", "a list", "☃"])
  examples = _examples(name)
  assert sum(x.count(0) for x in examples) == 2  # the snowman is unknown
  rows = _rows(name, pack)
  _check_rows(rows, examples, 1)
  starts = rows["decoder_positions"] == 0
  np.testing.assert_array_equal(rows["decoder_input_tokens"][starts & (rows["decoder_segment_ids"] > 0)], 1)


def test_prefix_lm_rows_of_a_llama_task_start_with_bos_and_weigh_only_targets(tokenizer_dirs):
  vocab = hf_tokenizer.load_tokenizer(tokenizer_dirs["llama"])
  name = _register("hf_ids_llama_prefix", vocab, ["the value ☃ of a list of names", "☃ a"], objective="prefix_lm")
  lengths = pipeline.task_feature_lengths(LENGTH, "prefix_lm")
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False, num_epochs=1, seed=0)
  examples = [(x["inputs"].tolist(), x["targets"].tolist()) for x in ds.as_numpy_iterator()]
  rows = next(pipeline.get_dataset(name, "train", LENGTH, len(examples), shuffle=False, seed=0, pack=False,
                                   repeat=False, feature_converter="prefix_lm").as_numpy_iterator())
  for r, (inputs, targets) in enumerate(examples):
    n, m = len(inputs), len(targets)
    np.testing.assert_array_equal(rows["decoder_target_tokens"][r, :n + m], inputs + targets)
    np.testing.assert_array_equal(rows["decoder_input_tokens"][r, :n + m], [1] + inputs + targets[:-1])
    np.testing.assert_array_equal(rows["decoder_loss_weights"][r], [0] * n + [1] * m + [0] * (LENGTH - n - m))
  assert any(0 in i + t for i, t in examples)


def test_id_0_gets_a_reference_loss_and_a_log_probability(tokenizer_dirs):
  """RHO-1's per-token reference losses and MiniPLM's log-probabilities read keyed rows: "!" is scored."""
  vocab = hf_tokenizer.load_tokenizer(tokenizer_dirs["qwen"])
  name = _register("hf_ids_qwen_scores", vocab, ["Hi! You!", "wow!"])
  batch = next(keyed_batches(name, "train", LENGTH, 2))
  model = Transformer(preset("tiny", vocab_size=vocab.vocab_size))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))["params"])
  feed = {k: jnp.asarray(v) for k, v in batch.items() if k in reference_losses.offline_scoring.MODEL_FEATURES}
  tok_loss = np.asarray(reference_losses.make_reference_scorer(model)(params, feed)["tok_loss"])
  log_p = np.asarray(scorers.token_log_probs(model, params, feed))
  mark = (batch["decoder_target_tokens"] == 0) & (batch["decoder_segment_ids"] > 0)
  assert mark.sum() == 3 and (tok_loss[mark] > 0).all() and (log_p[mark] < 0).all()
  assert batch["decoder_loss_weights"].sum() == sum(len(vocab.encode(t)) + 1 for t in ["Hi! You!", "wow!"])


def _seqio_rows(name, feature_converter, pack):
  """What seqio itself gives for the task (its get_dataset and converter): the batches of a vocabulary with pad 0."""
  ds = seqio.get_dataset(name, task_feature_lengths=pipeline.task_feature_lengths(LENGTH, feature_converter),
                         feature_converter=pipeline.make_feature_converter(feature_converter, pack),
                         dataset_split="train", shuffle=True, num_epochs=1, seed=3, verbose=False,
                         shard_info=seqio.ShardInfo(index=0, num_shards=1))
  if not pack:
    ds = ds.map(pipeline._add_unpacked_segments)  # pylint: disable=protected-access
  return list(ds.batch(4, drop_remainder=True).as_numpy_iterator())


@pytest.mark.parametrize("objective,feature_converter", [("lm", "decoder"), ("prefix_lm", "prefix_lm")])
def test_a_task_in_a_pad_0_vocabulary_is_batched_exactly_as_seqio_batches_it(tokenizer_dirs, objective,
                                                                             feature_converter):
  """The project's default kind of vocabulary (T5 conventions), loaded as such and as a tokenizer directory: training
  and evaluation batches (packed or not) and keyed scoring rows are seqio's, byte for byte."""
  texts = _texts()[:6]
  for vocab in (vocabulary.load_vocabulary(os.path.join(tokenizer_dirs["t5"], hf_tokenizer.SPM_FILE)),
                hf_tokenizer.load_tokenizer(tokenizer_dirs["t5"])):
    name = _register(f"hf_ids_t5_{objective}", vocab, texts, objective=objective)
    for pack in (True, False):
      ours = list(pipeline.get_dataset(name, "train", LENGTH, 4, shuffle=True, seed=3, pack=pack, repeat=False,
                                        feature_converter=feature_converter).as_numpy_iterator())
      theirs = _seqio_rows(name, feature_converter, pack)
      assert len(ours) == len(theirs) > 5
      for a, b in zip(ours, theirs):
        assert sorted(a) == sorted(b)
        for k in a:
          assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    if objective == "lm":  # (a prefix-LM task's keyed rows draw their split points without a seed)
      keyed = next(keyed_batches(name, "train", LENGTH, 8, feature_converter=feature_converter))
      lengths = pipeline.task_feature_lengths(LENGTH, feature_converter)
      base = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False, num_epochs=1,
                                                         use_cached=False)
      plain = pipeline.make_feature_converter(feature_converter, pack=False)(base, lengths)
      plain = next(plain.map(pipeline._add_unpacked_segments).batch(8).as_numpy_iterator())  # pylint: disable=protected-access
      for k, v in plain.items():
        assert keyed[k].tobytes() == v.tobytes(), k
