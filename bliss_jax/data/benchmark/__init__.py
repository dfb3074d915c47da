"""The benchmark mixture: labelled domains and qualities, train/pool/held-out splits, over ``<data_dir>/corpus``."""
