"""Test set-up: 4 simulated CPU devices for every test process (set before jax initialises), and
the uninterrupted tiny demo run that the crash and storage tests compare against."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def straight_workdir(tmp_path_factory):
  """The uninterrupted reference run of the tiny demo config (its workdir: copy it before
  changing anything), made once per test session."""
  from _helpers import cli  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('straight')
  cli(workdir)
  return workdir


@pytest.fixture(scope='session')
def straight(straight_workdir):
  from _helpers import load_results  # pylint: disable=g-import-not-at-top
  return load_results(straight_workdir)
