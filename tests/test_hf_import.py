"""Hugging Face import: our model on imported parameters computes the PyTorch model's logits (one device and FSDP on
8), export -> import -> export is the identity, the imported tokenizers give AutoTokenizer's ids on real text in
several languages, an imported MODEL_DIR is evaluated, loaded as a frozen model and trained from (`init_from`, whose
resume is bit-exact), the pipelines take it (RHO-1's base, MiniPLM's teacher, SALT's small LM, BLISS's proxy start),
and unsupported configurations are refused naming the field.

The PyTorch side (building tiny random `transformers` models and tokenizers, saving them with `save_pretrained`,
their logits and AutoTokenizer's ids) runs in one subprocess (`torch_subprocess`). Those tests skip without torch /
transformers; the tokenizer ones also without ../shared/data. The round-trip and refusal tests (on test_export_hf's
`exports`) need only safetensors.
"""
import dataclasses
import importlib.util
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax import partitioning
from bliss_jax.data import hf_tokenizer, vocabulary
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.export import hf, hf_import
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.training import checkpoints, model_vocabulary, trainer
from bliss_jax.training.model_dir import ModelDir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import import_hf  # noqa: E402  pylint: disable=g-import-not-at-top
from test_export_hf import CASES as EXPORT_CASES, exports  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import
import torch_subprocess  # noqa: E402  pylint: disable=g-import-not-at-top

# max |logit_ours - logit_torch| <= LOGIT_TOL * max(1, max |logit_torch|), float32 on CPU.
LOGIT_TOL = 1e-5

# Tiny random models of each family, as transformers builds them: (config class, its arguments, tokenizer, shard).
HF_CASES = {
    # TinyLlama-style: GQA (2 kv heads), head_dim 24 != 64 / 4, untied, theta 5e5; saved in shards.
    "llama": ("LlamaConfig", dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=24, intermediate_size=128, rms_norm_eps=1e-5,
                                  rope_theta=5e5, tie_word_embeddings=False), "llama_spm", "40KB"),
    # Llama with every bias (attention and MLP) and the exact-GELU gated MLP, tied.
    "llama_bias_geglu": ("LlamaConfig", dict(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=1, intermediate_size=96,
                                             attention_bias=True, mlp_bias=True, hidden_act="gelu",
                                             tie_word_embeddings=True), None, None),
    # Qwen1.5-style: q/k/v biases, theta 1e6, tied, an embedding larger than the tokenizer (640 rows, 512 ids).
    "qwen2": ("Qwen2Config", dict(vocab_size=640, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=4, intermediate_size=128, rope_theta=1e6,
                                  tie_word_embeddings=True), "qwen_bpe", None),
    # Pythia-style: parallel residual, rotary on 25% of each head, all biases, untied.
    "neox": ("GPTNeoXConfig", dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=256, rotary_pct=0.25, use_parallel_residual=True,
                                   tie_word_embeddings=False), "neox_bpe", None),
    # GPT-NeoX sequential, rotary 50%, no attention biases (its MLP biases make it use_bias with zero q/k/v/dense
    # biases), tied.
    "neox_sequential": ("GPTNeoXConfig", dict(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=128, rotary_pct=0.5,
                                              use_parallel_residual=False, attention_bias=False,
                                              tie_word_embeddings=True), None, None),
}
# What each imports as (the fields that are not the shape's).
EXPECTED = {
    "llama": dict(norm="rmsnorm", mlp="swiglu", num_kv_heads=2, head_dim=24, use_bias=False, qkv_bias=False,
                  tie_embeddings=False, rope_theta=5e5, norm_eps=1e-5),
    "llama_bias_geglu": dict(mlp="geglu", num_kv_heads=1, head_dim=None, use_bias=True, qkv_bias=False,
                             tie_embeddings=True),
    "qwen2": dict(norm="rmsnorm", mlp="swiglu", num_kv_heads=None, use_bias=False, qkv_bias=True, tie_embeddings=True,
                  rope_theta=1e6, vocab_size=640),
    "neox": dict(norm="layernorm", mlp="gelu", parallel_residual=True, rotary_fraction=0.25, use_bias=True,
                 tie_embeddings=False),
    "neox_sequential": dict(parallel_residual=False, rotary_fraction=0.5, use_bias=True, qkv_bias=False,
                            tie_embeddings=True),
}

