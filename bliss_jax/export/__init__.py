"""Export of trained bliss_jax checkpoints to other frameworks' formats (`hf`: Hugging Face `transformers`)."""
