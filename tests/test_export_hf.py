"""Hugging Face export: the exported model's PyTorch logits match ours, the tokenizer reproduces seqio's ids behind
the bos 0, lm-evaluation-harness's continuation log-likelihoods on the export equal our harness's, and unexportable
shapes are refused with the field named.

The PyTorch side (model and tokenizer loading, logits) runs in one subprocess for all cases and needs torch and
transformers (`pip install -e '.[export]'`); those tests skip without them. The export itself, the config,
refusal and CLI tests need neither."""
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.eval import loglikelihood, readers
from bliss_jax.export import hf, hf_layout
from bliss_jax.models.config import PRESETS, preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.training import checkpoints
from bliss_jax.training.model_dir import ModelDir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import export_hf  # noqa: E402  pylint: disable=g-import-not-at-top
import torch_subprocess  # noqa: E402  pylint: disable=g-import-not-at-top

VOCAB = 2176  # the default vocabulary's 2148 ids (incl. 100 sentinels) rounded up to 128, as the trainer does
STEP = 7
# max |logit_hf - logit_jax| <= LOGIT_TOL * max(1, max |logit_jax|), float32 on CPU.
LOGIT_TOL = 1e-5

CASES = {
    # tiny: RMSNorm, SwiGLU, 4 query heads over 2 kv heads (GQA), untied.
    "llama_gqa_untied": dict(name="tiny"),
    # SALT-style: multi-query (1 kv head), GeGLU (exact GELU), tied; plus biases everywhere (mlp_bias).
    "llama_mqa_geglu_tied_bias": dict(name="tiny_mqa", use_bias=True),
    # Qwen-style: q/k/v biases only (o_proj gets zeros), theta 1e6, tied, head_dim 24 != 64/4, scanned layers.
    "qwen_qkv_bias_headdim_scan": dict(name="tiny", qkv_bias=True, rope_theta=1e6, tie_embeddings=True,
                                       head_dim=24, scan_layers=True),
    # Pythia: LayerNorm, parallel residual, rotary on 25% (4 of 16 dims), exact GELU, all biases, untied.
    "neox_pythia": dict(name="tiny_neox"),
    # GPT-NeoX sequential residual, rotary 50%, q/k/v biases only (zeros for dense and the MLP), tied.
    "neox_sequential_tied": dict(name="tiny_neox", parallel_residual=False, use_bias=False, qkv_bias=True,
                                 rotary_fraction=0.5, tie_embeddings=True),
}


def _randomize(params, seed):
  """O(1) random parameters (init's 0.02 scale makes attention near-uniform, hiding rotary/head-layout bugs)."""
  rng = np.random.default_rng(seed)
  flat = jax.tree_util.tree_flatten_with_path(params)

  def value(path, x):
    names = [getattr(k, "key", str(k)) for k in path]
    shape = x.shape
    if names[-1] == "scale":
      return 1.0 + 0.3 * rng.standard_normal(shape)
    if names[-1] == "bias":
      return 0.3 * rng.standard_normal(shape)
    if names[-1] == "embedding":
      return rng.standard_normal(shape)
    lead = 1 if "layers" in names else 0  # scanned layers: leading layer axis
    fan_in = np.prod(shape[lead:lead + 2]) if names[-2] == "out" else shape[lead]
    gain = 2.0 if names[-2] in ("query", "key") else 1.0
    return gain * rng.standard_normal(shape) / np.sqrt(fan_in)

  leaves = [jnp.asarray(value(path, x), jnp.float32) for path, x in flat[0]]
  return jax.tree_util.tree_unflatten(flat[1], leaves)


def _make_model_dir(model_dir, cfg, seed):
  """A MODEL_DIR as the trainer leaves it (model_config.json + an Orbax checkpoint holding `params`)."""
  params = nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  params = _randomize(params, seed)
  os.makedirs(model_dir, exist_ok=True)
  ModelDir(model_dir).write_model_config(cfg)
  manager = checkpoints.make_manager(model_dir)
  checkpoints.save(manager, STEP, {"params": params}, {"position": 0}, force=True)
  manager.close()
  return params