_HF_SCRIPT = r"""
import json, os, shutil, sys
import numpy as np
import torch
import transformers

torch.set_num_threads(1)
job = json.load(open(sys.argv[1]))
out = {"transformers": transformers.__version__, "tokenizers": {}}

# ---- tokenizers, trained on the job's texts ----
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
              r"\s+(?!\S)|\s+")


def bpe(kind, directory):
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  if kind == "qwen_bpe":  # Qwen2Tokenizer's pipeline
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    specials, cls = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "Qwen2Tokenizer"
    kw = dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None)
  else:  # GPTNeoXTokenizer's pipeline: <|endoftext|> (0) is bos, eos and unk; <|padding|> is 1
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    specials, cls = ["<|endoftext|>", "<|padding|>"], "GPTNeoXTokenizer"
    kw = dict(eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>",
              pad_token="<|padding|>")
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(job["train_texts"], trainer)
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kw).save_pretrained(directory)
  path = os.path.join(directory, "tokenizer_config.json")
  config = json.load(open(path))
  config["tokenizer_class"] = cls
  json.dump(config, open(path, "w"))


def llama_spm(directory):  # a Llama-convention SentencePiece BPE model: unk 0, bos 1, eos 2, no pad, byte fallback
  import sentencepiece as spm
  os.makedirs(directory, exist_ok=True)
  lines = [l for t in job["train_texts"] for l in t.splitlines() if l.strip()]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_prefix=os.path.join(directory, "spm"), vocab_size=1000, model_type="bpe",
      byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
      add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, num_threads=1, minloglevel=2,
      character_coverage=0.98)
  os.replace(os.path.join(directory, "spm.model"), os.path.join(directory, "tokenizer.model"))
  os.remove(os.path.join(directory, "spm.vocab"))
  config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "add_bos_token": True, "add_eos_token": False}
  json.dump(config, open(os.path.join(directory, "tokenizer_config.json"), "w"))


for kind, directory in job["tokenizers"].items():
  llama_spm(directory) if kind == "llama_spm" else bpe(kind, directory)
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  out["tokenizers"][kind] = {
      "class": type(tok).__name__, "len": len(tok),
      "special": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id},
      "ids": [tok(t)["input_ids"] for t in job["texts"]],
      "ids_no_special": [tok(t, add_special_tokens=False)["input_ids"] for t in job["texts"]],
      "decoded": [tok.decode(tok(t, add_special_tokens=False)["input_ids"]) for t in job["texts"][:50]]}

# ---- models: random O(1) parameters (init's 0.02 scale would hide layout bugs), saved, and their logits ----
tokens = torch.from_numpy(np.load(job["tokens"]).astype(np.int64))
for name, case in job["cases"].items():
  torch.manual_seed(case["seed"])
  config = getattr(transformers, case["config_class"])(**case["config"])
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname and pname.endswith("weight"):
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      elif pname.endswith("bias"):
        p.copy_(0.3 * torch.randn_like(p))
      elif "embed" in pname:
        p.copy_(torch.randn_like(p))
      else:
        gain = 2.0 if any(k in pname for k in ("q_proj", "k_proj", "query_key_value")) else 1.0
        p.copy_(gain * torch.randn_like(p) / p.shape[1] ** 0.5)
  model.eval()
  kw = {"max_shard_size": case["shard"]} if case["shard"] else {}
  model.save_pretrained(case["dir"], **kw)
  if case["tokenizer"]:
    for f in os.listdir(job["tokenizers"][case["tokenizer"]]):
      shutil.copy(os.path.join(job["tokenizers"][case["tokenizer"]], f), case["dir"])
  with torch.no_grad():
    np.save(case["logits"], model(tokens % config.vocab_size).logits.numpy())
json.dump(out, open(job["result"], "w"))
"""


def _texts(shared_data):
  """Real text in several languages (FLORES English, German, Spanish, Russian, Chinese; French Wikipedia; GSM8K;
  C), plus whitespace and special-token edge cases: (tokenizer training texts, test texts)."""
  corpus = shared_data / "corpus"
  flores = {lang: (corpus / "flores_dev" / f"{lang}.dev").read_text().splitlines()
            for lang in ("eng_Latn", "deu_Latn", "spa_Latn", "rus_Cyrl", "zho_Hans")}
  fr = [l for l in (corpus / "wiki_fr_extract.txt").read_text().splitlines() if l.strip()]
  gsm = [json.loads(l)["question"] for l in (corpus / "gsm8k_train.jsonl").read_text().splitlines()[:40]]
  code = (corpus / "linux_kernel_c.txt").read_text()[:6000].split("\n\n")
  train = ["\n".join(lines[:400]) for lines in flores.values()] + ["\n".join(fr[:300]), "\n".join(code)]
  test = ([l for lines in flores.values() for l in lines[600:640]] + fr[400:440] + gsm + code[:20] +
          ["", " ", "  two  spaces\n\ttab", "trailing ", "naïve café ½ ﬁ 日本語", "a <|endoftext|> b", "x  \n\n y",
           "It's DON'T 12345 3.14159"])
  return train, test


@pytest.fixture(scope="module")
def hf_side(tmp_path_factory):
  """{"cases": {case: {"dir", "logits", "tokens"}}, "tokenizers": {kind: dir}, "result": AutoTokenizer's ids,
  "texts"}: the subprocess's models and tokenizers. Skips without torch / transformers."""
  for module in ("torch", "transformers", "safetensors"):
    if importlib.util.find_spec(module) is None:
      pytest.skip(f"{module} is not installed (pip install -e '.[export]')")
  from conftest import SHARED_DATA  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp("hf_side")
  train, texts = _texts(SHARED_DATA) if (SHARED_DATA / "corpus").is_dir() else ([], [])
  tokenizers = {kind: str(work / kind) for kind in ("llama_spm", "qwen_bpe", "neox_bpe")} if train else {}
  tokens = np.random.default_rng(0).integers(0, 1 << 20, size=(2, 20))
  np.save(work / "tokens.npy", tokens)
  job = {"result": str(work / "result.json"), "tokens": str(work / "tokens.npy"), "train_texts": train,
         "texts": texts, "tokenizers": tokenizers, "cases": {}}
  for seed, (name, (cls, config, tokenizer, shard)) in enumerate(sorted(HF_CASES.items())):
    job["cases"][name] = {"config_class": cls, "config": config, "seed": seed, "dir": str(work / name),
                          "tokenizer": tokenizer if tokenizers else None, "shard": shard,
                          "logits": str(work / f"{name}_logits.npy")}
  result = torch_subprocess.run_job(_HF_SCRIPT, job, work)
  cases = {name: dict(c, logits=np.load(c["logits"]), tokens=tokens % HF_CASES[name][1]["vocab_size"])
           for name, c in job["cases"].items()}
  return {"cases": cases, "tokenizers": tokenizers, "result": result, "texts": texts}


