r"""Runs a label-dispersion active-learning experiment.

  python -m jaxdisp.main --config configs/demo.py --workdir /tmp/demo
  python -m jaxdisp.main --config configs/cifar10.py --workdir /tmp/c10 \
      --config.dataset.source=folder --config.dataset.root=../shared/datasets/cifar10-jpg

Rerunning the same command on the same ``--workdir`` resumes where it stopped (mid-round
included); on a finished workdir it prints the summary and exits 0. A bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdisp import preemption
from jaxdisp.errors import JaxdispError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output/checkpoint directory '
                               '(default: workdirs/<dataset>-<strategy>-seed<seed>).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a run of several processes '
    '(auto-detected on multi-host Cloud TPU); every process runs the same command.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0 .. num_processes - 1).')
flags.mark_flags_as_required(['config'])

# Keys that may change between a run and its resumption (they do not change the results).
RESUMABLE_CHANGES = ('log.', 'checkpoint.', 'dataset.cache_dir', 'dataset.placement',
                     'num_devices', 'train.eval_batch_size', 'resume_force')


def default_workdir(cfg) -> str:
  return os.path.join('workdirs', f'{cfg.dataset.name}-{cfg.strategy}-seed{cfg.seed}')


def checkpoint_dir(cfg, workdir: str) -> str:
  return cfg.checkpoint.dir or os.path.join(workdir, 'checkpoints')


def _config_diff(saved: dict, current: dict) -> list[str]:
  from jaxdisp.config_lib import _flat
  import ml_collections
  a = _flat(ml_collections.ConfigDict(saved))
  b = _flat(ml_collections.ConfigDict(current))
  keys = sorted(set(a) | set(b))
  return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in keys
          if _norm(a.get(k)) != _norm(b.get(k)) and not k.startswith(RESUMABLE_CHANGES)]


def _norm(v):
  return list(v) if isinstance(v, tuple) else v


def run_experiment(cfg, workdir: str):
  """Loads data, restores or starts the experiment, runs the remaining rounds; returns ALState.

  The run holds an exclusive lock on ``workdir`` throughout (a second run stops at once).
  """
  import jax
  from jaxdisp import config_lib, locking

  config_lib.validate(cfg)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise JaxdispError(f'cannot create --workdir {workdir}: {e.strerror or e}') from None
  # issue 17: one run per workdir; taken before the data loads, so a second run stops at once.
  with locking.workdir_lock(workdir, jax.process_index()):
    return _run_locked(cfg, workdir)


def _run_locked(cfg, workdir: str):
  """run_experiment's body, with ``cfg`` validated and ``workdir`` created and locked."""
  import jax
  from jaxdisp import al_loop, checkpointing, config_lib, data, reporting, train
  from jaxdisp.acquisition import NumericalError

  dataset = data.load_dataset(cfg.dataset, lazy=train.shards_train_images(cfg))
  config_lib.validate_against_data(cfg, dataset.num_train, dataset.num_classes)
  primary = jax.process_index() == 0  # the one process that writes outputs (all checkpoint)
  if primary:
    reporting.remove_stale_temporaries(workdir)
  logging.info('dataset %s: %d train / %d test, %d classes; %d %s device(s)', dataset.name,
               dataset.num_train, dataset.num_test, dataset.num_classes, jax.device_count(),
               jax.devices()[0].platform)

  try:
    ckpt = checkpointing.Checkpointer(checkpoint_dir(cfg, workdir), cfg.train.epochs,
                                     cfg.checkpoint.every_epochs)
  except OSError as e:
    raise JaxdispError(f'cannot use the checkpoint folder {checkpoint_dir(cfg, workdir)}: '
                       f'{e.strerror or e}') from None
  saved = ckpt.round_meta()
  if saved is not None:
    diff = _config_diff(saved['config'], cfg.to_dict())
    if diff and not cfg.resume_force:
      raise JaxdispError(f'workdir {workdir} holds a run with a different config ('
                         + '; '.join(diff) + '): use another --workdir, or '
                         '--config.resume_force=True to continue with the new values')
    if diff:
      logging.warning('resuming %s with a changed config (resume_force): %s', workdir,
                      '; '.join(diff))
  exp = al_loop.Experiment.create(cfg, dataset)
  fresh = exp.initial_state()
  try:
    restored = ckpt.latest_round(fresh)
  except (ValueError, TypeError) as e:  # shapes changed under resume_force (e.g. al.rounds)
    raise JaxdispError(f'cannot resume {workdir} with this config: the saved state does not fit '
                       f'({type(e).__name__}); use another --workdir') from None
  state = restored[0] if restored else fresh
  if restored:
    logging.info('resuming %s after round %d', workdir, int(state.round) - 1)
    if primary:
      reporting.write_outputs(workdir, cfg, dataset, state)
  if al_loop.is_finished(state, cfg):
    print(reporting.summary(state))
    ckpt.close()
    return state

  progress = reporting.Progress(workdir, cfg, cfg.al.rounds + 1, write=primary)
  stop = preemption.StopSignal()

  def on_epoch(round_, epoch, train_state, history, metrics):
    done = epoch + 1  # epochs completed in this round
    problem = train.epoch_problem(round_, epoch, metrics, dataset.num_classes)  # NaN/inf, or
    if problem:  # diverged (issue 17): stop before this epoch is checkpointed
      raise NumericalError(problem)
    progress.on_epoch(round_, epoch, metrics)
    stopping = stop.signum is not None and done < cfg.train.epochs
    if ckpt.maybe_save_train(round_, done, train_state, history, force=stopping):
      preemption.fault_point('train_save', round_, done)
    if preemption.fault_armed('epoch'):
      ckpt.wait()
      preemption.fault_point('epoch', round_, done)
    if stopping:
      ckpt.wait()
      stop.check(f'in round {round_} after epoch {done}/{cfg.train.epochs}')

  def restore_train(round_, like_state, like_history):
    out = ckpt.restore_train(round_, like_state, like_history)
    progress.start_round(round_, 0 if out is None else int(out[0].epoch))
    return out

  def on_diagnostics(round_, arrays):
    if not primary:
      return
    path = os.path.join(workdir, 'diagnostics', f'round_{round_}.npz')
    data.save_npz_atomic(path, **arrays)

  hooks = al_loop.Hooks(on_epoch=on_epoch, restore_train=restore_train,
                        on_diagnostics=on_diagnostics if cfg.log.pool_diagnostics else None)
  try:
    with stop:
      while not al_loop.is_finished(state, cfg):
        if cfg.oracle == 'files' and int(state.round) > 0:
          exp, waiting = _apply_oracle_labels(workdir, exp, state, primary)
          if waiting:
            print(waiting)
            return state
        state = al_loop.al_round(state, exp, hooks)
        r = int(state.round) - 1
        ckpt.save_round(state, {'config': cfg.to_dict(), 'round': r})
        preemption.fault_point('round', r)
        if primary:
          reporting.write_outputs(workdir, cfg, dataset, state)
        progress.on_round(state, r)
        logging.info('round %d: %d labels, test accuracy %.2f%%', r, int(state.num_labeled[r]),
                     100 * float(state.test_accuracy[r]))
        if not al_loop.is_finished(state, cfg):
          stop.check(f'after round {r}')
  finally:
    ckpt.wait()
    ckpt.close()
    progress.close()
  print(reporting.summary(state))
  return state


