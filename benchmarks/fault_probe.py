r"""The bad-input and fault cases of issue 23, rerun: each one's exit status and the line it prints.

  python benchmarks/fault_probe.py            # every case (a few minutes on 2 CPU cores)
  python benchmarks/fault_probe.py --only seed,tuple

Each case is the real command in a fresh process on the tiny demo config (``tests/_helpers.py``'s
``TINY``), in a scratch folder: the answer a user gets. Recorded per case: the exit status, the
line that answers it (the ``error:`` line, else the ``warning:`` or ``stopped`` line, else the
last line of output), whether a Python traceback appeared, and the seconds from a signal to the
exit where one is sent. Faults the machine cannot make on demand (a full disk, a file-size limit,
a read-only mount) are injected by the test suite's ``sitecustomize`` (``SHIM`` in
``tests/test_storage_and_signals.py``), which raises the real ``OSError`` where the operating
system would. The tests assert each answer; this script shows them side by side. Writes
``<out>/fault_probe.json`` and prints a table (Markdown with ``--markdown``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from _common import REPO, machine_info, parser, write_json

sys.path.insert(0, os.path.join(REPO, 'tests'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from _helpers import TINY, Running, strategy_config
from test_storage_and_signals import _SLEEPY, SHIM
# pylint: enable=g-import-not-at-top,wrong-import-position

PY = sys.executable
DEMO = os.path.join(REPO, 'configs', 'demo.py')
QUICK = [f'--config.{k}={v}' for k, v in {**TINY, 'train.epochs': 2, 'al.rounds': 1}.items()]
CLASSES = ('1', '2', '3')


class Probe:
  """A scratch folder and the commands of the cases."""

  def __init__(self, root: str):
    self.root = root
    shim = os.path.join(root, 'shim')
    os.makedirs(shim, exist_ok=True)
    with open(os.path.join(shim, 'sitecustomize.py'), 'w') as f:
      f.write(SHIM)
    self.shim_path = shim

  def path(self, *parts) -> str:
    return os.path.join(self.root, *parts)

  def env(self, **variables) -> dict:
    out = {**os.environ, 'PYTHONPATH': os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')])}
    if variables:
      out['PYTHONPATH'] = os.pathsep.join([self.shim_path, out['PYTHONPATH']])
      out.update({k: str(v) for k, v in variables.items()})
    return out

  def run(self, args, env=None, cwd=REPO) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env or self.env(), capture_output=True, timeout=900)
    out = {'status': proc.returncode, 'seconds': time.perf_counter() - t0}
    return {**out, **answer(proc.stdout.decode(errors='replace'),
                            proc.stderr.decode(errors='replace'))}

  def main(self, workdir, *extra, config=DEMO, env=None) -> dict:
    return self.run([PY, '-m', 'jaxdisp.main', '--config', config, '--workdir', workdir, *QUICK,
                     *extra], env=env)


def answer(stdout: str, stderr: str) -> dict:
  lines = [l for l in stderr.splitlines() if l.strip()]
  picked = ([l for l in lines if l.startswith('error:')] or
            [l for l in lines if l.startswith(('warning:', 'stopped'))] or
            [l for l in stdout.splitlines() if l.strip()][:1] or lines[-1:] or [''])
  return {'line': picked[0], 'error_lines': sum(l.startswith('error:') for l in lines),
          'traceback': 'Traceback' in stderr}


# ---- the cases ------------------------------------------------------------------------------

def digit_run(p: Probe) -> tuple[str, list]:
  """A files-oracle run on image folders named 1/ 2/ 3/, waiting for its 15 round-0 labels."""
  import csv  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, n in (('train', 10), ('test', 2)):
    for c in CLASSES:
      os.makedirs(p.path('ds', split, c), exist_ok=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            p.path('ds', split, c, f'{i}.png'))
  workdir = p.path('digits')
  r = p.run([PY, '-m', 'jaxdisp.main', '--config', DEMO, '--workdir', workdir,
             '--config.strategy=random', '--config.dataset.source=folder',
             f'--config.dataset.root={p.path("ds")}', f'--config.dataset.cache_dir={p.path("c")}',
             '--config.dataset.num_classes=0', '--config.dataset.image_size=8',
             '--config.model.width=4', '--config.train.epochs=1', '--config.train.batch_size=8',
             '--config.train.eval_batch_size=8', '--config.al.initial_size=9',
             '--config.al.budget=15', '--config.al.rounds=1', '--config.oracle.kind=files'])
  assert r['status'] == 0, r
  with open(os.path.join(workdir, 'queries', 'round_0.csv')) as f:
    queries = [(int(q['id']), q['file'].split('/')[1]) for q in csv.DictReader(f)]
  return workdir, queries


def label(p: Probe, *args, env=None) -> dict:
  return p.run([PY, '-m', 'jaxdisp.label', *args], env=env)


def answers_file(p: Probe, name: str, rows) -> str:
  path = p.path(name)
  with open(path, 'w') as f:
    f.write('id,label\n' + ''.join(f'{i},{a}\n' for i, a in rows))
  return path


def ledger_cases(p: Probe) -> dict:
  workdir, queries = digit_run(p)
  by_index = answers_file(p, 'index.csv', [(i, CLASSES.index(c)) for i, c in queries])
  out = {'digit class names, answers by index': label(p, 'import', '--workdir', workdir,
                                                      '--file', by_index)}
  out['the same with --by index'] = label(p, 'import', '--workdir', workdir, '--file', by_index,
                                          '--by', 'index')
  with open(os.path.join(workdir, 'labels.jsonl'), 'ab') as f:  # a crash mid-append
    f.write(json.dumps({'id': queries[0][0], 'label': 0, 'class': '1'}).encode()[:-9])
  out['torn ledger tail, then re-import'] = label(p, 'import', '--workdir', workdir, '--file',
                                                  by_index, '--by', 'index')
  empty = p.path('notarun')
  os.makedirs(empty)
  out['export in a folder that is not a workdir'] = label(p, 'export', '--workdir', empty)
  sim = p.path('simulated')
  p.main(sim)
  out['import into an oracle.kind=simulated run'] = label(p, 'import', '--workdir', sim,
                                                          '--file', by_index)
  broken = p.path('broken')
  shutil.copytree(workdir, broken)
  with open(os.path.join(broken, 'results.json'), 'r+') as f:
    text = f.read()
    f.seek(0)
    f.truncate()
    f.write(text[:len(text) // 2])
  out['corrupt results.json (import)'] = label(p, 'import', '--workdir', broken, '--file',
                                               by_index)
  return out


BROKEN = {  # case -> the strategy's body (a score or select that breaks the contract)
    'score: wrong length': "outputs=('probs',), score=lambda view: view.outputs['probs'][:7, 0]",
    'score: 2-D': "outputs=('probs',), score=lambda view: view.outputs['probs']",
    'score: 0-d': "score=lambda view: jnp.float32(1.0)",
    'score: boolean': "outputs=('probs',), score=lambda view: view.outputs['probs'][:, 0] > 0.1",
    'score: a Python list': "score=lambda view: [0.0] * 8",
    'score: raises': "score=lambda view: 1 / 0",
    'select: a padding position': "select=lambda view, budget: (jnp.arange(budget) + "
                                  "view.pool.shape[0] - budget, jnp.zeros(budget))",
    'select: floats': "select=lambda view, budget: (jnp.arange(budget) * 1.0, jnp.zeros(budget))",
    'select: one position budget times': "select=lambda view, budget: (jnp.full(budget, 3), "
                                         "jnp.zeros(budget))",
    'select: budget/2 positions': "select=lambda view, budget: (jnp.arange(budget // 2), "
                                  "jnp.zeros(budget // 2))",
    'select: 2 x budget positions': "select=lambda view, budget: (jnp.arange(2 * budget), "
                                    "jnp.zeros(2 * budget))",
    'select: negative positions': "select=lambda view, budget: (jnp.arange(budget) - 1, "
                                  "jnp.zeros(budget))",
}


def contract_cases(p: Probe) -> dict:
  out = {}
  for i, (case, body) in enumerate(BROKEN.items()):
    config = strategy_config(p.path(f'broken{i}.py'), 'broken', 'strategies.register('
                             f"strategies.Strategy(name='broken', summary='-', {body}))")
    out[case] = p.main(p.path(f'contract{i}'), config=config)
  over = strategy_config(p.path('over.py'), 'random', "strategies.register(strategies.Strategy("
                         "name='random', summary='-', score=lambda view: view.outputs['x']))")
  out['register over a built-in'] = p.main(p.path('over'), config=over)
  unknown = strategy_config(p.path('unknown.py'), 'mine', "strategies.register(strategies."
                            "Strategy(name='mine', summary='-', outputs=('nope',), "
                            "score=lambda view: view.outputs['nope']))")
  out['a strategy asking for an unknown output'] = p.main(p.path('unknown'), config=unknown)
  return out


def storage_cases(p: Probe) -> dict:
  out = {'ENOSPC during a checkpoint': p.main(
      p.path('enospc'), env=p.env(FAIL_SAVE_AT=2, FAIL_ERRNO=errno.ENOSPC))}  # the run's 2nd save
  out['  ... the rerun with room'] = p.main(p.path('enospc'))
  out['EFBIG during an output write (diagnostics)'] = p.main(
      p.path('efbig'), env=p.env(FAIL_WRITE=r'/diagnostics/\.round_0\.npz\.',
                                 FAIL_ERRNO=errno.EFBIG))
  out['  ... the rerun'] = p.main(p.path('efbig'))
  finished = p.path('efbig')
  ro = p.env(READONLY=finished, READONLY_ERRNO=errno.EROFS)
  out['read-only finished workdir: rerun'] = p.main(finished, env=ro)
  runs = p.path('finished_runs')  # a folder of finished runs, read-only too
  shutil.copytree(finished, os.path.join(runs, 'dispersion-seed0'))
  out['read-only finished runs: report'] = p.run(
      [PY, '-m', 'jaxdisp.report', runs], env=p.env(READONLY=runs, READONLY_ERRNO=errno.EROFS))
  out['read-only finished workdir: label export'] = label(p, 'export', '--workdir', finished,
                                                          env=ro)
  bad = os.fsencode(p.path('bad')) + b'\xffdir'
  out['a workdir path that is not UTF-8'] = p.run(
      [PY, '-m', 'jaxdisp.main', '--config', DEMO, '--workdir', bad, *QUICK])
  return out


def signal_cases(p: Probe) -> dict:
  config = strategy_config(p.path('sleepy.py'), 'sleepy', _SLEEPY)
  run = Running(['--config', config, '--workdir', p.path('sleepy'), *QUICK],
                env={**p.env(), 'JAXDISP_STOP_GRACE_SECONDS': '120'})
  run.wait_for('scoring: sleeping')
  run.proc.send_signal(signal.SIGINT)
  time.sleep(1.0)
  code, waited = run.finish(signal.SIGINT)
  out = {'a second Ctrl-C': {'status': code, 'seconds': waited,
                             **answer('', run.text), 'line': run.last_line}}
  run = Running(['--config', DEMO, '--workdir', p.path('vaal'), *QUICK, '--config.strategy=vaal',
                 '--config.vaal.width=4', '--config.vaal.batch_size=16',
                 '--config.vaal.epochs=500', '--config.log.progress_seconds=1'], env=p.env())
  run.wait_for("VAAL's VAE + discriminator training: step")
  code, waited = run.finish(signal.SIGTERM)
  out["SIGTERM during VAAL's training step"] = {'status': code, 'seconds': waited,
                                                **answer('', run.text), 'line': run.last_line}
  return out


def config_cases(p: Probe) -> dict:
  out = {'a string inside a tuple key (main)': p.main(p.path('t'),
                                                      "--config.train.lr_milestones=('a',1)")}
  out['a string inside a tuple key (sweep)'] = p.run(
      [PY, '-m', 'jaxdisp.sweep', '--config', DEMO, '--strategies', 'random', '--seeds', '0',
       '--workdir', p.path('sw'), '--set', "train.lr_milestones=('a',1)"])
  with open(p.path('tuple_cfg.py'), 'w') as f:
    f.write(f'from jaxdisp import cli\n\ndef get_config():\n  c = cli.load_config({DEMO!r})\n'
            "  c.train.lr_milestones = ('a', 1)\n  return c\n")
  out['a string inside a tuple key (config file)'] = p.main(p.path('t2'),
                                                           config=p.path('tuple_cfg.py'))
  out['a seed too large for int64'] = p.main(p.path('s1'), '--config.seed=99999999999999999999')
  out['a negative seed with oracle noise'] = p.main(p.path('s2'), '--config.seed=-1',
                                                   '--config.oracle.noise=0.2')
  out['16-bit PNG in a folder dataset'] = png16(p)
  outfile = p.path('outfile')
  open(outfile, 'w').close()
  out['report --out pointing at a file'] = p.run([PY, '-m', 'jaxdisp.report', p.path('sw'),
                                                  '--out', outfile])
  return out


def png16(p: Probe) -> dict:
  """A 16-bit grayscale gradient: the fraction of its pixels loaded as white (255)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxdisp.data import folder  # pylint: disable=g-import-not-at-top
  path = p.path('gradient16.png')
  Image.fromarray(np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))).save(path)
  t0 = time.perf_counter()
  img = folder._decode(path)  # pylint: disable=protected-access  (a folder dataset's reader)
  white = float((img >= 255).mean())
  return {'status': 0, 'seconds': time.perf_counter() - t0, 'error_lines': 0, 'traceback': False,
          'line': f'loaded, not refused: {100 * white:.1f}% of a 0..65535 gradient\'s pixels are '
                  f'white (1 column of 32 = 3.1%: scaled, not clipped)'}


