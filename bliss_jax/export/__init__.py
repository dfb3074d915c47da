"""Conversion between bliss_jax models and other frameworks' formats: Hugging Face `transformers` checkpoints out
(`hf`: a MODEL_DIR to a model directory) and in (`hf_import`: a checkpoint directory to a MODEL_DIR), through one
correspondence of shapes and tensors (`hf_layout`)."""
