"""The comparison over seeds, on hand-made per-seed reports: means are the seeds' means, paired differences pair the
seeds, the claims read the right steps, shared stages count once, and report.md shows them."""
import pytest

from bliss_jax.report import across_seeds

STEPS = (10, 20)


def _row(pipeline, losses, accuracy=0.5, wall=60.0, zero_shot=None, selection=None):
  curve = [{"step": s, "loss": l, "accuracy": accuracy, "loss@other": l + 1.0, "num_tokens": 100,
            "eval_sample": "whole split", "target_flops": s * 1e6, "total_flops": s * 1e6 + 5.0}
           for s, l in zip(STEPS, losses)]
  final = {k: curve[-1][k] for k in ("step", "loss", "accuracy", "loss@other")}
  return {"pipeline": pipeline, "final": final, "curve": curve, "wall_seconds": wall, "eval_seconds": 2.0,
          "flops": {"target_training": 2e7, "auxiliary": {}, "auxiliary_total": 0.0, "total": 2e7},
          "zero_shot": zero_shot, "selection": selection}


def _report(seed, rows, shared):
  config = {"seed": seed, "target_seed": seed, "methods": list(rows), "target_steps": 20, "target_params": 1000,
            "batch_size": 4, "sequence_length": 8, "target_step_flops": 1e6, "train_task": "t", "pool": "t:train",
            "reference_task": "t", "eval": "t:validation", "eval_sample": "whole split", "eval_tokens": 100}
  return {"scale": "test", "methods": rows, "pool_composition": None, "zero_shot_note": None,
          "shared_stages": shared, "config": config}


TEACHER = {"shared/salt/teacher": {"seconds": 120.0, "methods": ["salt"]}}


def _reports():
  """Two seeds of plain, random, bliss, salt (loss per step 10, 20)."""
  r0 = _report(0, {"plain": _row("rho1", (4.0, 3.50), zero_shot={"arc": {"acc": 0.30}}),
                   "random": _row("bliss", (4.0, 3.60), selection={"n": 10, "by_domain": {"a": 0.5, "b": 0.5}}),
                   "bliss": _row("bliss", (3.9, 3.40), wall=100.0, selection={"n": 10, "by_domain": {"a": 1.0}}),
                   "salt": _row("salt", (3.45, 3.30))},
               dict(TEACHER, **{"seed_0/bliss/target_r0": {"seconds": 30.0, "methods": ["random", "bliss"]}}))
  r1 = _report(1, {"plain": _row("rho1", (4.1, 3.70), zero_shot={"arc": {"acc": 0.34}}),
                   "random": _row("bliss", (4.1, 3.70), selection={"n": 10, "by_domain": {"b": 1.0}}),
                   "bliss": _row("bliss", (4.0, 3.50), wall=140.0, selection={"n": 10, "by_domain": {"a": 0.6,
                                                                                                      "b": 0.4}}),
                   "salt": _row("salt", (3.75, 3.50))},
               dict(TEACHER, **{"seed_1/bliss/target_r0": {"seconds": 34.0, "methods": ["random", "bliss"]}}))
  return [r0, r1]


def test_means_and_intervals_are_over_the_seeds():
  agg = across_seeds.aggregate(_reports(), ["seed_0", "seed_1"])
  assert agg["seeds"] == 2 and agg["target_seeds"] == [0, 1]
  bliss = agg["methods"]["bliss"]
  assert bliss["final"]["loss"] == pytest.approx((3.40 + 3.50) / 2)
  assert bliss["final"]["loss@other"] == pytest.approx((4.40 + 4.50) / 2)  # every numeric final value
  ci = bliss["final_ci"]["loss"]
  assert ci["n"] == 2 and ci["half_width"] == pytest.approx(12.7062 * 0.05, abs=1e-4)  # sd 0.0707, se 0.05
  assert "step" not in bliss["final_ci"]
  assert bliss["wall_seconds"]["mean"] == 120.0
  assert [p["seed"] for p in bliss["per_seed"]] == [0, 1]
  z = agg["methods"]["plain"]["zero_shot_ci"]["arc"]["acc"]
  assert z["mean"] == pytest.approx(0.32) and z["n"] == 2
  assert agg["methods"]["bliss"]["zero_shot"] is None
  # compositions: a label a seed did not select counts 0 there
  assert agg["methods"]["random"]["selection"]["by_domain"] == pytest.approx({"a": 0.25, "b": 0.75})


def test_paired_differences_pair_the_seeds():
  agg = across_seeds.aggregate(_reports(), ["seed_0", "seed_1"])
  d = agg["methods"]["bliss"]["vs_random"]["loss"]  # -0.2, -0.2: no spread
  assert d["mean"] == pytest.approx(-0.2) and d["half_width"] == pytest.approx(0.0, abs=1e-12)
  d = agg["methods"]["bliss"]["vs_plain"]["loss"]  # -0.1, -0.2
  assert d["mean"] == pytest.approx(-0.15) and d["half_width"] == pytest.approx(12.7062 * 0.05, abs=1e-4)
  assert "vs_plain" not in agg["methods"]["plain"] and "vs_random" in agg["methods"]["plain"]


