"""The pipelines that ship with bliss_jax, in the comparison's order: plain and RHO-1, SALT, MiniPLM, the selection
rounds (random, BLISS and any `RoundScorer` given in their options)."""
from bliss_jax.pipelines import bliss, miniplm, rho1, salt

PIPELINES = (rho1.PIPELINE, salt.PIPELINE, miniplm.PIPELINE, bliss.PIPELINE)
