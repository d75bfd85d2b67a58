"""The experiment runner: the active-learning loop and every side effect, in one place.

:func:`run` loads the data, restores or starts the experiment, and runs the remaining rounds
(:func:`jaxdisp.rounds.al_round`, the round's one composition); between its pure steps the
:class:`Runner` owns everything that touches the world: checkpoints (rounds, and every
``checkpoint.every_epochs`` inside a round), the NaN policy, SIGTERM/SIGINT, the crash tests'
fault points, progress lines and TensorBoard, timing, ``results.json`` and the other outputs,
the pool diagnostics, the files oracle, and the lock that keeps a second run off the same
workdir. It is what ``python -m jaxdisp.main``, ``jaxdisp.sweep``, the benchmarks and the tests
run.
"""

from __future__ import annotations

import os
import time

import jax
from absl import logging
from etils import epath

from jaxdisp import checkpointing, cli, config_checks, config_lib, data, diagnostics, files
from jaxdisp import locking, oracle, outputs, preemption, progress, rounds, train
from jaxdisp.al_state import ALState
from jaxdisp.errors import JaxdispError, NumericalError


def default_workdir(cfg) -> str:
  return os.path.join('workdirs', f'{cfg.dataset.name}-{cfg.strategy}-seed{cfg.seed}')


def checkpoint_dir(cfg, workdir: str) -> str:
  return cfg.checkpoint.dir or os.path.join(workdir, 'checkpoints')


def run(cfg, workdir: str) -> ALState:
  """Runs (or resumes) the experiment of ``cfg`` in ``workdir``; returns the final ALState.

  Raises :class:`~jaxdisp.errors.JaxdispError` for bad inputs and
  :class:`~jaxdisp.errors.Preempted` after a stop signal (checkpoint saved).
  """
  config_checks.validate(cfg)
  cli.check_utf8_path(workdir)
  if cfg.checkpoint.dir:
    cli.check_utf8_path(cfg.checkpoint.dir, 'checkpoint.dir')
  try:
    created = not files.exists(workdir)
    files.makedirs(workdir)
  except (OSError, ImportError) as e:  # ImportError: no backend for gs:// (gcsfs or tensorflow)
    raise JaxdispError(f'cannot create --workdir {workdir}: '
                       f'{getattr(e, "strerror", None) or e}') from None
  before = None if created else _entries(workdir)
  try:
    # One run per workdir, taken before the data loads, so a second run stops at once.
    with locking.workdir_lock(workdir, jax.process_index()):
      return _run_locked(cfg, workdir)
  except JaxdispError:
    if created:
      _remove_if_unused(workdir)
    else:
      _remove_new_locks(workdir, before)
    raise


def _is_lock(name: str) -> bool:
  return name.startswith('.jaxdisp') and name.endswith('.lock')


def _entries(workdir: str) -> set | None:
  try:
    return {p.name for p in epath.Path(workdir).iterdir()}
  except OSError:
    return None


def _remove_new_locks(workdir: str, before: set | None) -> None:
  """A run that failed in a workdir it did not create (e.g. an empty folder, on bad data)
  leaves it as it was: the lock files it added are removed when they are all it added."""
  after = _entries(workdir)
  if before is None or after is None or not all(_is_lock(n) for n in after - before):
    return
  for name in after - before:
    try:
      (epath.Path(workdir) / name).unlink()
    except OSError:
      pass


def _remove_if_unused(workdir: str) -> None:
  """Removes a workdir this run created when it holds no file but lock files (the run failed
  before writing anything, e.g. on bad data; orbax may have made empty checkpoint folders), so a
  failed start leaves no empty folder behind. Anything else in it is kept."""
  try:
    for depth, (_, _, names) in enumerate(epath.Path(workdir).walk()):  # the workdir comes first
      if any(depth or not _is_lock(f) for f in names):
        return
    epath.Path(workdir).rmtree()
  except OSError:
    pass  # not ours to remove (a file appeared, permissions): keep it


