"""Runs a PyTorch / transformers script in a subprocess, for the tests that compare with Hugging Face.

Loading transformers' modeling code (torch._dynamo, with its own LLVM) into a process that has already imported
TensorFlow (seqio does) aborts it with "LLVM ERROR: inconsistency in registered CommandLine options";
lm-evaluation-harness runs in its own process, as these scripts do.
"""
import json
import os
import subprocess
import sys


def run_job(script: str, job: dict, work) -> dict:
  """Writes `job` to `work`/job.json, runs `script` with its path as argv[1] (one thread), and returns the JSON the
  script wrote to `job["result"]`; a failing script fails the test with its stderr."""
  path = os.path.join(str(work), "job.json")
  with open(path, "w") as f:
    json.dump(job, f)
  env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, env=env, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(job["result"]) as f:
    return json.load(f)
