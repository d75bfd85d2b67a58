"""jaxdisp.report on synthetic results.json / diagnostics files (every number checked by hand),
and one small end-to-end jaxdisp.sweep (2 strategies x 1 seed of the tiny config)."""

import json
import math
import os
import re

import numpy as np
import pytest

from jaxdisp import report, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = (100, 200, 300)


def write_run(workdir, strategy, seed, accuracies, counts=COUNTS, name=None, **config):
  """A results.json as jaxdisp.main writes it (accuracies are fractions, one per round)."""
  cfg = {'seed': seed, 'strategy': strategy,
         'dataset': {'name': 'synthetic', 'source': 'synthetic'},
         'model': {'name': 'small_cnn', 'width': 8, 'dropout': 0.0},
         'train': {'epochs': 10, 'lr_milestones': [0.6, 0.8]},
         'al': {'initial_size': 100, 'budget': 100, 'rounds': 2, 'pool_subset': 0}}
  for key, value in config.items():
    group, leaf = key.split('__')
    cfg[group][leaf] = value
  doc = {'config': cfg, 'dataset': {'name': 'synthetic'},
         'rounds': [{'round': r, 'num_labeled': n, 'test_accuracy': a, 'selected': [],
                     'seconds': {'train': 1.0, 'score': 0.0, 'select': 0.0}}
                    for r, (n, a) in enumerate(zip(counts, accuracies))]}
  run_dir = os.path.join(workdir, name or f'{strategy}-seed{seed}')
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'results.json'), 'w') as f:
    json.dump(doc, f)
  return run_dir


def write_diag(run_dir, round_, ids, dispersion, margin, entropy, correct, bald=None):
  arrays = dict(ids=np.asarray(ids, np.int64), dispersion=np.asarray(dispersion, np.float32),
                margin=np.asarray(margin, np.float32), entropy=np.asarray(entropy, np.float32),
                correct=np.asarray(correct, bool))
  if bald is not None:
    arrays['bald'] = np.asarray(bald, np.float32)
  os.makedirs(os.path.join(run_dir, 'diagnostics'), exist_ok=True)
  np.savez(os.path.join(run_dir, 'diagnostics', f'round_{round_}.npz'), **arrays)