def _run_locked(cfg, workdir: str) -> ALState:
  dataset = data.load_dataset(cfg.dataset, lazy=train.shards_train_images(cfg))
  config_checks.validate_against_data(cfg, dataset.num_train, dataset.num_classes)
  primary = jax.process_index() == 0  # the one process that writes outputs (all checkpoint)
  if primary:
    files.remove_stale_temporaries(workdir)
  logging.info('dataset %s: %d train / %d test, %d classes; %d %s device(s)', dataset.name,
               dataset.num_train, dataset.num_test, dataset.num_classes, jax.device_count(),
               jax.devices()[0].platform)
  try:
    ckpt = checkpointing.Checkpointer(checkpoint_dir(cfg, workdir), cfg.train.epochs,
                                     cfg.checkpoint.every_epochs)
  except OSError as e:
    raise JaxdispError(f'cannot use the checkpoint folder {checkpoint_dir(cfg, workdir)}: '
                       f'{e.strerror or e}') from None
  try:
    _check_saved_config(ckpt, cfg, workdir)
    exp = rounds.Experiment.create(cfg, dataset)
    state = _restore(ckpt, exp, workdir, primary)
    if rounds.is_finished(state, cfg):
      print(f'{workdir}: the run is already finished ({int(state.round)} rounds); nothing to do')
    else:
      runner = Runner(exp, workdir, ckpt, progress.Progress(workdir, cfg, cfg.al.rounds + 1,
                                                           write=primary), primary)
      with preemption.StopSignal() as stop:
        runner.stop = stop
        state = runner.run(state)
        if state is None:
          return runner.last_state
  finally:
    ckpt.finish()
  print(outputs.summary(state))
  return state


def _check_saved_config(ckpt, cfg, workdir: str) -> None:
  saved = ckpt.round_meta()
  if saved is None:
    return
  diff = config_lib.config_diff(saved['config'], cfg.to_dict())
  if diff and not cfg.resume_force:
    raise JaxdispError(f'workdir {workdir} holds a run with a different config ('
                       + '; '.join(diff) + '): use another --workdir, or '
                       '--config.resume_force=True to continue with the new values')
  if diff:
    logging.warning('resuming %s with a changed config (resume_force): %s', workdir,
                    '; '.join(diff))


def _restore(ckpt, exp: rounds.Experiment, workdir: str, primary: bool) -> ALState:
  fresh = exp.initial_state()
  try:
    restored = ckpt.latest_round(fresh)
  except (ValueError, TypeError) as e:  # shapes changed under resume_force (e.g. al.rounds)
    raise JaxdispError(f'cannot resume {workdir} with this config: the saved state does not fit '
                       f'({type(e).__name__}); use another --workdir') from None
  if not restored:
    return fresh
  state = restored[0]
  logging.info('resuming %s after round %d', workdir, int(state.round) - 1)
  if primary:
    write_outputs(workdir, exp.cfg, exp.dataset, state)
  return state


def write_outputs(workdir: str, cfg, dataset, state) -> None:
  """results.json etc. from ``state``; the crash tests can kill the process mid-write."""
  outputs.write_outputs(workdir, cfg, dataset, state,
                        before_replace=lambda: preemption.fault_point('results_write'))


class NoCheckpoints:
  """The checkpointer of a run without a workdir (``Runner(exp)``): nothing saved or restored."""

  def restore_train(self, round_, train_state, history, stats):
    del round_, train_state, history, stats
    return None

  def maybe_save_train(self, round_, done, train_state, history, force=False, stats=None):
    del round_, done, train_state, history, force, stats
    return False

  def save_round(self, state, meta) -> None:
    del state, meta

  def wait(self) -> None:
    pass


class NoProgress:
  """The progress of a run without a workdir: no lines, no TensorBoard."""

  def start_round(self, round_: int, start_epoch: int) -> None:
    del round_, start_epoch

  def on_epoch(self, round_: int, epoch: int, metrics: dict) -> None:
    del round_, epoch, metrics

  def on_round(self, state, round_: int) -> None:
    del state, round_

  def close(self) -> None:
    pass


