#!/usr/bin/env python
r"""Export a trained MODEL_DIR to a Hugging Face `transformers` model directory (for lm-evaluation-harness).

  python scripts/export_hf.py --model_dir=/tmp/run --out_dir=/tmp/run/hf [--step=N]
  lm_eval --model hf --model_args pretrained=/tmp/run/hf,dtype=float32,add_bos_token=True --tasks hellaswag

Writes OUT_DIR/model.safetensors, config.json, generation_config.json, tokenizer.model, tokenizer_config.json and
bliss_jax_export.json (see `bliss_jax.export.hf`). The tokenizer prepends id 0 as its bos, the id every training
example starts with, so lm-evaluation-harness scores the rows our own harness scores (by default from 0.4.9.2;
`add_bos_token=True` makes 0.4.2-0.4.9.1 do it too). LayerNorm (Pythia-style) models become GPTNeoXForCausalLM,
RMSNorm (Llama/Qwen/SALT-style) models LlamaForCausalLM; a shape neither can compute is refused with the field that
prevents it. Needs `safetensors` (pip install -e '.[export]'); torch and transformers (5) only to use the result.

Flags:
  --model_dir DIR            a training run's directory (model_config.json, checkpoints/).
  --out_dir DIR              the HF model directory to write (created; existing files replaced).
  --step S                   export checkpoint S instead of the latest.
  --vocabulary PATH|default  the SentencePiece model the run was trained with (`default`: the embedded one). Default:
                             the one MODEL_DIR recorded; another is refused. A MODEL_DIR without a record (written
                             before runs recorded theirs) gets the embedded one, with a warning.
  --max_length L             the context length config.json advertises (default 2048; use the training length).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--out_dir", required=True)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--vocabulary", default=None)
  p.add_argument("--max_length", type=int, default=2048)
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  run = ModelDir(args.model_dir)
  if not os.path.isfile(run.model_config_path):
    raise SystemExit(f"error: {args.model_dir} is not a bliss_jax MODEL_DIR (no model_config.json; expected the "
                     "directory a training run wrote, with model_config.json and checkpoints/)")
  if not os.path.isdir(run.checkpoints_dir):
    raise SystemExit(f"error: {args.model_dir} has no checkpoints/ directory: nothing to export")
  from bliss_jax.export import hf  # pylint: disable=g-import-not-at-top
  try:
    out = hf.export(args.model_dir, args.out_dir, step=args.step, vocabulary_path=args.vocabulary,
                    max_position_embeddings=args.max_length)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"exported {args.model_dir} to {out}: {', '.join(sorted(os.listdir(out)))}")
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