GROUPS = {'ledger': ledger_cases, 'contract': contract_cases, 'storage': storage_cases,
          'signals': signal_cases, 'config': config_cases}


def main(argv=None):
  p = parser(__doc__)
  p.add_argument('--only', default='', help='comma-separated groups: ' + ','.join(GROUPS))
  p.add_argument('--markdown', action='store_true', help='print the table as Markdown')
  args = p.parse_args(argv)
  groups = args.only.split(',') if args.only else list(GROUPS)
  root = tempfile.mkdtemp(prefix='jaxdisp-probe-')
  probe, cases = Probe(root), []
  try:
    for g in groups:
      for case, r in GROUPS[g](probe).items():
        cases.append({'group': g, 'case': case, **r,
                      'line': r['line'].replace(root, '<tmp>')})
        print(f"{g:8s} {case}: exit {r['status']}", flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  result = {'benchmark': 'fault_probe', 'quick': False, 'machine': machine_info(),
            'cases': cases, 'headline': {
                'cases': len(cases), 'tracebacks': sum(c['traceback'] for c in cases),
                'more_than_one_error_line': sum(c['error_lines'] > 1 for c in cases)}}
  path = write_json(args.out, 'fault_probe', False, result)
  sep = ' | ' if args.markdown else '  '
  if args.markdown:
    print('\n| case | exit | traceback | the line printed |\n|---|---:|---|---|')
  for c in cases:
    line = c['line'] + (f" ({c['seconds']:.1f} s after the signal)" if c['group'] == 'signals'
                        else '')
    cells = [c['case'], str(c['status']), 'yes' if c['traceback'] else 'no',
             line.replace('|', '\\|') if args.markdown else line]
    print(('| ' + sep.join(cells) + ' |') if args.markdown else sep.join(cells))
  print(f'\n{path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
