"""Contexts beyond a perfect oracle: noisy annotators (oracle.noise), balanced accuracy, and
workdirs written before ALState gained per-class accuracy."""

import flax
import numpy as np
import pytest

from _helpers import TINY, cli, load_results, tiny_config
from jaxdisp import checkpointing, config_checks, config_lib, data, oracle, rounds
from jaxdisp.errors import ConfigError
from jaxdisp.experiment import run as run_experiment


def test_simulated_answers_flip_the_given_fraction_to_another_class_reproducibly():
  labels = np.arange(20000) % 10
  a = oracle.simulated_answers(labels, 10, 0.2, seed=3)
  assert (a == oracle.simulated_answers(labels, 10, 0.2, seed=3)).all()  # same seed, same answers
  assert (a != oracle.simulated_answers(labels, 10, 0.2, seed=4)).any()
  wrong = a != labels
  assert abs(wrong.mean() - 0.2) < 0.01  # 4,000 +- 57 expected
  # A wrong answer is uniform over the 9 other classes.
  offsets = (a[wrong] - labels[wrong]) % 10
  counts = np.bincount(offsets, minlength=10)
  assert counts[0] == 0 and np.all(np.abs(counts[1:] / wrong.sum() - 1 / 9) < 0.02)
  assert (oracle.simulated_answers(labels, 10, 0.0, seed=3) == labels).all()


@pytest.mark.parametrize('overrides, message', [
    ({'oracle.noise': 1.0}, r'oracle.noise=1.0 must be in \[0, 1\)'),
    ({'oracle.noise': -0.1}, r'oracle.noise=-0.1 must be in \[0, 1\)'),
    ({'oracle.noise': 0.1, 'oracle.kind': 'files'}, 'with oracle.kind=files the labels are'),
    ({'oracle.noise_initial': 1.0}, r'oracle.noise_initial=1.0 must be in \[0, 1\)'),
    ({'oracle.noise_initial': 0.1, 'oracle.kind': 'files'}, 'set both to 0'),
    ({'oracle.kind': 'people'}, "oracle.kind='people' must be 'simulated' or 'files'"),
])
def test_bad_oracle_values_are_refused(overrides, message):
  with pytest.raises(ConfigError, match=message):
    config_checks.validate(tiny_config(**overrides))


def test_noisy_oracle_run_reports_balanced_and_per_class_accuracy(tmp_path):
  cli(tmp_path, '--config.oracle.noise=0.2', '--config.al.rounds=1')
  res = load_results(tmp_path)
  for r in res['rounds']:
    per_class = r['class_accuracy']
    assert len(per_class) == 10 and all(0 <= v <= 1 for v in per_class.values())
    assert r['balanced_accuracy'] == pytest.approx(np.mean(list(per_class.values())), abs=1e-6)
  # test_accuracy is the per-class accuracies weighted by the test split's class sizes.
  cfg = tiny_config()
  counts = np.bincount(data.load_dataset(cfg.dataset).test_labels, minlength=10)
  r0 = res['rounds'][0]
  weighted = sum(counts[i] * v for i, v in enumerate(r0['class_accuracy'].values()))
  assert weighted / counts.sum() == pytest.approx(r0['test_accuracy'], abs=1e-6)


def test_a_noisy_oracle_changes_what_the_model_trains_on_but_not_the_truth():
  cfg = tiny_config(**{'oracle.noise': 0.3})
  exp = rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
  trained_on = np.asarray(exp.data.train_labels)
  truth = np.asarray(exp.dataset.train_labels)
  initial = exp.initial_state().labeled_round == 0
  # oracle.noise is the queried labels' mistake rate; the initial set is clean by default
  assert (trained_on[initial] == truth[initial]).all()
  assert 0.25 < (trained_on[~initial] != truth[~initial]).mean() < 0.35
  queried = oracle.simulated_answers(truth, 10, 0.3, cfg.seed)[~initial]
  assert (trained_on[~initial] == queried).all()
  # with oracle.noise_initial = oracle.noise, every label as before oracle.noise_initial existed
  cfg = tiny_config(**{'oracle.noise': 0.3, 'oracle.noise_initial': 0.3})
  trained_on = np.asarray(rounds.Experiment.create(cfg, data.load_dataset(cfg.dataset))
                          .data.train_labels)
  assert 0.25 < (trained_on != truth).mean() < 0.35
  assert (trained_on == oracle.simulated_answers(truth, 10, 0.3, cfg.seed)).all()