def test_claims_read_the_step_at_their_fraction():
  agg = across_seeds.aggregate(_reports(), ["seed_0", "seed_1"])
  claims = {c["claim"]: c for c in agg["claims"]}
  assert set(claims) == {"bliss: loss lower than random's", "salt at 70% of the steps: loss no higher than plain's",
                         "salt: loss no higher than plain's"}  # the others' methods did not run
  bliss = claims["bliss: loss lower than random's"]
  assert bliss["differences"] == pytest.approx([-0.2, -0.2]) and bliss["verdict"] == "holds"
  early = claims["salt at 70% of the steps: loss no higher than plain's"]
  assert early["step"] == 10 and early["comparator_step"] == 20  # 14 is not a curve point: step 10
  assert early["differences"] == pytest.approx([3.45 - 3.50, 3.75 - 3.70])
  assert early["verdict"] == "inconclusive"


def test_shared_stages_count_once():
  agg = across_seeds.aggregate(_reports(), ["seed_0", "seed_1"])
  assert list(agg["shared_stages"]) == ["seed_0/bliss/target_r0", "seed_1/bliss/target_r0", "shared/salt/teacher"]
  own = 2 * (60 + 60 + 60) + 100 + 140 + 8 * 2.0  # own stages of every method and seed, and their evaluation
  assert agg["wall_seconds_total"] == pytest.approx(own + 120 + 30 + 34)


def test_curve_band_is_the_mean_and_spread():
  band = across_seeds.curve_band([_row("x", (4.0, 3.5))["curve"], _row("x", (4.2, 3.3))["curve"]])
  assert [p["step"] for p in band] == [10, 20] and band[1]["target_flops"] == 2e7
  assert band[1]["mean"]["loss"] == pytest.approx(3.4)
  assert (band[1]["min"]["loss"], band[1]["max"]["loss"]) == (3.3, 3.5)
  assert "num_tokens" in band[0]["mean"] and "eval_sample" not in band[0]["mean"]
  with pytest.raises(ValueError, match="different steps"):
    across_seeds.curve_band([_row("x", (4.0, 3.5))["curve"], _row("x", (4.0,))["curve"]])


def test_report_md_shows_intervals_differences_claims_and_shared_stages():
  agg = across_seeds.aggregate(_reports(), ["seed_0", "seed_1"])
  md = across_seeds.format_report(agg, {"loss_vs_flops": "loss_vs_flops.png"})
  assert "# Comparison (test), 2 seeds" in md
  assert "| bliss | 3.4500 ± 0.6353 |" in md  # mean ± 12.706 · 0.05
  assert "-0.2000 [-0.2000, -0.2000]" in md  # bliss − random's, seed by seed
  assert "| bliss: loss lower than random's |" in md and "| holds |" in md
  assert "- `shared/salt/teacher`: 2.0 min, used by salt" in md
  assert "[seed_1](seed_1/report.md)" in md and "![loss_vs_flops](loss_vs_flops.png)" in md


def test_one_seed_gives_values_without_intervals():
  agg = across_seeds.aggregate(_reports()[:1], ["seed_0"])
  assert agg["methods"]["bliss"]["final_ci"]["loss"]["low"] is None
  assert all(c["verdict"] == "inconclusive" for c in agg["claims"])
  md = across_seeds.format_report(agg, {})
  assert "One seed" in md and "| bliss | 3.4000 |" in md


def test_report_md_shows_the_mean_selection_next_to_the_pool_and_the_stream():
  reports = _reports()
  pool = {"n": 40, "by_domain": {"a": 0.25, "b": 0.75}}
  for r in reports:
    r["pool_composition"], r["stream_composition"] = pool, dict(pool, n=80)
  agg = across_seeds.aggregate(reports, ["seed_0", "seed_1"])
  assert agg["methods"]["bliss"]["selection"]["by_domain"] == pytest.approx({"a": 0.8, "b": 0.2})  # (1 + .6) / 2
  assert agg["methods"]["random"]["selection"]["by_domain"] == pytest.approx({"a": 0.25, "b": 0.75})  # a: (.5 + 0)/2
  md = across_seeds.format_report(agg, {})
  assert "- bliss: a 0.800, b 0.200" in md
  assert "- candidate pool: a 0.250, b 0.750" in md and "- stream: a 0.250, b 0.750" in md
  assert "Stream and candidate pool have the same composition." in md


def test_report_md_opens_with_the_scope_and_shows_seed_0s_scored_documents():
  reports = _reports()
  entry = {"key": "d#0", "score": 1.5, "labels": {"domain": "a"}, "text": "some text"}
  for s, r in enumerate(reports):
    r["scope"] = "the machinery"
    r["methods"]["bliss"]["scored_documents"] = {"what": "the pool", "column": "c", "n": 10 + s, "top": [entry],
                                                 "bottom": [dict(entry, key=f"e#{s}")]}
  agg = across_seeds.aggregate(reports, ["seed_0", "seed_1"])
  assert agg["scored_documents"] == {"bliss": reports[0]["methods"]["bliss"]["scored_documents"]}
  md = across_seeds.format_report(agg, {})
  assert md.startswith("# Comparison (test), 2 seeds\n\n**What this run shows** (20 target steps per method, 2 seeds): "
                       "the machinery\n")
  assert "scored highest and lowest (seed 0's scores)" in md and "- bliss (the pool, 10 candidates, score `c`)" in md
  assert "`e#0`" in md and "`e#1`" not in md
  one = across_seeds.format_report(across_seeds.aggregate(reports[:1], ["seed_0"]), {})
  assert "1 seed): the machinery" in one and "seed 0's scores" not in one and "- bliss, lowest:" in one