def md_table(text, first_header):
  """Rows (lists of stripped cells) of the markdown table whose header starts ``first_header``."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(f'| {first_header} |'))
  rows = []
  for line in lines[start:]:
    if not line.startswith('|'):
      break
    rows.append([c.strip() for c in line.strip().strip('|').split('|')])
  return rows[0], rows[2:]  # header, body (without the |---| line)


def hand_mean_std(values):
  """Mean and population std (ddof=0), in plain Python."""
  mean = sum(values) / len(values)
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


# Test accuracy in % per seed: {strategy: {seed: [acc at 100, 200, 300 (, 400)]}}.
ACC = {
    'random': {0: [40, 50, 60], 1: [42, 53, 61], 2: [44, 50, 65]},  # final mean 62
    'dispersion': {0: [43, 56, 71], 1: [44, 57, 68], 2: [45, 58, 68]},  # 44, 57, 69
    'entropy': {0: [41, 55, 60], 1: [43, 57]},  # seed 1 stopped after 2 rounds; never reaches 62
    'margin': {0: [63, 64, 66]},  # above 62 at its first point
    'least_confidence': {0: [55, 65, 60]},  # first crossing between 100 and 200
    'coreset': {0: [61, 59, 63]},  # dips, then crosses between 200 and 300
    'bald': {0: [40, 50, 60, 64]},  # 400 labels: crosses after random's final count
}


@pytest.fixture
def sweep_dir(tmp_path):
  for strategy, seeds in ACC.items():
    for seed, accs in seeds.items():
      write_run(tmp_path, strategy, seed, [a / 100 for a in accs],
                counts=(100, 200, 300, 400)[:len(accs)])
  return tmp_path


def test_accuracy_table_matches_hand_computation(sweep_dir):
  path = report.write_report(str(sweep_dir))
  assert path == str(sweep_dir / 'report' / 'report.md')
  text = open(path).read()
  assert 'population standard deviation' in text and 'ddof=0' in text
  header, body = md_table(text, 'labels')
  order = ['dispersion', 'random', 'entropy', 'margin', 'least_confidence', 'bald', 'coreset']
  assert header == ['labels'] + [f'{s} ({len(ACC[s])} seed{"s" * (len(ACC[s]) > 1)})'
                                 for s in order]
  assert [row[0] for row in body] == ['100', '200', '300', '400']
  for r, row in enumerate(body):
    for s, cell in zip(order, row[1:]):
      values = [accs[r] for accs in ACC[s].values() if len(accs) > r]
      if not values:
        assert cell == '-'
        continue
      mean, std = hand_mean_std(values)
      expected = f'{mean:.2f} ± {std:.2f}'
      if len(values) < len(ACC[s]):
        expected += f' (n={len(values)})'
      assert cell == expected, (s, r)
  # A few cells written out, to pin the hand computation itself.
  cells = {(row[0], s): c for row in body for s, c in zip(order, row[1:])}
  assert cells['100', 'random'] == '42.00 ± 1.63'  # sqrt((4 + 0 + 4) / 3) = 1.633
  assert cells['200', 'random'] == '51.00 ± 1.41'  # sqrt((1 + 4 + 1) / 3) = 1.414
  assert cells['300', 'random'] == '62.00 ± 2.16'  # sqrt((4 + 1 + 9) / 3) = 2.160
  assert cells['300', 'dispersion'] == '69.00 ± 1.41'  # sqrt((4 + 1 + 1) / 3)
  assert cells['300', 'entropy'] == '60.00 ± 0.00 (n=1)'
  assert cells['200', 'entropy'] == '56.00 ± 1.00'
  assert cells['400', 'random'] == '-' and cells['400', 'bald'] == '64.00 ± 0.00'
  png = sweep_dir / 'report' / 'learning_curves.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
  assert sorted(os.listdir(sweep_dir / 'report')) == ['learning_curves.png', 'report.md']


def test_labels_saved_interpolates_the_mean_curve(sweep_dir):
  text = open(report.write_report(str(sweep_dir))).read()
  assert "random's final mean accuracy, 62.00% at 300 labels" in text
  assert 'interpolated linearly' in text
  _, body = md_table(text, 'strategy')
  got = {row[0]: row[1:] for row in body}
  assert 'random' not in got
  # dispersion: means 44, 57, 69 -> 200 + (62 - 57) / (69 - 57) * 100 = 241.67; 300 - 241.67
  assert got['dispersion'] == ['241.67', '58.33 (19.44% of 300)']
  # margin is at 63 >= 62 at its first point (100 labels)
  assert got['margin'] == ['100.00', '200.00 (66.67% of 300)']
  # least_confidence 55, 65, 60: first crossing 100 + (62 - 55) / (65 - 55) * 100 = 170
  assert got['least_confidence'] == ['170.00', '130.00 (43.33% of 300)']
  # coreset 61, 59, 63: 200 + (62 - 59) / (63 - 59) * 100 = 275
  assert got['coreset'] == ['275.00', '25.00 (8.33% of 300)']
  # bald 40, 50, 60, 64: 300 + (62 - 60) / (64 - 60) * 100 = 350: more labels than random
  assert got['bald'] == ['350.00', '-50.00 (-16.67% of 300)']
  # entropy: means 42, 56, 60 (n=1): never reaches 62
  assert got['entropy'] == ['-', "never reaches random's final accuracy (best 60.00%)"]
  assert "Random's own mean curve" not in text  # random is monotonic here


def test_labels_saved_notes_a_non_monotonic_random_and_missing_random(tmp_path):
  write_run(tmp_path, 'random', 0, [0.50, 0.60, 0.55])
  write_run(tmp_path, 'dispersion', 0, [0.50, 0.54, 0.58])
  text = open(report.write_report(str(tmp_path))).read()
  # random reaches 55 between 100 (50) and 200 (60): 150 labels
  assert "Random's own mean curve already reaches this accuracy at 150.00 labels" in text
  # dispersion 50, 54, 58: 200 + (55 - 54) / (58 - 54) * 100 = 225
  assert '| dispersion | 225.00 | 75.00 (25.00% of 300) |' in text
  assert report.labels_to_reach([100, 200], [50.0, 60.0], 60.0) == 200.0
  assert report.labels_to_reach([100, 200], [50.0, 60.0], 60.5) is None
  other = tmp_path / 'other'
  write_run(other, 'dispersion', 0, [0.5, 0.6, 0.7])
  assert 'No `random` runs: skipped.' in open(report.write_report(str(other))).read()


def reference_top_k(ids, score, correct, percent, highest):
  """Independent of report.py: Python's sorted() (stable) on (score, id), NaN last."""
  size = len(ids)
  k = max(1, math.ceil(percent * size / 100 - 1e-9))
  def key(i):
    s = float(score[i])
    return (math.isnan(s), -s if highest else s, int(ids[i]))
  top = sorted(range(size), key=key)[:k]
  return 100.0 * sum(bool(correct[i]) for i in top) / k


