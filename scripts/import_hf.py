#!/usr/bin/env python
r"""Import a Hugging Face `transformers` checkpoint (Llama, Qwen2, GPT-NeoX) as a bliss_jax MODEL_DIR.

  # elsewhere, with network:
  huggingface-cli download TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T --local-dir /data/hf/tinyllama
  python scripts/import_hf.py --hf_dir=/data/hf/tinyllama --model_dir=/data/tinyllama_1p1b [--dtype=bfloat16]

Reads HF_DIR/config.json, the safetensors weights (sharded or not) and the tokenizer (tokenizer.model or
tokenizer.json), and writes MODEL_DIR/model_config.json, checkpoints/0/ (the parameters), tokenizer/ (a copy of the
tokenizer files), vocabulary.json (its record) and hf_import.json (`bliss_jax.export.hf_import`). The MODEL_DIR is
what `scripts/evaluate.py --model_dir`, `TrainSpec.init_from` and every frozen-model slot (KD teacher, MiniPLM
teacher / reference, RHO-1 reference, SALT small LM, BLISS proxy) take. A feature bliss_jax does not compute (rotary
scaling, sliding-window attention, an unknown config key, ...) is refused naming the config.json field. Needs
nothing beyond the base install (the weights are read with numpy; the tokenizer with `tokenizers`).

Flags:
  --hf_dir DIR        a local Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer).
  --model_dir DIR     the MODEL_DIR to create; an existing non-empty directory is refused.
  --dtype D           the model's compute dtype in model_config.json: float32 (default) or bfloat16; parameters are
                      stored in float32 either way.
  --scan_layers       stack the layers' parameters (ModelConfig.scan_layers; what the paper-scale configs train with).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
  p.add_argument("--hf_dir", required=True)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--scan_layers", action="store_true")
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  if not os.path.isfile(os.path.join(args.hf_dir, "config.json")):
    raise SystemExit(f"error: {args.hf_dir} is not a Hugging Face model directory (no config.json)")
  if os.path.isdir(args.model_dir) and os.listdir(args.model_dir) or os.path.isfile(args.model_dir):
    raise SystemExit(f"error: {args.model_dir} exists and is not empty; choose a new MODEL_DIR")
  from bliss_jax.export import hf_import  # pylint: disable=g-import-not-at-top
  try:
    out = hf_import.import_to_model_dir(args.hf_dir, args.model_dir, args.dtype, scan_layers=args.scan_layers)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"imported {args.hf_dir} to {out}: {', '.join(sorted(os.listdir(out)))}")
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