def test_noise_initial_noises_the_initial_set_from_its_own_stream():
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 10, 20000)
  initial = np.zeros(20000, bool)
  initial[rng.choice(20000, 5000, replace=False)] = True
  clean = oracle.simulated_answers(truth, 10, 0.2, 7, initial=initial, noise_initial=0.0)
  noisy = oracle.simulated_answers(truth, 10, 0.2, 7, initial=initial, noise_initial=0.1)
  assert (clean[initial] == truth[initial]).all()
  assert 0.08 < (noisy[initial] != truth[initial]).mean() < 0.12
  assert (noisy[~initial] == clean[~initial]).all()  # the queried labels' mistakes do not move
  assert 0.18 < (clean[~initial] != truth[~initial]).mean() < 0.22
  # a wrong answer is another class, uniformly: never the true one, every other one about evenly
  wrong = noisy != truth
  assert (noisy[wrong] != truth[wrong]).all()
  shift = np.bincount((noisy[wrong] - truth[wrong]) % 10, minlength=10)
  assert shift[0] == 0 and shift[1:].min() > 0.7 * shift[1:].mean()
  # the same rate for both: the single stream of versions before oracle.noise_initial, and an
  # initial set kept out of the noise (noise 0, noise_initial > 0) works too
  assert (oracle.simulated_answers(truth, 10, 0.2, 7, initial=initial, noise_initial=0.2)
          == oracle.simulated_answers(truth, 10, 0.2, 7)).all()
  only_initial = oracle.simulated_answers(truth, 10, 0.0, 7, initial=initial, noise_initial=0.1)
  assert (only_initial[~initial] == truth[~initial]).all()
  assert (only_initial[initial] == noisy[initial]).all()


def test_a_workdir_of_an_older_version_keeps_its_noisy_initial_set():
  """A run saved before oracle.noise_initial noised its initial set with oracle.noise: resuming
  it with today's default (a clean initial set) is a config change, named as one."""
  saved = tiny_config(**{'oracle.noise': 0.2}).to_dict()
  del saved['oracle']['noise_initial']
  diff = config_lib.config_diff(saved, tiny_config(**{'oracle.noise': 0.2}))
  assert diff == ['oracle.noise_initial: 0.2 -> 0.0']
  assert config_lib.config_diff(saved, tiny_config(**{'oracle.noise': 0.2,
                                                      'oracle.noise_initial': 0.2})) == []


@flax.struct.dataclass
class _ALStateBeforeClassAccuracy:
  """ALState as versions before per-class accuracy saved it."""
  round: np.ndarray
  key: np.ndarray
  labeled_round: np.ndarray
  score: np.ndarray
  modal_label: np.ndarray
  label_changes: np.ndarray
  num_labeled: np.ndarray
  test_accuracy: np.ndarray
  seconds: np.ndarray


def test_a_round_checkpoint_of_an_older_version_is_upgraded(tmp_path):
  new = rounds.initial_state(0, 40, 10, 2, num_classes=3)
  old = _ALStateBeforeClassAccuracy(**{
      k: getattr(new, k) for k in _ALStateBeforeClassAccuracy.__dataclass_fields__})
  old = old.replace(round=np.int32(1), test_accuracy=np.float32([0.5, np.nan, np.nan]))
  ckpt = checkpointing.Checkpointer(str(tmp_path), epochs=4, every_epochs=2)
  ckpt.save_round(old, {'config': {}, 'round': 0})
  state, meta = ckpt.latest_round(new)
  ckpt.close()
  assert int(state.round) == 1 and float(state.test_accuracy[0]) == 0.5 and meta['round'] == 0
  assert state.class_accuracy.shape == (3, 3) and np.isnan(state.class_accuracy).all()
  assert (state.labeled_round == new.labeled_round).all()


def test_final_diagnostics_evaluate_every_recorded_score_of_the_initial_model(tmp_path):
  """al.rounds=0 + log.final_diagnostics: the initial model's pool diagnostics alone, with every
  training-dynamics score (dispersion.record_always records all of them), and the report ranks
  each one."""
  from jaxdisp import report  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'random-seed0'
  run_experiment(tiny_config(strategy='random', **{
      'al.rounds': 0, 'log.final_diagnostics': True, 'dispersion.record_always': True,
      'model.dropout': 0.3}), str(run))
  res = load_results(run)
  assert len(res['rounds']) == 1 and res['rounds'][0]['selected'] == []
  with np.load(run / 'diagnostics' / 'round_0.npz') as z:
    d = {k: z[k] for k in z.files}
  assert d['score_names'].tolist() == ['dispersion', 'margin', 'entropy', 'least_confidence',
                                       'bald', 'flips', 'variability', 'margin_dynamics']
  assert set(d) == {'ids', 'correct', 'score_names', 'score_labels', 'score_highest',
                    *d['score_names']}
  # least confidence is 1 - the top probability; with the margin (top1 - top2) it bounds top1
  np.testing.assert_array_less(d['least_confidence'], 1.0 - 1.0 / 10 + 1e-6)
  np.testing.assert_array_less(-1e-6, d['least_confidence'])
  assert len(d['ids']) == 500  # the whole unlabeled pool: 600 - 100
  t = TINY['train.epochs']  # every epoch recorded
  # flips counts changes between consecutive epochs: no change <=> a single label <=> dispersion 0
  assert ((d['flips'] == 0) == (d['dispersion'] == 0)).all()
  assert (d['flips'] <= t - 1).all() and (d['flips'] == np.round(d['flips'])).all()
  assert (d['variability'] >= 0).all() and (d['variability'] <= 0.5).all()  # std of [0, 1] values
  assert (d['margin_dynamics'] >= 0).all()  # a top-1 minus top-2 logit, averaged
  text = open(report.write_report(str(tmp_path))).read()
  for score in ('dispersion (highest)', 'flips (highest)', 'variability (highest)',
                'margin dynamics (lowest)', 'BALD (highest)', 'margin (lowest)',
                'least confidence (highest)'):
    assert f'| random | 0 | {score} |' in text, score