# The PyTorch side runs in a subprocess (`torch_subprocess`: transformers' modeling code aborts a process that has
# imported TensorFlow).
_HF_SCRIPT = r"""
import json, sys
import numpy as np
import torch
import transformers

torch.set_num_threads(1)
job = json.load(open(sys.argv[1]))
result = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
for name, case in job["cases"].items():
  model, info = transformers.AutoModelForCausalLM.from_pretrained(case["dir"], torch_dtype=torch.float32,
                                                                  output_loading_info=True)
  model.eval()
  tokens = torch.from_numpy(np.load(case["tokens"]).astype(np.int64))
  with torch.no_grad():
    np.save(case["logits"], model(tokens).logits.numpy())
  result["cases"][name] = {"class": type(model).__name__,
                           "loading_info": {k: sorted(map(str, v)) for k, v in info.items()}}
tok = transformers.AutoTokenizer.from_pretrained(job["tokenizer_dir"])


# lm-evaluation-harness 0.4.9.2+ for a causal HF model: TemplateLM.loglikelihood, _encode_pair and HFLM.tok_encode
# with its default add_bos_token=None (the tokenizer's own special tokens).
def harness_encode(context, continuation):
  if context == "":
    cont = tok.encode(continuation, add_special_tokens=False)
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
  whole, ctx = tok.encode(context + continuation), tok.encode(context)
  return ctx, whole[len(ctx):]


ll = job["loglikelihood"]
result["loglikelihood"] = {}
for name in ll["cases"]:
  model = transformers.AutoModelForCausalLM.from_pretrained(job["cases"][name]["dir"], torch_dtype=torch.float32)
  model.eval()
  max_length = model.config.max_position_embeddings  # HFLM.max_length
  rows = []
  for context, continuation in ll["requests"]:
    ctx, cont = harness_encode(context, continuation)
    inp = (ctx + cont)[-(max_length + 1):][:-1]  # HFLM._loglikelihood_tokens
    with torch.no_grad():
      logits = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)
    logits = logits[len(inp) - len(cont):len(inp)]
    target = torch.tensor(cont)
    rows.append({"context_ids": ctx, "continuation_ids": cont,
                 "logprob": float(logits.gather(1, target[:, None]).sum()),
                 "is_greedy": bool((logits.argmax(-1) == target).all())})
  result["loglikelihood"][name] = rows
result["tokenizer"] = {
    "class": type(tok).__name__, "len": len(tok),
    "special": [tok.eos_token_id, tok.pad_token_id, tok.unk_token_id, tok.bos_token_id],
    "extra_ids": [tok.convert_tokens_to_ids(t) for t in job["extra_tokens"]],
    "ids": [tok(t)["input_ids"] for t in job["texts"]],
    "ids_no_special": [tok(t, add_special_tokens=False)["input_ids"] for t in job["texts"]],
    "decoded": tok.decode(job["decode_ids"]),
}
json.dump(result, open(job["result"], "w"))
"""

# Whitespace runs, NFKC-normalized and unknown characters, literal special-token strings, sentinels, and a run
# of "*" (the `tokenizers` library's Unigram, behind T5Tokenizer, splits this one differently from SentencePiece).
TOKENIZER_EDGE_CASES = ["", " ", "  two  spaces\n\ttab", "trailing ", "naïve café ½ ﬁ 日本語",
                        "a </s> b <unk> <pad> c", "x <extra_id_0> y<extra_id_1>", "1,234.56 -- (x)=>y",
                        "Attribute references\n********************\n\nAn attribute"]


LOGLIKELIHOOD_CASES = ["llama_gqa_untied", "neox_pythia"]
MAX_LENGTH = 64  # the exports' max_position_embeddings: lm-evaluation-harness's max_length for them


