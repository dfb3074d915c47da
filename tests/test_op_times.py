"""bliss_jax.op_times: a jax.profiler trace's ops by self time, their HLO lines from a dump, and the table."""
import os
import subprocess
import sys
import textwrap

import pytest

from bliss_jax import op_times

_PROGRAM = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp
    def body(i, x):
      return jnp.tanh(x @ x)
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 4, body, x).sum())
    x = jnp.full((256, 256), 0.01)
    f(x).block_until_ready()
    t = time.perf_counter()
    with jax.profiler.trace(sys.argv[1]):
      for _ in range(3):
        f(x).block_until_ready()
    print(time.perf_counter() - t)
""")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
  """A fori_loop of 4 matmuls run 3 times under the profiler, in a process of its own with an HLO dump."""
  root = tmp_path_factory.mktemp("trace")
  env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={root / 'hlo'}", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROGRAM, str(root / "trace")], env=env, capture_output=True,
                       text=True, check=True)
  return str(root / "trace"), str(root / "hlo"), float(out.stdout.split()[-1])


def test_op_times_of_a_loop_program(traced):
  trace_dir, dump_dir, wall = traced
  times = op_times.op_times(trace_dir)
  step = [t for t in times if t.module == "jit__lambda"]
  assert step and all(t.seconds >= 0 for t in times)
  assert [t.seconds for t in times] == sorted((t.seconds for t in times), reverse=True)
  # self times: the loop's ops are not counted twice (once in the while, once in its body), so they fit in the wall
  assert 0 < sum(t.seconds for t in step) <= wall
  loop = [t for t in step if t.op.startswith("while")]
  body = sum(t.seconds for t in step if t.count == 12)  # the body's ops: 4 iterations x 3 calls
  assert len(loop) == 1 and body > 0 and loop[0].seconds < 0.5 * body  # its own time only (counted whole: > body)
  lines = op_times.hlo_instructions(dump_dir, "jit__lambda")
  assert any(line.startswith("f32[256,256]") and "dot_general" in line for line in lines.values())
  assert any("while" in line for line in lines.values())
  assert op_times.hlo_instructions(dump_dir, "no_such_module") == {}
  table = op_times.format_table(times, per=3, top=2, dump_dir=dump_dir)
  assert table.splitlines()[0].endswith(f"ms per step in {len(times)} ops (all)")


def test_format_table_by_hand():
  times = [op_times.OpTime("m", "fusion.1", 0.006, 4), op_times.OpTime("m", "dot.2", 0.003, 2),
           op_times.OpTime("m", "copy", 0.001, 2)]
  assert op_times.format_table(times, per=2, top=2).splitlines() == [
      "     5.00 ms per step in 3 ops (all)",
      "     3.00 ms  60.0% x2    fusion.1",
      "     1.50 ms  30.0% x1    dot.2",
      "     0.50 ms  10.0% in the other 1 ops"]
  assert op_times.format_table(times, per=2, top=0, kinds=1).splitlines()[-2:] == [
      "by kind of op:", "     3.00 ms  60.0%    1 ops  fusion"]
  graphs = op_times.format_table([op_times.OpTime("m", "command_buffer_1", 0.09, 594)], top=1).splitlines()
  assert graphs[-1].startswith("(command_buffer ops are CUDA graphs") and "command_buffer_1" in graphs[1]
  assert op_times.format_table([]) == "no op events in the trace"


def test_by_kind():
  times = [op_times.OpTime("m", "fusion.1", 0.002, 1), op_times.OpTime("n", "fusion.12", 0.002, 1),
           op_times.OpTime("m", "dot_product_attention_bwd.3", 0.003, 2), op_times.OpTime("m", "copy", 0.0005, 1)]
  assert op_times.by_kind(times) == [op_times.OpTime("*", "fusion", 0.004, 2),
                                     op_times.OpTime("m", "dot_product_attention_bwd", 0.003, 1),
                                     op_times.OpTime("m", "copy", 0.0005, 1)]


def test_not_a_trace_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a jax.profiler trace directory"):
    op_times.op_times(str(tmp_path))


def test_xla_dump_dir(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1 --xla_dump_to=/tmp/d --xla_bar")
  assert op_times.xla_dump_dir() == "/tmp/d"
  monkeypatch.delenv("XLA_FLAGS")
  assert op_times.xla_dump_dir() is None
