"""Golden results, recorded before the strategy plug-in redesign (issue "Open core"): every
built-in strategy's selected ids and test accuracies on the tiny demo config (4 devices), and two
strategies on 1 device, must stay identical bit for bit (same machine and jax version)."""

import json
import os
import sys
import tempfile

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')
sys.path.insert(0, HERE)
import make_golden  # pylint: disable=g-import-not-at-top,wrong-import-position

with open(os.path.join(HERE, 'tiny_demo.json')) as f:
  GOLDEN = json.load(f)


@pytest.mark.parametrize('name, strategy, overrides', make_golden.cases())
def test_golden_results_are_unchanged_bit_for_bit(name, strategy, overrides):
  if GOLDEN['platform'] != make_golden.platform_id():
    pytest.skip('golden results were recorded on another machine or jax version')
  with tempfile.TemporaryDirectory() as d:
    assert make_golden.run_case(strategy, overrides, d) == GOLDEN['runs'][name]