def harness_requests(long_text):
  """(context, continuation) requests as our readers make them (ARC-style multiple choice, LAMBADA), an empty
  context, a context ending in a space, and a context longer than MAX_LENGTH tokens (left-truncated, bos and all)."""
  arc = readers.MultipleChoice("arc", "Question: Which keyword defines a function?\nAnswer:", ("def", "lambda x"), 0)
  lambada = readers.Lambada("lambada", "The loop runs until the list is", "empty")
  return (arc.requests() + lambada.requests() + [("", "The statement assigns a value."), ("Answer: ", "yes"),
                                                  (long_text[:600], " the end of it.")])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """{case: (cfg, params, out_dir)}: each case's MODEL_DIR exported with the default vocabulary."""
  pytest.importorskip("safetensors")
  out = {}
  for seed, name in enumerate(sorted(CASES)):
    overrides = dict(CASES[name])
    cfg = preset(overrides.pop("name"), vocab_size=VOCAB, **overrides)
    root = tmp_path_factory.mktemp(name)
    params = _make_model_dir(str(root / "model"), cfg, seed=seed)
    out[name] = cfg, params, hf.export(str(root / "model"), str(root / "hf"), max_position_embeddings=64)
  return out


@pytest.fixture(scope="module")
def hf_results(exports, tmp_path_factory):
  """What transformers computes from the exports: {"cases": {case: {"logits", "jax_logits", ...}}, "tokenizer",
  "texts", "decode_ids"}; skips without torch / transformers."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from bliss_jax.data import embedded  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp("hf_side")
  texts = [text for _, text in embedded.embedded_documents()[:300]] + TOKENIZER_EDGE_CASES
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top
  vocab = vocabulary.default_vocabulary()
  decode_ids = list(vocab.encode(texts[0][:500]))
  job = {"cases": {}, "result": str(work / "result.json"), "tokenizer_dir": exports[sorted(CASES)[0]][2],
         "texts": texts, "decode_ids": decode_ids, "extra_tokens": ["▁<extra_id_0>", "▁<extra_id_99>"],
         "loglikelihood": {"cases": LOGLIKELIHOOD_CASES, "requests": harness_requests(texts[0])}}
  jax_logits = {}
  rng = np.random.default_rng(0)
  for name, (cfg, params, out_dir) in exports.items():
    tokens = rng.integers(0, VOCAB, size=(2, 24)).astype(np.int32)
    np.save(work / f"{name}_tokens.npy", tokens)
    jax_logits[name] = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens)))
    job["cases"][name] = {"dir": out_dir, "tokens": str(work / f"{name}_tokens.npy"),
                          "logits": str(work / f"{name}_logits.npy")}
  result = torch_subprocess.run_job(_HF_SCRIPT, job, work)
  for name, case in result["cases"].items():
    case["logits"] = np.load(job["cases"][name]["logits"])
    case["jax_logits"] = jax_logits[name]
  result.update(texts=texts, decode_ids=decode_ids, vocabulary=vocab)
  return result


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_writes_the_files_and_config(exports, name):
  cfg, _, out_dir = exports[name]
  assert sorted(os.listdir(out_dir)) == sorted([
      "model.safetensors", "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
      "bliss_jax_export.json"])
  with open(os.path.join(out_dir, "config.json")) as f:
    config = json.load(f)
  assert config["architectures"] == [hf_layout.GPT_NEOX if name.startswith("neox") else hf_layout.LLAMA]
  assert config["vocab_size"] == VOCAB and config["tie_word_embeddings"] == cfg.tie_embeddings
  assert (config["eos_token_id"], config["pad_token_id"], config["bos_token_id"]) == (1, 0, 0)
  assert hf.BOS_ID == loglikelihood.START_ID
  with open(os.path.join(out_dir, "bliss_jax_export.json")) as f:
    assert json.load(f)["step"] == STEP


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_jax(hf_results, name):
  case = hf_results["cases"][name]
  assert case["class"] == (hf_layout.GPT_NEOX if name.startswith("neox") else hf_layout.LLAMA)
  assert not any(case["loading_info"].values()), case["loading_info"]  # no missing / unexpected / mismatched keys
  got, want = case["logits"], case["jax_logits"]
  assert got.shape == want.shape
  scale = max(1.0, float(np.abs(want).max()))
  err = float(np.abs(got - want).max())
  print(f"{name}: max |logit diff| = {err:.3g}, max |logit| = {np.abs(want).max():.3g} "
        f"(transformers {hf_results['transformers']}, torch {hf_results['torch']})")
  assert err <= LOGIT_TOL * scale, (name, err, scale)
  # Not vacuous: the logits vary over positions and vocabulary.
  assert np.std(want) > 0.5 and np.abs(np.diff(want, axis=1)).mean() > 0.1


@pytest.mark.integration
def test_tokenizer_reproduces_seqio_ids(hf_results):
  tok, vocab = hf_results["tokenizer"], hf_results["vocabulary"]
  assert tok["class"] == hf.TOKENIZER_CLASS
  assert tok["len"] == vocab.vocab_size == 2148
  assert tok["special"] == [1, 0, 2, 0]  # eos, pad, unk, bos
  assert tok["extra_ids"] == [vocab.vocab_size - 1, vocab.vocab_size - 100]  # <extra_id_0> has the highest id
  for text, ids, ids_no_special in zip(hf_results["texts"], tok["ids"], tok["ids_no_special"]):
    want = list(vocab.encode(text))
    assert ids == [0] + want, text[:80]  # the bos 0 every training example starts with, then seqio's ids
    assert ids_no_special == want, text[:80]
  assert tok["decoded"] == vocab.decode(hf_results["decode_ids"])


@pytest.mark.integration
@pytest.mark.parametrize("name", LOGLIKELIHOOD_CASES)
def test_harness_loglikelihood_matches_transformers_on_the_export(exports, hf_results, name):
  """Continuation log-likelihoods from transformers on the export, tokenized as lm-evaluation-harness tokenizes for
  an HF model whose tokenizer adds a bos, equal our harness's on the same parameters: same ids, same numbers."""
  cfg, params, _ = exports[name]
  vocab = hf_results["vocabulary"]
  requests = harness_requests(hf_results["texts"][0])
  ours = loglikelihood.make_score_fn(Transformer(cfg), params, vocab, batch_size=4, max_length=MAX_LENGTH,
                                     progress=False)(requests)
  theirs = hf_results["loglikelihood"][name]
  assert len(theirs) == len(requests)
  for (context, continuation), mine, hf_row in zip(requests, ours, theirs):
    ctx, cont = loglikelihood.encode_pair(vocab, context, continuation)
    assert hf_row["context_ids"][0] == 0 and ctx[0] == 0, context[:40]
    assert (hf_row["context_ids"], hf_row["continuation_ids"]) == (ctx, cont), context[:40]
    print(f"{name}: {context[:30]!r} + {continuation[:20]!r}: ours {mine.logprob:.6f}, "
          f"transformers {hf_row['logprob']:.6f}")
    assert mine.logprob == pytest.approx(hf_row["logprob"], abs=1e-4, rel=1e-6), (context[:40], continuation)
    assert mine.is_greedy == hf_row["is_greedy"]
  assert len(ctx) + len(cont) > MAX_LENGTH + 1  # the last request was left-truncated (its bos with it)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_exportable(name):
  config = hf.hf_config(preset(name))
  want = hf_layout.GPT_NEOX if name.startswith("pythia") or name == "tiny_neox" else hf_layout.LLAMA
  assert config["architectures"] == [want]


