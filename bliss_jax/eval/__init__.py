"""Evaluation in lm-evaluation-harness conventions: readers, task registry, few-shot contexts, batched log-likelihood,
greedy generation, metrics, harness."""