class Runner(rounds.RoundHooks):
  """Runs rounds of one experiment with its side effects, as the hooks of
  :func:`rounds.al_round`: the steps and their order are the round's, the runner adds
  checkpoints, the NaN and divergence policy, progress, signals, timing and the pool
  diagnostics between them. ``Runner(exp)`` alone (no workdir: no checkpoints, progress or
  outputs) is a timed, policed round, as the benchmarks use it."""

  def __init__(self, exp: rounds.Experiment, workdir: str | None = None,
               ckpt=None, progress=None, primary: bool = True):
    self.exp, self.cfg, self.workdir = exp, exp.cfg, workdir
    self.ckpt = ckpt if ckpt is not None else NoCheckpoints()
    self.progress = progress if progress is not None else NoProgress()
    self.primary = primary
    self.stop = preemption.StopSignal()  # not installed: never signalled; run() sets the real one
    self.last_state = None
    self._clock = []  # perf_counter at the round's start, end of training, scoring, selection

  # ---- the loop -------------------------------------------------------------------------------

  def run(self, state: ALState) -> ALState | None:
    """Rounds until the experiment is finished; None if the files oracle waits for labels."""
    cfg = self.cfg
    try:
      while not rounds.is_finished(state, cfg):
        self.last_state = state
        if cfg.oracle.kind == 'files' and int(state.round) > 0:
          waiting = self._apply_oracle_labels(state)
          if waiting:
            print(waiting)
            return None
        state = self.round(state)
        r = int(state.round) - 1
        self.ckpt.save_round(state, {'config': cfg.to_dict(), 'round': r})
        preemption.fault_point('round', r)
        if self.primary and self.workdir is not None:
          write_outputs(self.workdir, cfg, self.exp.dataset, state)
        self.progress.on_round(state, r)
        logging.info('round %d: %d labels, test accuracy %.2f%%', r, int(state.num_labeled[r]),
                     100 * float(state.test_accuracy[r]))
        if not rounds.is_finished(state, cfg):
          self.stop.check(f'after round {r}')
    finally:
      self.progress.close()
    return state

  def round(self, state: ALState) -> ALState:
    """One round (:func:`rounds.al_round`): train (resuming a mid-round checkpoint), evaluate,
    score, select; timed, with this runner's side effects between the steps."""
    self._clock = [time.perf_counter()]
    return rounds.al_round(state, self.exp, self)

  # ---- between the steps (rounds.RoundHooks) --------------------------------------------------

  def started(self, ctx: rounds.RoundCtx) -> rounds.RoundCtx:
    restored = self.ckpt.restore_train(ctx.round, ctx.train_state, ctx.history, ctx.stats)
    if restored is not None:
      ctx = ctx.replace(train_state=restored[0], history=restored[1], stats=restored[2])
      logging.info('round %d: resuming training at epoch %d', ctx.round, ctx.epoch)
    self.progress.start_round(ctx.round, ctx.epoch)
    return ctx

  def trained_epoch(self, ctx: rounds.RoundCtx, epoch: int, metrics) -> None:
    """The NaN policy, progress, checkpoints, fault points and preemption after an epoch."""
    cfg, round_, done = self.cfg, ctx.round, epoch + 1  # epochs completed in this round
    m = metrics.to_host()
    problem = train.epoch_problem(round_, epoch, m, self.exp.dataset.num_classes)
    if problem:  # NaN/inf or diverged: stop before this epoch is checkpointed
      raise NumericalError(problem)
    self.progress.on_epoch(round_, epoch, m)
    stopping = self.stop.signum is not None and done < cfg.train.epochs
    if self.ckpt.maybe_save_train(round_, done, ctx.train_state, ctx.history, force=stopping,
                                  stats=ctx.stats):
      preemption.fault_point('train_save', round_, done)
    if preemption.fault_armed('epoch'):
      self.ckpt.wait()
      preemption.fault_point('epoch', round_, done)
    if stopping:
      self.ckpt.wait()
      self.stop.check(f'in round {round_} after epoch {done}/{cfg.train.epochs}')

  def evaluated(self, ctx: rounds.RoundCtx) -> None:
    self._clock.append(time.perf_counter())

  def scored(self, ctx: rounds.RoundCtx, scored: rounds.Scored) -> None:
    preemption.fault_point('scored', ctx.round)  # crash tests: scored (and any auxiliary
    # model trained), nothing of it saved: a restart computes it again
    self._clock.append(time.perf_counter())

  def finished(self, ctx: rounds.RoundCtx, scored: rounds.Scored | None, chosen) -> None:
    if chosen is not None:
      self._clock.append(time.perf_counter())
    if scored is not None:
      self._write_diagnostics(ctx, scored)

  def seconds(self) -> tuple[float, float, float]:
    t = self._clock
    return tuple(b - a for a, b in zip(t, t[1:])) + (0.0,) * (4 - len(t))

  # ---- side effects ---------------------------------------------------------------------------

  def _write_diagnostics(self, ctx: rounds.RoundCtx, scored: rounds.Scored) -> None:
    if self.workdir is None or not self.cfg.log.pool_diagnostics:
      return
    diag = diagnostics.pool_diagnostics(self.exp, ctx, scored)  # collectives: every process joins
    if self.primary:
      files.save_npz(
          os.path.join(self.workdir, 'diagnostics', f'round_{ctx.round}.npz'), **diag)

  def _apply_oracle_labels(self, state) -> str:
    """Files oracle: trains on the ledger's labels; or returns how-to-continue while waiting."""
    last = int(state.round) - 1
    if self.primary:
      oracle.write_queries(self.workdir, last, [
          s for s in outputs.selections(self.exp.dataset, state) if s['round'] == last])
    missing = oracle.missing_labels(self.workdir, state.labeled_round)
    if len(missing):
      return oracle.how_to_continue(self.workdir, last, len(missing))
    self.exp = self.exp.with_train_labels(
        oracle.training_labels(self.workdir, self.exp.dataset.train_labels))
    return ''