def test_diagnostics_top_k_accuracy_matches_hand_computation(sweep_dir):
  n = 20  # k = ceil(0.2) = 1 (top 1%), ceil(1.0) = 1 (5%), 2 (10%)
  # dispersion-seed0, round 0: ids stored in descending order, so a tie broken by file order
  # would differ from the documented tie-break (ascending dataset id).
  ids = np.arange(n)[::-1]
  by_id = lambda d, default: [d.get(int(i), default) for i in ids]
  write_diag(sweep_dir / 'dispersion-seed0', 0, ids,
             dispersion=by_id({5: 0.9, 3: 0.9, 7: 0.5}, 0.1),
             margin=by_id({10: 0.01, 11: 0.01}, 0.5),
             entropy=by_id({0: 2.0}, 0.1),
             correct=[int(i) not in (3, 11, 12, 13) for i in ids])
  # dispersion-seed1, round 0: ids ascending; everything but dispersion tied.
  ids1 = np.arange(n)
  write_diag(sweep_dir / 'dispersion-seed1', 0, ids1,
             dispersion=[1.0 if i == 2 else 0.0 for i in ids1], margin=np.full(n, 0.3),
             entropy=np.ones(n), correct=[i not in (2, 4, 6, 8) for i in ids1])
  # random-seed0, round 0: no prediction history (dispersion NaN), with BALD.
  write_diag(sweep_dir / 'random-seed0', 0, ids1, dispersion=np.full(n, np.nan),
             margin=np.full(n, 0.2), entropy=np.full(n, 0.5),
             bald=[0.8 if i == 9 else 0.1 for i in ids1], correct=[i not in (0, 9) for i in ids1])
  # dispersion-seed0, round 1: 150 random samples with many ties, against the reference;
  # k = ceil(1.5) = 2, ceil(7.5) = 8, ceil(15) = 15.
  rng = np.random.default_rng(0)
  big = dict(ids=rng.permutation(1000)[:150], dispersion=rng.integers(0, 11, 150) / 10,
             margin=rng.random(150).round(2), entropy=rng.random(150),
             correct=rng.random(150) < 0.6)
  write_diag(sweep_dir / 'dispersion-seed0', 1, **big)
  # dispersion-seed1, round 1: a broken file (no 'correct'): skipped and named in the report.
  np.savez(sweep_dir / 'dispersion-seed1' / 'diagnostics' / 'round_1.npz', ids=ids1,
           dispersion=np.zeros(n), margin=np.zeros(n), entropy=np.zeros(n))

  text = open(report.write_report(str(sweep_dir))).read()
  _, body = md_table(text, 'strategy | round')
  rows = {(r[0], int(r[1]), r[2]): r[3:] for r in body}
  # By hand. seed0 r0: dispersion top ids 3 (wrong), 5 -> 0 / 0 / 50; margin 10 (right), 11
  # (wrong) -> 100 / 100 / 50; entropy 0 (right), then the lowest tied id 1 -> 100 / 100 / 100;
  # pool 16 / 20 = 80. seed1 r0: dispersion id 2 (wrong), then id 0 -> 0 / 0 / 50; margin and
  # entropy tied: ids 0, 1 (right) -> 100s; pool 80. Averages of the two runs:
  assert rows['dispersion', 0, 'dispersion (highest)'] == ['0.00', '0.00', '50.00', '80.00', '2']
  assert rows['dispersion', 0, 'margin (lowest)'] == ['100.00', '100.00', '75.00', '80.00', '2']
  assert rows['dispersion', 0, 'entropy (highest)'] == ['100.00', '100.00', '100.00', '80.00',
                                                        '2']
  # random r0: no dispersion row; margin/entropy all tied: ids 0 (wrong), 1 -> 0 / 0 / 50; BALD
  # id 9 (wrong), then the lowest tied id 0 (wrong) -> 0 / 0 / 0; pool 18 / 20 = 90.
  assert ('random', 0, 'dispersion (highest)') not in rows
  assert rows['random', 0, 'margin (lowest)'] == ['0.00', '0.00', '50.00', '90.00', '1']
  assert rows['random', 0, 'entropy (highest)'] == ['0.00', '0.00', '50.00', '90.00', '1']
  assert rows['random', 0, 'BALD (highest)'] == ['0.00', '0.00', '0.00', '90.00', '1']
  assert not any(k[0] == 'entropy' for k in rows)  # entropy runs have no diagnostics
  for score, column, highest in (('dispersion (highest)', 'dispersion', True),
                                 ('margin (lowest)', 'margin', False),
                                 ('entropy (highest)', 'entropy', True)):
    expected = [f'{reference_top_k(big["ids"], big[column], big["correct"], p, highest):.2f}'
                for p in (1, 5, 10)]
    pool = f'{100 * big["correct"].mean():.2f}'
    assert rows['dispersion', 1, score] == expected + [pool, '1'], score
  assert [report.top_k(p, 150) for p in (1, 5, 10)] == [2, 8, 15]
  assert [report.top_k(p, 20) for p in (1, 5, 10)] == [1, 1, 2]
  assert 'dispersion-seed1/diagnostics/round_1.npz' in text and 'correct' in text
  assert 'ties broken by ascending dataset id' in text
  out = sweep_dir / 'report'
  assert sorted(os.listdir(out)) == ['dispersion_hist_dispersion.png', 'learning_curves.png',
                                     'report.md']
  assert (out / 'dispersion_hist_dispersion.png').stat().st_size > 5000
  assert '(dispersion_hist_dispersion.png)' in text


