r"""Writes tests/golden/tiny_demo.json: the selected ids and test accuracies of every built-in
strategy on the tiny demo config (4 simulated CPU devices), and of two strategies on 1 device.

  python tests/golden/make_golden.py [--out tests/golden/tiny_demo.json] [--only badge,...]

One file per platform (jax version and CPU model): the golden test uses the one recorded on
the machine it runs on, the most specific where several match (``tiny_demo.json``: AMD EPYC,
extensions not recorded; ``tiny_demo.intel-xeon.json``: Intel Xeon, and
``tiny_demo.amd-epyc-avx512.json``: AMD EPYC with AVX-512, both recorded from the code before
the open-core refactor of issue 22, commit c836c9e). A platform is the jax
version, the CPU's model name and its vector extensions (``isa``: two Xeons of one name but
other extensions round differently, seen on CI).

The file pins results bit for bit across refactors (tests/test_experiment.py compares against
it). Run it only when a change is *meant* to change results, and say so in the commit; a new
strategy adds its own entry with ``--only NAME`` (the other entries are kept as they are).
"""

import argparse
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository's jaxdisp first

BUILTIN = ('dispersion', 'random', 'entropy', 'margin', 'least_confidence', 'bald', 'coreset',
           'badge')
ONE_DEVICE = ('dispersion', 'coreset')


def cases():
  """(name, strategy, overrides) of every pinned run."""
  out = []
  for s in BUILTIN:
    extra = {'model.dropout': 0.3} if s == 'bald' else {}
    out.append((s, s, extra))
  for s in ONE_DEVICE:
    out.append((f'{s}@1device', s, {'num_devices': 1}))
  return out


def platform_id() -> dict:
  import jax, jaxlib  # pylint: disable=g-import-not-at-top,multiple-imports
  cpu = ''
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
  except OSError:
    pass
  return {'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'machine': platform.machine(),
          'cpu': cpu, 'isa': isa()}


def isa() -> str:
  """The vector extensions XLA:CPU compiles for (AVX-512, AMX, ...): machines that share a
  model name ('Intel(R) Xeon(R) Processor') but not these round differently."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = next((l.split(':', 1)[1].split() for l in f if l.startswith('flags')), [])
  except OSError:
    flags = []
  return ' '.join(sorted(f for f in flags if f.startswith(('avx', 'amx', 'fma', 'sse4'))))


def recorded_here(recorded: dict) -> bool:
  """Whether a golden file's platform is this one (each field it names; files recorded before
  a field existed match on the others)."""
  here = platform_id()
  return all(here.get(k) == v for k, v in recorded.items())


def run_case(strategy, overrides, workdir) -> dict:
  try:
    from _helpers import tiny_config  # pylint: disable=g-import-not-at-top
  except ImportError:
    from test_experiment import tiny_config  # pylint: disable=g-import-not-at-top
  try:
    from jaxdisp.experiment import run  # pylint: disable=g-import-not-at-top
  except ImportError:
    from jaxdisp.main import run_experiment as run  # pylint: disable=g-import-not-at-top
  run(tiny_config(strategy=strategy, **overrides), workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    res = json.load(f)
  return summarize(res)


def summarize(res: dict) -> dict:
  return {'selected': [r['selected'] for r in res['rounds']],
          'test_accuracy': [r['test_accuracy'] for r in res['rounds']]}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', default=os.path.join(HERE, 'tiny_demo.json'))
  p.add_argument('--only', default='', help='comma-separated case names to (re)make; the '
                 "file's other entries are kept (it must be from this platform)")
  args = p.parse_args()
  doc = {'platform': platform_id(), 'runs': {}}
  only = [n for n in args.only.split(',') if n]
  if only:
    with open(args.out) as f:
      doc = json.load(f)
    if not recorded_here(doc['platform']):
      raise SystemExit(f'{args.out} was made on {doc["platform"]}, not here: remake it whole')
  for name, strategy, overrides in cases():
    if only and name not in only:
      continue
    with tempfile.TemporaryDirectory() as d:
      doc['runs'][name] = run_case(strategy, overrides, d)
    print(name, doc['runs'][name]['test_accuracy'], flush=True)
  with open(args.out, 'w') as f:
    json.dump(doc, f, indent=1)
    f.write('\n')


if __name__ == '__main__':
  main()
