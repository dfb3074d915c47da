"""Two processes on localhost (jax.distributed, gloo CPU collectives) train together, agree with each other, and match
one process that sees the same global batch on the same 4-device (2 data x 2 model) mesh."""
import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_single_process_reference(tmp_path):
  port = _free_port()
  base_env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", TF_CPP_MIN_LOG_LEVEL="3",
                  JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    env = dict(base_env, BLISS_JAX_COORDINATOR=f"127.0.0.1:{port}", BLISS_JAX_NUM_PROCESSES="2",
               BLISS_JAX_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen([sys.executable, WORKER, str(tmp_path / f"p{pid}.json"), str(tmp_path / "multi")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  env = dict(base_env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  ref = subprocess.run([sys.executable, WORKER, str(tmp_path / "ref.json"), str(tmp_path / "single"), "--reference"],
                       env=env, capture_output=True, text=True, timeout=300)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert ref.returncode == 0, ref.stderr[-3000:]
  r0, r1, rr = (json.load(open(tmp_path / f)) for f in ("p0.json", "p1.json", "ref.json"))
  assert (r0["process_count"], r0["devices"], rr["process_count"], rr["devices"]) == (2, 4, 1, 4)
  assert r0["final_loss"] == r1["final_loss"] and r0["eval_loss"] == r1["eval_loss"]
  assert len(r0["losses"]) == 4
  for a, b in zip(r0["losses"], rr["losses"]):
    assert a == pytest.approx(b, rel=1e-5)
  assert r0["eval_loss"] == pytest.approx(rr["eval_loss"], rel=1e-5)
  assert os.path.isdir(tmp_path / "multi" / "checkpoints" / "4")


def test_two_process_offline_scoring_equals_one_process(tmp_path):
  """Each process scores its own shard of the split; together the store holds every example once, with the scores a
  single process computes (processes with fewer batches feed invalid rows until all are done)."""
  import numpy as np
  from bliss_jax.selection import score_store
  worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_scoring_worker.py")
  port = _free_port()
  base_env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", TF_CPP_MIN_LOG_LEVEL="3",
                  JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, worker, str(tmp_path / "multi")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(base_env, BLISS_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                     BLISS_JAX_NUM_PROCESSES="2", BLISS_JAX_PROCESS_ID=str(pid)))
           for pid in range(2)]
  ref = subprocess.run([sys.executable, worker, str(tmp_path / "single"), "--reference"], env=base_env,
                       capture_output=True, text=True, timeout=300)
  for p in procs:
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out[-3000:]
  assert ref.returncode == 0, ref.stderr[-3000:]
  multi = score_store.read_scores(str(tmp_path / "multi"))
  single = score_store.read_scores(str(tmp_path / "single"))
  assert sorted(multi.keys()) == sorted(single.keys()) and len(set(multi.keys())) == len(multi.keys())
  by_key = dict(zip(single.keys(), single.columns["mean_logp"]))
  np.testing.assert_allclose([by_key[k] for k in multi.keys()], multi.columns["mean_logp"], rtol=1e-5)
  assert {int(p.name.split("-")[1][1:]) for p in (tmp_path / "multi").glob("shard-*.npz")} == {0, 1}