def test_report_without_diagnostics_says_so(sweep_dir):
  text = open(report.write_report(str(sweep_dir), str(sweep_dir / 'elsewhere'))).read()
  assert 'No pool diagnostics' in text and 'skipped' in text
  assert not os.path.exists(sweep_dir / 'report')


def test_report_warns_when_runs_use_different_protocols(tmp_path):
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'dispersion', 0, [0.5, 0.6, 0.7], train__epochs=20)
  text = open(report.write_report(str(tmp_path))).read()
  assert re.search(r'\*\*Warning\*\*: .*train\.epochs', text)
  assert 'model.' not in text.split('## Test accuracy')[0]


def test_report_refuses_runs_of_different_models_unless_told(tmp_path, capsys):
  """One table, one network: dropout for BALD only is refused in one line naming the keys."""
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'random', 1, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'bald', 0, [0.5, 0.6, 0.7], model__dropout=0.3,
            model__dropout_layers='network')
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['error: the runs use different models (model.dropout: 0.0 (random-seed0, '
                 'random-seed1), 0.3 (bald-seed0); model.dropout_layers: "head" (random-seed0, '
                 'random-seed1), "network" (bald-seed0)): every strategy of one table needs the '
                 'same model.* keys; rerun them with the same keys, or pass '
                 '--allow-mixed-models']
  assert not os.path.exists(tmp_path / 'report')
  assert report.main([str(tmp_path), '--allow-mixed-models']) == 0
  text = (tmp_path / 'report' / 'report.md').read_text()
  assert re.search(r'\*\*Warning\*\*: .*model\.dropout, model\.dropout_layers', text)