def _assert_logits_close(got, want, name):
  scale = max(1.0, float(np.abs(want).max()))
  err = float(np.abs(np.asarray(got) - want).max())
  print(f"{name}: max |logit diff| = {err:.3g}, max |logit| = {scale:.3g}")
  assert err <= LOGIT_TOL * scale, (name, err, scale)
  assert np.std(want) > 0.5 and np.abs(np.diff(want, axis=1)).mean() > 0.1  # not vacuous


@pytest.mark.parametrize("name", sorted(HF_CASES))
def test_imported_logits_equal_torch(hf_side, name):
  case = hf_side["cases"][name]
  cfg, params = hf_import.import_checkpoint(case["dir"])
  assert {k: getattr(cfg, k) for k in EXPECTED[name]} == EXPECTED[name]
  assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in jax.tree.leaves(params))
  if HF_CASES[name][3]:
    assert os.path.isfile(os.path.join(case["dir"], hf_import.WEIGHTS_INDEX_FILE))  # read from several shards
  _assert_logits_close(Transformer(cfg).apply({"params": params}, jnp.asarray(case["tokens"])), case["logits"], name)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["llama", "neox"])
def test_imported_logits_equal_torch_on_8_devices_with_fsdp_and_scanned_layers(hf_side, name):
  """Laid out on an 8-device mesh by the FSDP rules as each tensor is read; scanned layers."""
  case = hf_side["cases"][name]
  mesh, rules = partitioning.make_mesh(data=8), partitioning.logical_rules(fsdp=True)
  cfg, params = hf_import.import_checkpoint(case["dir"], scan_layers=True, mesh=mesh, rules=rules)
  assert cfg.scan_layers and jax.device_count() == 8
  want = trainer.abstract_params(cfg, mesh, rules)
  for got, abstract in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert got.sharding == abstract.sharding and got.shape == abstract.shape
  embedding = params["embed"]["embedding"]  # [vocab, embed]: vocab over "model" (1), embed over "data" (8)
  assert {s.data.shape for s in embedding.addressable_shards} == {(cfg.vocab_size, cfg.d_model // 8)}
  with partitioning.mesh_context(mesh, rules):
    logits = jax.jit(Transformer(cfg).apply)({"params": params}, jnp.asarray(case["tokens"]))
  _assert_logits_close(logits, case["logits"], name)


def _texts_to_check(hf_side):
  if not hf_side["tokenizers"]:
    pytest.skip("shared data not found: no text to train and test the tokenizers on")
  return hf_side["texts"]


@pytest.mark.parametrize("kind,cls,start_id", [("llama_spm", hf_tokenizer.SentencePieceTokenizerVocabulary, 1),
                                                ("qwen_bpe", hf_tokenizer.TokenizersVocabulary, None),
                                                ("neox_bpe", hf_tokenizer.TokenizersVocabulary, None)])
def test_tokenizer_ids_equal_autotokenizer(hf_side, kind, cls, start_id):
  texts = _texts_to_check(hf_side)
  theirs = hf_side["result"]["tokenizers"][kind]
  vocab = hf_tokenizer.load_tokenizer(hf_side["tokenizers"][kind])
  assert type(vocab) is cls and vocab.start_id == start_id and vocab.id0_is_token  # (tests/test_hf_token_ids.py)
  assert vocab.vocab_size == theirs["len"] and vocab.extra_ids == 0
  assert (vocab.eos_id, vocab.unk_id) == (theirs["special"]["eos"], theirs["special"]["unk"])
  checked = []
  for text, ids, ids_no_special in zip(texts, theirs["ids"], theirs["ids_no_special"]):
    if kind == "llama_spm" and text[:1].isspace():
      continue  # leading whitespace: SentencePiece and transformers' converted Llama tokenizer differ (documented)
    mine = list(vocab.encode(text))
    assert mine == ids_no_special, text[:60]
    assert ([start_id] if start_id is not None else []) + mine == ids, text[:60]
    checked.append(text)
  assert len(checked) > 250
  for first, last in (("\u0400", "\u04ff"), ("\u4e00", "\u9fff"), ("\u00c0", "\u00ff")):  # Cyrillic, CJK, Latin-1
    assert any(first <= c <= last for t in checked for c in t)
  if cls is hf_tokenizer.TokenizersVocabulary:
    for text, decoded in zip(texts, theirs["decoded"]):
      assert vocab.decode(vocab.encode(text)) == decoded
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for text in texts[:5] + texts[-8:]:
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == list(vocab.encode(text)), text[:60]
  if cls is hf_tokenizer.TokenizersVocabulary:  # in a graph, as SeqIO's dataset.map runs it
    encode = tf.function(vocab.encode_tf)
    assert encode(tf.constant(texts[0])).numpy().tolist() == list(vocab.encode(texts[0]))
    rows = tf.constant([list(vocab.encode(t))[:5] for t in texts[:3]])
    assert [x.decode() for x in vocab.decode_tf(rows).numpy()] == [vocab.decode(r) for r in rows.numpy().tolist()]


def test_tokenizer_records_and_reloads(hf_side):
  _texts_to_check(hf_side)
  for kind, directory in hf_side["tokenizers"].items():
    vocab = hf_tokenizer.load_tokenizer(directory)
    record = vocabulary.vocabulary_record(vocab)
    assert record["kind"] == vocabulary.HF_TOKENIZER and record["path"] == directory
    assert record["fingerprint"] == vocabulary.file_fingerprint(vocab.ids_file)
    again = vocabulary.load_recorded(record)
    assert vocabulary.vocabulary_record(again) == record
    assert vocabulary.vocabulary_record(vocabulary.load_path(directory)) == record


@pytest.fixture(scope="module")
def imported_qwen(hf_side, tmp_path_factory):
  """The qwen2 case (with its BPE tokenizer when shared data exists) imported by the command line."""
  model_dir = str(tmp_path_factory.mktemp("imported") / "qwen")
  import_hf.main([f"--hf_dir={hf_side['cases']['qwen2']['dir']}", f"--model_dir={model_dir}"])
  return model_dir


def test_cli_writes_a_model_dir_that_loads_like_a_trained_one(hf_side, imported_qwen):
  run = ModelDir(imported_qwen)
  cfg = run.read_model_config()
  assert cfg.qkv_bias and cfg.tie_embeddings and run.checkpoint_steps() == [0]
  step, params = checkpoints.load_params(imported_qwen)
  case = hf_side["cases"]["qwen2"]
  _assert_logits_close(Transformer(cfg).apply({"params": params}, jnp.asarray(case["tokens"])), case["logits"], "cli")
  with open(run.file(hf_import.PROVENANCE_FILE)) as f:
    assert json.load(f)["config"]["model_type"] == "qwen2"
  # A frozen-model slot (KD teacher, reference LM, ...) takes it.
  mesh, rules = partitioning.make_mesh(data=1, devices=jax.devices()[:1]), partitioning.logical_rules()
  modules, frozen, steps = trainer.load_frozen_models({"teacher": imported_qwen}, mesh, rules,
                                                      vocab_size=cfg.vocab_size)
  assert steps == {"teacher": 0} and modules["teacher"].cfg == cfg
  for a, b in zip(jax.tree.leaves(frozen["teacher"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  if hf_side["tokenizers"]:
    record = run.read_vocabulary()
    assert record["kind"] == vocabulary.HF_TOKENIZER and record["start_id"] is None
    assert record["path"] == run.file(hf_import.TOKENIZER_DIR) and record["size"] == 512
    vocab, again = model_vocabulary.vocabulary_for(imported_qwen)
    assert again == record and vocab.encode("Hallo Welt") == hf_tokenizer.load_tokenizer(
        hf_side["tokenizers"]["qwen_bpe"]).encode("Hallo Welt")


def test_cli_refuses_an_existing_model_dir(hf_side, imported_qwen):
  with pytest.raises(SystemExit, match="exists and is not empty"):
    import_hf.main([f"--hf_dir={hf_side['cases']['qwen2']['dir']}", f"--model_dir={imported_qwen}"])
  with pytest.raises(FileExistsError, match="not empty"):
    hf_import.import_to_model_dir(hf_side["cases"]["qwen2"]["dir"], imported_qwen)


def test_evaluate_scores_an_imported_model_with_its_tokenizer(hf_side, imported_qwen, tmp_path):
  """scripts/evaluate.py on the imported MODEL_DIR: its recorded tokenizer and no start id (Qwen adds no bos)."""
  if not hf_side["tokenizers"]:
    pytest.skip("shared data not found")
  from conftest import SHARED_DATA  # pylint: disable=g-import-not-at-top
  import evaluate  # pylint: disable=g-import-not-at-top
  out = evaluate.main([f"--model_dir={imported_qwen}", "--tasks=arc_easy", "--limit=4", f"--output_dir={tmp_path}",
                       f"--data_dir={SHARED_DATA / 'eval'}", "--no_progress", "--data_parallel=1"])
  assert out["config"]["start_id"] is None and out["config"]["vocabulary"]["kind"] == vocabulary.HF_TOKENIZER
  assert 0.0 <= out["results"]["arc_easy"]["acc,none"] <= 1.0


def _spec(cfg, init_from, **kw):
  kw = dict(dict(num_steps=2, batch_size=4, sequence_length=16, eval_every=0, checkpoint_every=1, log_every=1), **kw)
  return trainer.TrainSpec(model_config=cfg, init_from=init_from,
                           optimizer=trainer.OptimizerConfig(warmup_steps=1, peak_lr=1e-2), **kw)


def _train(model_dir, spec, **kw):
  source = synthetic_source(vocab_size=spec.model_config.vocab_size, batch_size=4, sequence_length=16)
  return trainer.train(model_dir=str(model_dir), spec=spec, batch_source=source, progress_bar=False, mesh_data=1,
                       devices=jax.devices()[:1], **kw)


@pytest.mark.integration
def test_train_from_an_imported_model_resumes_bit_exactly(hf_side, imported_qwen, tmp_path):
  """init_from: step 1 (learning rate 0 at the warmup's start) keeps the imported parameters exactly; a run stopped
  after step 1 and resumed ends where the straight run ends, bit for bit."""
  cfg = ModelDir(imported_qwen).read_model_config()
  _, imported = checkpoints.load_params(imported_qwen)
  spec = _spec(cfg, imported_qwen)
  _train(tmp_path / "straight", spec)
  _, step1 = checkpoints.load_params(str(tmp_path / "straight"), step=1)
  for a, b in zip(jax.tree.leaves(step1), jax.tree.leaves(imported)):
    np.testing.assert_array_equal(a, b)
  _train(tmp_path / "resumed", spec, stop_at_step=1)
  _train(tmp_path / "resumed", spec)  # resumes from its own step-1 checkpoint; init_from is not read again
  _, straight = checkpoints.load_params(str(tmp_path / "straight"), step=2)
  _, resumed = checkpoints.load_params(str(tmp_path / "resumed"), step=2)
  moved = False
  for a, b, c in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), jax.tree.leaves(imported)):
    np.testing.assert_array_equal(a, b)
    moved |= not np.array_equal(a, c)
  assert moved
  strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rows]
  assert strip(ModelDir(str(tmp_path / "straight")).metrics()) == strip(ModelDir(str(tmp_path / "resumed")).metrics())
  assert ModelDir(str(tmp_path / "straight")).read_run_config()["init_from"] == imported_qwen


@pytest.mark.integration
def test_a_task_in_the_imported_tokenizer_trains_the_imported_model(hf_side, imported_qwen, tmp_path):
  """A SeqIO task over real text read with the imported tokenizer (its tf.numpy_function path): its batches hold the
  tokenizer's ids, its record is the MODEL_DIR's, and a run from the imported model on it records that vocabulary."""
  if not hf_side["tokenizers"]:
    pytest.skip("shared data not found")
  from conftest import SHARED_DATA  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  path = str(SHARED_DATA / "corpus" / "flores_dev" / "eng_Latn.dev")
  task = local_files.register_local_files_task("hf_import_flores", [path],
                                               vocabulary_path=os.path.join(imported_qwen, hf_import.TOKENIZER_DIR))
  record = model_vocabulary.record_of_tasks([task])
  assert model_vocabulary.check(imported_qwen, record, what="the task") == ModelDir(imported_qwen).read_vocabulary()
  vocab = pipeline.task_vocabulary(task)
  source = pipeline.seqio_batch_source(task, batch_size=4, sequence_length=32, pack=False)
  batch = next(source("validation", repeat=False))
  row = [int(t) for t, w in zip(batch["decoder_target_tokens"][0], batch["decoder_loss_weights"][0]) if w]
  text = open(path).read()
  assert len(row) > 10 and vocab.decode(row[:10]) in text
  cfg = ModelDir(imported_qwen).read_model_config()
  spec = _spec(cfg, imported_qwen).replace(num_steps=1)
  result = trainer.train(model_dir=str(tmp_path / "run"), spec=spec, vocab_size=vocab.vocab_size,
                         batch_source=pipeline.seqio_batch_source(task, batch_size=4, sequence_length=16),
                         progress_bar=False, mesh_data=1, devices=jax.devices()[:1])
  assert result.final_step == 1 and np.isfinite(result.last_train_metrics["loss"])
  assert ModelDir(str(tmp_path / "run")).read_vocabulary()["fingerprint"] == record["fingerprint"]


def test_init_from_refuses_another_model_naming_the_field(hf_side, imported_qwen, tmp_path):
  cfg = ModelDir(imported_qwen).read_model_config()
  with pytest.raises(ValueError, match=r"ModelConfig\.d_ff=128 there, 256 here"):
    _train(tmp_path / "other", _spec(dataclasses.replace(cfg, d_ff=256), imported_qwen))
  # A compute-only difference (bfloat16 activations, remat) is fine; record() keeps init_from only when given.
  trainer.check_init_from(imported_qwen, dataclasses.replace(cfg, dtype="bfloat16", remat=True), None)
  assert "init_from" not in _spec(cfg, None).record() and _spec(cfg, "x").record()["init_from"] == "x"


# ---- export -> import (no torch needed) ----

@pytest.mark.parametrize("name", sorted(EXPORT_CASES))
def test_export_then_import_is_the_identity(exports, name):
  cfg, params, out_dir = exports[name]
  got_cfg, got = hf_import.import_checkpoint(out_dir, cfg.dtype, scan_layers=cfg.scan_layers)
  assert got_cfg == cfg
  assert jax.tree.structure(got) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_export_import_export_gives_the_same_files(exports, tmp_path):
  """Through a MODEL_DIR: the second export's weights, config and tokenizer files are the first's."""
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  _, _, first = exports["llama_gqa_untied"]
  model_dir = hf_import.import_to_model_dir(first, str(tmp_path / "imported"))
  record = ModelDir(model_dir).read_vocabulary()
  assert record["kind"] == vocabulary.HF_TOKENIZER and record["start_id"] == 0  # our export's bos 0
  second = hf.export(model_dir, str(tmp_path / "again"), max_position_embeddings=64)
  for name in ("config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"):
    with open(os.path.join(first, name), "rb") as a, open(os.path.join(second, name), "rb") as b:
      assert a.read() == b.read(), name
  want = safetensors_numpy.load_file(os.path.join(first, hf.WEIGHTS_FILE))
  got = safetensors_numpy.load_file(os.path.join(second, hf.WEIGHTS_FILE))
  assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)


def _edited(src, dst, **changes):
  """A copy of HF directory `src` whose config.json has `changes` (None deletes a key)."""
  shutil.copytree(src, dst)
  path = os.path.join(dst, "config.json")
  with open(path) as f:
    config = json.load(f)
  for k, v in changes.items():
    if v is None:
      config.pop(k, None)
    else:
      config[k] = v
  with open(path, "w") as f:
    json.dump(config, f)
  return dst


@pytest.mark.parametrize("case,changes,field", [
    ("llama_gqa_untied", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    ("llama_gqa_untied", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "rope_parameters.rope_type"),
    ("llama_gqa_untied", dict(hidden_act="gelu_pytorch_tanh"), "hidden_act"),
    ("llama_gqa_untied", dict(model_type="mistral"), "model_type"),
    ("llama_gqa_untied", dict(qk_layernorm=True), "qk_layernorm"),
    ("llama_gqa_untied", dict(tie_word_embeddings=True), "tie_word_embeddings"),
    ("qwen_qkv_bias_headdim_scan", dict(tie_word_embeddings=False), "tie_word_embeddings"),
    ("qwen_qkv_bias_headdim_scan", dict(model_type="qwen2", attention_bias=None, mlp_bias=None, pretraining_tp=None,
                                        layer_types=["full_attention", "sliding_attention"], sliding_window=8),
     "layer_types"),
    ("qwen_qkv_bias_headdim_scan", dict(model_type="qwen2", attention_bias=None, mlp_bias=None, pretraining_tp=None,
                                        use_sliding_window=True, sliding_window=8, max_window_layers=1),
     "use_sliding_window"),
    ("neox_pythia", dict(hidden_act="gelu_fast"), "hidden_act"),
    ("neox_pythia", dict(rope_parameters=None, rotary_pct=0.25, rope_scaling={"type": "dynamic", "factor": 2.0}),
     "rope_scaling"),
    ("neox_pythia", dict(hidden_size=None), "hidden_size"),
])
def test_unsupported_config_is_refused_naming_the_field(exports, tmp_path, case, changes, field):
  src = _edited(exports[case][2], str(tmp_path / "hf"), **changes)
  with pytest.raises(ValueError, match=rf"config\.json {field}="):
    hf_import.import_checkpoint(src)


def test_qwen2_layout_with_full_attention_imports(exports, tmp_path):
  """Qwen2's config (no attention_bias key: q/k/v biases always, none on o_proj) over the same tensors."""
  cfg, params, out_dir = exports["qwen_qkv_bias_headdim_scan"]
  src = _edited(out_dir, str(tmp_path / "hf"), model_type="qwen2", attention_bias=None, mlp_bias=None,
                pretraining_tp=None, layer_types=["full_attention"] * 2, use_sliding_window=False,
                sliding_window=None, max_window_layers=2)
  got_cfg, got = hf_import.import_checkpoint(src, scan_layers=True)
  assert got_cfg == cfg
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_extra_tensors_and_missing_weights_are_refused(exports, tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  _, _, out_dir = exports["llama_gqa_untied"]
  src = _edited(out_dir, str(tmp_path / "extra"))
  tensors = safetensors_numpy.load_file(os.path.join(src, hf.WEIGHTS_FILE))
  hf.save_safetensors(dict(tensors, **{"model.layers.0.self_attn.q_norm.weight": np.ones(4, np.float32),
                                       "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}),
                      os.path.join(src, hf.WEIGHTS_FILE))
  with pytest.raises(ValueError, match=r"not account for.*q_norm"):
    hf_import.import_checkpoint(src)
  os.remove(os.path.join(src, hf.WEIGHTS_FILE))
  with open(os.path.join(src, "pytorch_model.bin"), "wb"):
    pass
  with pytest.raises(FileNotFoundError, match="only safetensors"):
    hf_import.import_checkpoint(src)


def test_bfloat16_checkpoints_are_read_exactly(exports, tmp_path):
  """Released checkpoints store bfloat16, which safetensors' numpy reader cannot return; ours converts exactly."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  _, _, out_dir = exports["neox_pythia"]
  src = _edited(out_dir, str(tmp_path / "bf16"))
  reader = hf_import.SafetensorsCheckpoint(src)
  tensors = {n: reader.read(n).astype(ml_dtypes.bfloat16) for n in reader.names()}
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(tensors, os.path.join(src, hf.WEIGHTS_FILE), metadata={"format": "pt"})
  bf16 = hf_import.SafetensorsCheckpoint(src)
  for n in reader.names():
    assert bf16.read(n).dtype == np.float32
    np.testing.assert_array_equal(bf16.read(n), tensors[n].astype(np.float32))


# ---- the recipes' hub models (gin_configs/paper/*_continual*.gin, miniplm_qwen_imported.gin) ----

# config.json of the released checkpoints the recipes name, as published on the hub (transformers 4.x keys).
RELEASED = {
    "tinyllama_1p1b": {  # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
        "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
        "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000},
    "qwen_1p8b": {  # Qwen/Qwen1.5-1.8B
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 5504, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.37.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
    "pythia_160m": {  # EleutherAI/pythia-160m
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 12,
        "num_hidden_layers": 12, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True,
        "vocab_size": 50304},
}


def _released(tmp_path, name):
  """A directory with the released config.json and, for the biases the import inspects, one non-zero MLP bias."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  directory = tmp_path / name
  directory.mkdir()
  (directory / "config.json").write_text(json.dumps(RELEASED[name]))
  bias = "gpt_neox.layers.0.mlp.dense_h_to_4h.bias" if name.startswith("pythia") else "model.norm.weight"
  save_file({bias: np.ones(4, np.float32)}, str(directory / hf_import.WEIGHTS_FILE), metadata={"format": "pt"})
  return str(directory)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configs_import_as_their_presets(tmp_path, name):
  pytest.importorskip("safetensors")
  directory = _released(tmp_path, name)
  cfg = hf_import.model_config(hf_import.read_config(directory), hf_import.SafetensorsCheckpoint(directory))
  assert cfg == preset(name)


@pytest.fixture
def parsed():
  import gin  # pylint: disable=g-import-not-at-top
  from bliss_jax import cli  # pylint: disable=g-import-not-at-top
  gin.clear_config()

  def parse(*files, bindings=()):
    cli.setup(cli.parse_args([f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]))
    return gin
  yield parse
  gin.clear_config()


def test_continual_pretraining_recipes_start_both_models_from_the_imported_base(parsed, tmp_path):
  """RHO-1's setting: student and reference TrainSpecs init_from the imported TinyLlama (as `import_hf.py
  --scan_layers` writes its shape), tasks in its tokenizer; init_from accepts that shape."""
  pytest.importorskip("safetensors")
  base = tmp_path / "tinyllama"
  base.mkdir()
  directory = _released(tmp_path, "tinyllama_1p1b")
  imported = hf_import.model_config(hf_import.read_config(directory), hf_import.SafetensorsCheckpoint(directory),
                                    scan_layers=True)
  ModelDir(str(base)).write_model_config(imported)
  for recipe, task in (("rho1_tinyllama_1p1b_continual_reference.gin", "reference"),
                       ("rho1_tinyllama_1p1b_continual.gin", None)):
    gin = parsed(f"paper/{recipe}", bindings=[f"BASE_DIR='{base}'", f"TOKENIZER_DIR='{base}/tokenizer'"])
    spec = gin.get_configurable("TrainSpec")()
    assert spec.init_from == str(base)
    assert spec.model_config == preset("tinyllama_1p1b", dtype="bfloat16", remat=True, scan_layers=True)
    trainer.check_init_from(str(base), spec.model_config, None)
    assert str(gin.query_parameter("benchmark_mixture.vocabulary_path")) == "%TOKENIZER_DIR"
    assert gin.query_parameter("%TOKENIZER_DIR") == f"{base}/tokenizer"
    if task:
      assert gin.query_parameter("benchmark_mixture.task") == task
    else:
      assert gin.query_parameter("%REFERENCE_DIR").endswith("continual_reference")
  gin = parsed("paper/miniplm_qwen_imported.gin", bindings=[f"TEACHER_DIR='{base}'"])
  assert gin.query_parameter("%TEACHER_DIR") == str(base)
  assert str(gin.query_parameter("miniplm.teacher_dir")) == "%TEACHER_DIR"
  assert gin.query_parameter("c4_task.name") == "c4_en_qwen"
  assert preset(gin.query_parameter("%TEACHER_PRESET")) == preset("qwen_1p8b")


@pytest.fixture(scope="module")
def imported_flores_tasks(hf_side, imported_qwen):
  """Two tasks read with the imported Qwen tokenizer: English FLORES sentences (the stream) and German ones (a
  reference set of another distribution)."""
  if not hf_side["tokenizers"]:
    pytest.skip("shared data not found")
  from conftest import SHARED_DATA  # pylint: disable=g-import-not-at-top
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  tokenizer = os.path.join(imported_qwen, hf_import.TOKENIZER_DIR)
  return tuple(local_files.register_local_files_task(
      f"hf_import_pipeline_{lang}", [str(SHARED_DATA / "corpus" / "flores_dev" / f"{lang}.dev")],
      vocabulary_path=tokenizer, validation_fraction=0.2) for lang in ("eng_Latn", "deu_Latn"))


def _started_from(model_dir, imported):
  """The run's record names the imported MODEL_DIR as its start, and its vocabulary is the imported tokenizer's."""
  record = ModelDir(model_dir).read_run_config()
  assert record["init_from"] == os.path.abspath(imported), record.get("init_from")
  assert ModelDir(model_dir).read_vocabulary()["fingerprint"] == ModelDir(imported).read_vocabulary()["fingerprint"]


@pytest.mark.integration
def test_rho1_continual_pretraining_starts_both_models_from_the_imported_checkpoint(imported_qwen,
                                                                                   imported_flores_tasks, tmp_path):
  from bliss_jax.pipelines import rho1  # pylint: disable=g-import-not-at-top
  stream, reference_set = imported_flores_tasks
  spec = _spec(ModelDir(imported_qwen).read_model_config(), imported_qwen, seed=1, batch_size=8)  # 8 test devices
  rep = rho1.run(root=str(tmp_path), train_task=stream, reference_task=reference_set, student=spec, reference=spec,
                 students=("plain", "rho1"), ratio=0.6, token_selection_batches=0, eval_max_batches=1,
                 progress_bar=False)
  for model_dir in (rep["reference"]["model_dir"], rep["students"]["plain"]["model_dir"],
                    rep["students"]["rho1"]["model_dir"]):
    _started_from(model_dir, imported_qwen)
  for name in ("plain", "rho1"):
    assert np.isfinite(rep["students"][name]["heldout"]["loss"])
  sel = rep["students"]["rho1"]["selection"]
  assert np.isfinite(sel["excess_loss_mean"]) and 0 < sel["selected_fraction_mean"] <= 0.6 + 1e-6


@pytest.mark.integration
def test_miniplm_takes_an_imported_teacher_and_starts_its_reference_from_it(imported_qwen, imported_flores_tasks,
                                                                           tmp_path):
  from bliss_jax.pipelines import miniplm  # pylint: disable=g-import-not-at-top
  stream, _ = imported_flores_tasks
  spec = _spec(ModelDir(imported_qwen).read_model_config(), None, batch_size=8)  # the 8 test devices' data axis
  rep = miniplm.run(root=str(tmp_path), pool_task=stream, pool_split="train", student=spec,
                    reference=spec.replace(init_from=imported_qwen), teacher_dir=imported_qwen, reference_fraction=0.25,
                    alpha=0.5, score_batch_size=8, students=("miniplm",), progress_bar=False)
  _started_from(rep["reference"]["model_dir"], imported_qwen)
  student = rep["students"]["miniplm"]
  assert student["steps"] == 2 and np.isfinite(student["heldout"]["loss"])


def _stage_marks(root):
  """{stage.json path: modification time} of every finished stage under `root`."""
  import glob  # pylint: disable=g-import-not-at-top
  return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "*", "stage.json"))}


@pytest.mark.integration
def test_salt_takes_an_imported_small_lm_as_teacher_and_scorer(imported_qwen, imported_flores_tasks, tmp_path):
  """SALT's small LM given as the imported MODEL_DIR (`teacher_dir`, and SALT_DS's `scorer_dir`): the students read
  the imported tokenizer's task at the imported padded vocabulary, the KD students' teacher is the imported model,
  and a rerun reuses every stage."""
  from bliss_jax.pipelines import salt  # pylint: disable=g-import-not-at-top
  stream, _ = imported_flores_tasks
  cfg = ModelDir(imported_qwen).read_model_config()
  student = _spec(dataclasses.replace(cfg, num_layers=3), None, batch_size=8)  # KD: the teacher's vocab_size
  kw = dict(root=str(tmp_path), task=stream, student=student, n_kd=1, teacher_dir=imported_qwen,
            scorer_dir=imported_qwen, students=("baseline", "salt", "salt_ds"), pool_task=stream, pool_split="train",
            pool_max_examples=32, score_batch_size=8, eval_fractions=(1.0,), eval_max_batches=1, progress_bar=False)
  with pytest.raises(ValueError, match="needs scorer_step"):  # which checkpoint scores, before any stage runs
    salt.run(**dict(kw, scorer_dir=None))
  assert not os.listdir(tmp_path)
  rep = salt.run(**kw)
  assert rep["teacher"]["model_dir"] == imported_qwen and rep["teacher"]["scorer_dir"] == imported_qwen
  assert rep["scoring"]["scored_examples"] == 32 and rep["selection"]["n_selected"] == 8  # m = n_KD × batch
  fingerprint = ModelDir(imported_qwen).read_vocabulary()["fingerprint"]
  for name in ("baseline", "salt", "salt_ds"):
    res = rep["students"][name]
    assert {k: v["step"] for k, v in res["heldout"].items()} == {"switch": 1, "100%": 2}
    assert all(np.isfinite(v["loss"]) for v in res["heldout"].values())
    assert ModelDir(res["model_dir"]).read_vocabulary()["fingerprint"] == fingerprint
    with open(os.path.join(str(tmp_path), f"student_{name}", "stage.json")) as f:
      inputs = json.load(f)["inputs"]
    assert inputs.get("teacher") == (None if name == "baseline" else imported_qwen) and res["kd_steps"] == (
        0 if name == "baseline" else 1)
  marks = _stage_marks(str(tmp_path))
  assert len(marks) == 6  # teacher_eval, score, select and the three students (no teacher, no scorer_data)
  again = salt.run(**kw)
  assert _stage_marks(str(tmp_path)) == marks and again["summary"] == rep["summary"]


@pytest.mark.integration
def test_bliss_proxy_starts_from_the_imported_checkpoint(imported_qwen, imported_flores_tasks, tmp_path):
  """The selection rounds with the proxy TrainSpec `init_from` the imported MODEL_DIR: the proxy warm-up's step-1
  parameters (learning rate 0 at the warmup's start) are the imported ones, and a BLISS round runs on that proxy."""
  from bliss_jax.bilevel.step import BilevelConfig  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines import bliss  # pylint: disable=g-import-not-at-top
  stream, reference_set = imported_flores_tasks
  cfg = ModelDir(imported_qwen).read_model_config()
  target = _spec(cfg, None, batch_size=8)  # the proxy's vocab_size: the KL term compares their logits
  proxy = _spec(cfg, imported_qwen, batch_size=8)
  rep = bliss.run(root=str(tmp_path), pool_task=stream, pool_split="train", pool_max_examples=64, target=target,
                  proxy=proxy, reference_task=reference_set, bilevel=BilevelConfig(gamma=0.1), bilevel_steps=2,
                  bilevel_batch_size=8, rounds=1, select_fraction=0.5, methods=("bliss",), score_batch_size=8,
                  eval_task=reference_set, eval_max_batches=1, progress_bar=False)
  proxy_dir = rep["proxy"]["model_dir"]
  _started_from(proxy_dir, imported_qwen)
  _, imported = checkpoints.load_params(imported_qwen)
  _, step1 = checkpoints.load_params(proxy_dir, step=1)
  for a, b in zip(jax.tree.leaves(step1), jax.tree.leaves(imported)):
    np.testing.assert_array_equal(a, b)
  (round1,) = rep["methods"]["bliss"]["rounds"]
  assert round1["bilevel"]["model_dir"] and round1["scoring"]["scored_examples"] == 32  # pool 1: half of 64
  assert round1["selection"]["n_selected"] == 16 and round1["step"] == 2 and np.isfinite(round1["loss"])
