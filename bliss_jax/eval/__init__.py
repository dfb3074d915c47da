"""Zero-shot evaluation in lm-evaluation-harness conventions: readers, batched log-likelihood, metrics, harness."""