def test_report_counts_model_keys_a_run_lacks_as_their_defaults(tmp_path):
  """Runs made before model.dropout_layers existed are the 'head' models they were; new
  strategies take their place in the registry's order."""
  write_run(tmp_path, 'badge', 0, [0.5, 0.6, 0.7], model__dropout=0.3)
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7], model__dropout=0.3)
  write_run(tmp_path, 'bald', 0, [0.5, 0.6, 0.7], model__dropout=0.3,
            model__dropout_layers='head')
  text = open(report.write_report(str(tmp_path))).read()
  assert 'Warning' not in text
  assert md_table(text, 'labels')[0] == ['labels', 'random (1 seed)', 'bald (1 seed)',
                                         'badge (1 seed)']


def test_report_cli_errors_are_one_line(tmp_path, capsys):
  assert report.main([str(tmp_path / 'missing')]) == 2
  assert capsys.readouterr().err.strip() == f'error: {tmp_path / "missing"} is not a folder'
  assert report.main([str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip().startswith('error: no ')
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7])
  write_run(tmp_path, 'random', 0, [0.5, 0.6, 0.7], name='copy')
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'both strategy=random seed=0' in err[0]
  os.makedirs(tmp_path / 'broken')
  (tmp_path / 'copy' / 'results.json').write_text('{"config": ')
  assert report.main([str(tmp_path)]) == 2
  assert 'cannot read' in capsys.readouterr().err
  (tmp_path / 'copy' / 'results.json').unlink()
  os.makedirs(tmp_path / 'r')
  (tmp_path / 'r' / '.report.md.abc123.tmp').write_text('left by a killed report')
  assert report.main([str(tmp_path), '--out', str(tmp_path / 'r')]) == 0
  assert sorted(os.listdir(tmp_path / 'r')) == ['learning_curves.png', 'report.md']
  assert report.main([str(tmp_path / 'random-seed0')]) == 2
  assert 'is one run: pass the folder that holds the runs' in capsys.readouterr().err


# ----------------------------------------------------------------------------- sweep

def test_sweep_plan_overrides_and_one_model_for_every_strategy():
  get_config = sweep.load_config_module(os.path.join(REPO, 'configs', 'demo.py'))
  runs = sweep.plan(get_config, ['bald', 'random', 'badge'], [0, 1],
                    [('train.epochs', '3'), ('train.lr_milestones', '(0.5,)'),
                     ('train.augment', 'False'), ('dataset.name', 'x'), ('model.dropout', '0.3'),
                     ('model.dropout_layers', 'network')])
  assert [(s, i) for s, i, _ in runs] == [('bald', 0), ('random', 0), ('badge', 0), ('bald', 1),
                                          ('random', 1), ('badge', 1)]
  cfg = {(s, i): c for s, i, c in runs}
  assert {(c.model.dropout, c.model.dropout_layers) for c in cfg.values()} == {(0.3, 'network')}
  assert cfg['random', 1].seed == 1 and cfg['random', 1].strategy == 'random'
  c = cfg['random', 1]
  assert (c.train.epochs, tuple(c.train.lr_milestones), c.train.augment, c.dataset.name) == (
      3, (0.5,), False, 'x')
  # BALD is not given a dropout layer the other strategies lack: refused, in one line.
  with pytest.raises(sweep.ConfigError, match=r'^--strategies: strategy bald needs Monte-Carlo '
                     'dropout and every strategy of a sweep runs the same network: set '
                     r'--config.model.dropout=0.3 \(for all of them'):
    sweep.plan(get_config, ['random', 'bald'], [0], [])


