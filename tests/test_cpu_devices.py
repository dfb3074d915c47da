"""`cli.use_cpu_cores`: the opt-in split of the CPU into per-core XLA devices ($BLISS_JAX_CPU_DEVICES)."""
import os

import pytest

from bliss_jax import cli


def test_unset_changes_nothing():
  env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert cli.use_cpu_cores(env) is None
  assert env == {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}


def test_a_count_adds_the_flags_after_the_users():
  env = {cli.CPU_DEVICES_ENV_VAR: "2", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert cli.use_cpu_cores(env) == 2
  assert env["XLA_FLAGS"] == ("--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2 "
                              "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  env = {cli.CPU_DEVICES_ENV_VAR: "4"}
  cli.use_cpu_cores(env)
  assert env["XLA_FLAGS"].split()[0] == "--xla_force_host_platform_device_count=4"


def test_an_explicit_host_device_count_wins():
  env = {cli.CPU_DEVICES_ENV_VAR: "2", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert cli.use_cpu_cores(env) is None
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


def test_cores_is_a_power_of_two_within_the_affinity():
  n = cli.cpu_device_count("cores")
  cores = len(os.sched_getaffinity(0))
  assert n & (n - 1) == 0 and n <= cores < 2 * n


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_value_is_a_cli_error_naming_the_variable(value):
  with pytest.raises(cli.CliError, match=cli.CPU_DEVICES_ENV_VAR):
    cli.use_cpu_cores({cli.CPU_DEVICES_ENV_VAR: value})