class _QuietLibraries:
  """Drops the INFO chatter of orbax/tensorstore/clu (warnings, level >= 30, still show)."""
  NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}clu{os.sep}', f'{os.sep}tensorstore{os.sep}')

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(n in record.pathname for n in self.NOISY)


def _apply_oracle_labels(workdir, exp, state, primary=True):
  """Files oracle: (experiment training on the ledger's labels, '') or (exp, how-to message)."""
  from jaxdisp import oracle, reporting
  last = int(state.round) - 1
  if primary:
    oracle.write_queries(workdir, last, [s for s in reporting.selections(exp.dataset, state)
                                         if s['round'] == last])
  missing = oracle.missing_labels(workdir, state.labeled_round)
  if len(missing):
    return exp, oracle.how_to_continue(workdir, last, len(missing))
  return exp.with_train_labels(oracle.training_labels(workdir, exp.dataset.train_labels)), ''


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins a multi-process run (JAX's multi-controller runtime) when there is one.

  Explicit flags on any platform (CPU processes use gloo collectives); on a multi-host Cloud TPU
  slice, ``jax.distributed.initialize()`` finds its peers by itself.
  """
  import jax
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise JaxdispError('--coordinator_address, --num_processes and --process_id go together')
  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise JaxdispError(f'--process_id={process_id} must be in [0, --num_processes='
                         f'{num_processes})')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    jax.distributed.initialize()


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    cfg = _CONFIG.value
    cfg.get('seed')  # config_flags defers a load failure to the first access
  except Exception as e:  # pylint: disable=broad-except
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    print(f'error: cannot load --config: {lines[-1] if lines else type(e).__name__}',
          file=sys.stderr)
    sys.exit(2)
  workdir = _WORKDIR.value or default_workdir(cfg)
  try:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    run_experiment(cfg, workdir)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except preemption.Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(e.exit_code)


def _parse_flags(argv):
  """absl flag parsing with one-line errors (bad --config file, unknown or ill-typed keys)."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (flags.Error, KeyError, IOError, ...)
    msg = ' '.join(str(e).split()) or type(e).__name__
    if isinstance(e, (AttributeError, KeyError)):
      msg = f'unknown config key {msg.strip(chr(34) + chr(39))!r} (see jaxdisp/config_lib.py)'
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