def test_pythia_config_matches_the_released_one():
  """pythia-70m's config.json on the Hub, the fields that define the function."""
  config = hf.hf_config(preset("pythia_70m"))
  released = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=6,
                  rotary_pct=0.25, rotary_emb_base=10000.0, layer_norm_eps=1e-5, use_parallel_residual=True,
                  tie_word_embeddings=False, vocab_size=50304, hidden_act="gelu", model_type="gpt_neox")
  assert {k: config[k] for k in released} == released


def test_partial_rotary_factor_survives_hf_truncation():
  for hd in range(2, 200):
    for rotary_dim in range(2, hd + 1, 2):
      cfg = preset("tiny_neox", d_model=hd * 4, rotary_fraction=rotary_dim / hd)
      if cfg.rotary_dim == rotary_dim:
        assert int(hd * hf.hf_config(cfg)["rotary_pct"]) == rotary_dim


@pytest.mark.parametrize("name,overrides,field", [
    ("tiny_neox", dict(num_kv_heads=2), "num_kv_heads"),
    ("tiny_neox", dict(mlp="swiglu"), "mlp"),
    ("tiny_neox", dict(head_dim=32), "head_dim"),
    ("tiny_neox", dict(rotary_fraction=0.0), "rotary_fraction"),
    ("tiny", dict(mlp="gelu"), "mlp"),
    ("tiny", dict(parallel_residual=True), "parallel_residual"),
    ("tiny", dict(rotary_fraction=0.5), "rotary_fraction"),
    ("tiny", dict(d_model=66, head_dim=16), "d_model"),
])
def test_unrepresentable_shape_raises_naming_the_field(name, overrides, field):
  cfg = preset(name, **overrides)
  with pytest.raises(ValueError, match=rf"ModelConfig\.{field}="):
    hf.hf_config(cfg)
  with pytest.raises(ValueError, match=rf"ModelConfig\.{field}="):
    hf.convert_params({}, cfg)