@pytest.mark.parametrize('args, message', [
    (['--set', 'train.epochs=abc'], 'train.epochs=abc: expected int'),
    (['--config.train.nosuchkey=1'], "unknown config key 'train.nosuchkey'"),
    (['--set', 'seed=3'], 'seed is set by --seeds'),
    (['--strategies', 'dispersion,bogus'], "strategy='bogus' is not one of"),
    (['--seeds', '0,x'], 'comma-separated list of integers'),
    (['--set', 'train.epochs=0'], 'train.epochs=0 must be positive'),
    (['--bogus'], "unrecognized argument '--bogus'"),
    (['--set', 'oracle=files'], 'a sweep needs oracle=simulated'),
])
def test_sweep_bad_input_is_one_error_line(args, message, tmp_path, capsys):
  try:
    code = sweep.main(['--config', os.path.join(REPO, 'configs', 'demo.py'),
                       '--workdir', str(tmp_path / 'w')] + args)
  except SystemExit as e:  # argparse errors
    code = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
  assert not os.path.exists(tmp_path / 'w')


def test_sweep_error_inside_a_run_names_the_run(tmp_path, capsys):
  args = ['--config', os.path.join(REPO, 'configs', 'demo.py'), '--workdir', str(tmp_path),
          '--set', 'dataset.source=folder', f'--config.dataset.root={tmp_path / "none"}']
  assert sweep.main(args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: dispersion-seed0: dataset.root=')
  assert 'is not a folder' in err[0]


@pytest.mark.slow
def test_sweep_end_to_end_then_skips_finished_runs(tmp_path, capsys, monkeypatch):
  from _helpers import TINY  # pylint: disable=g-import-not-at-top
  tiny = {**TINY, 'train.epochs': 2, 'al.rounds': 1}
  args = ['--config', os.path.join(REPO, 'configs', 'demo.py'), '--strategies',
          'dispersion,random', '--seeds', '0', '--workdir', str(tmp_path)]
  args += [f'--config.{k}={v}' if i % 2 else f'--set={k}={v}'
           for i, (k, v) in enumerate(tiny.items())]
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert '[1/2] dispersion-seed0: running' in out and '[2/2] random-seed0: finished' in out
  accs = {}
  for s in ('dispersion', 'random'):
    with open(tmp_path / f'{s}-seed0' / 'results.json') as f:
      res = json.load(f)
    assert res['config']['train']['epochs'] == 2 and len(res['rounds']) == 2
    accs[s] = [f'{100 * r["test_accuracy"]:.2f} ± 0.00' for r in res['rounds']]
    assert os.path.exists(tmp_path / f'{s}-seed0' / 'diagnostics' / 'round_0.npz')
  text = open(tmp_path / 'report' / 'report.md').read()
  header, body = md_table(text, 'labels')
  assert header == ['labels', 'dispersion (1 seed)', 'random (1 seed)']
  assert body == [['100'] + [accs['dispersion'][0], accs['random'][0]],
                  ['150'] + [accs['dispersion'][1], accs['random'][1]]]
  _, diag = md_table(text, 'strategy | round')
  assert {(r[0], r[2]) for r in diag} == {
      ('dispersion', 'dispersion (highest)'), ('dispersion', 'margin (lowest)'),
      ('dispersion', 'entropy (highest)'), ('random', 'margin (lowest)'),
      ('random', 'entropy (highest)')}
  assert os.path.exists(tmp_path / 'report' / 'dispersion_hist_dispersion.png')

  # Rerun: both runs are skipped without running (or loading) anything.
  import jaxdisp.experiment  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jaxdisp.experiment, 'run', lambda *a: pytest.fail('ran again'))
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert out.count('already finished') == 2