def test_export_refuses_before_loading_the_checkpoint(tmp_path):
  ModelDir(str(tmp_path)).write_model_config(preset("tiny", rotary_fraction=0.5))  # no checkpoints/ at all
  with pytest.raises(ValueError, match=r"ModelConfig\.rotary_fraction=0\.5"):
    hf.export(str(tmp_path), str(tmp_path / "hf"))


def test_params_that_do_not_match_the_config_are_refused():
  cfg = preset("tiny", vocab_size=64)
  params = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(0),
                                                                  jnp.zeros((1, 4), jnp.int32))["params"]))
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), params)
  assert len(hf.convert_params(params, cfg)) == 2 + 9 * cfg.num_layers + 1
  with pytest.raises(ValueError, match="not accounted for"):
    hf.convert_params(params, preset("tiny", vocab_size=64, tie_embeddings=True))
  with pytest.raises(ValueError, match="missing"):
    hf.convert_params(params, preset("tiny", vocab_size=64, qkv_bias=True))
  with pytest.raises(ValueError, match="shape"):
    hf.convert_params(params, preset("tiny", vocab_size=128))


def test_cli_refuses_a_directory_that_is_not_a_model_dir(tmp_path):
  with pytest.raises(SystemExit, match="not a bliss_jax MODEL_DIR"):
    export_hf.main(["--model_dir", str(tmp_path), "--out_dir", str(tmp_path / "hf")])


def test_cli_exports_a_model_dir(exports, tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  _, _, out_dir = exports["neox_pythia"]
  model_dir = os.path.join(os.path.dirname(out_dir), "model")
  cli_dir = export_hf.main([f"--model_dir={model_dir}", f"--out_dir={tmp_path / 'cli'}", f"--step={STEP}",
                            "--max_length=64"])
  for name in ("config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"):
    with open(os.path.join(out_dir, name), "rb") as a, open(os.path.join(cli_dir, name), "rb") as b:
      assert a.read() == b.read(), name
  want = safetensors_numpy.load_file(os.path.join(out_dir, "model.safetensors"))
  got = safetensors_numpy.load_file(os.path.join(cli_dir, "model.safetensors"))
  assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
