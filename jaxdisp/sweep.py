r"""Runs every (strategy, seed) of a comparison as its own resumable experiment, then the report.

  python -m jaxdisp.sweep --config configs/cifar10_cpu.py \
      --strategies dispersion,random,entropy --seeds 0,1,2 --workdir runs/cifar10_cpu \
      [--set train.epochs=10 ...] [--config.train.epochs=10 ...]

Experiment (strategy s, seed i) lives in ``WORKDIR/<s>-seed<i>/`` and is exactly what
``python -m jaxdisp.main --config ... --config.strategy=s --config.seed=i --workdir
WORKDIR/<s>-seed<i>`` would run (same outputs, same resumption). Runs go seed by seed (every
strategy of seed 0 first), so an interrupted sweep already has comparable runs. Rerunning the
command skips finished runs -- without loading any data when ``results.json`` is complete and
holds the same config -- and resumes an unfinished one where it stopped. At the end it writes
the report (``jaxdisp.report``) into ``WORKDIR/report/``.

One network for every strategy: all runs of a sweep share the config's ``model.*`` keys, so
their curves differ by the strategy alone. A strategy that needs Monte-Carlo dropout
(``Strategy.needs_dropout``: ``bald``) in a config without dropout is refused with one line
asking for ``--config.model.dropout`` (which then applies to every strategy) rather than given a
dropout layer the others lack; ``--config.model.dropout_layers=network`` makes it Monte-Carlo
dropout through the whole network.

Overrides: ``--set key=value`` or ``--config.key=value`` (repeatable; the same keys and the same
parser as ``jaxdisp.main``, :func:`jaxdisp.cli.parse_value`: each value is read as the type of
its key; the ``--set`` ones first). ``strategy`` and ``seed`` come from ``--strategies`` /
``--seeds``. Every config is validated before the first run starts. A bad input prints one
``error: ...`` line and exits with status 2 (the first failing run stops the sweep); SIGTERM /
Ctrl-C stop like ``jaxdisp.main`` (checkpoint saved, exit 128 + signal).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

from jaxdisp import cli
from jaxdisp.errors import ConfigError, JaxdispError, Preempted


def _parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog='python -m jaxdisp.sweep', description=__doc__.splitlines()[0],
                         allow_abbrev=False)
  p.add_argument('--config', required=True, help='experiment config file (configs/*.py)')
  p.add_argument('--strategies', default='dispersion,random,entropy',
                 help='comma-separated strategies (default: %(default)s)')
  p.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (default: %(default)s)')
  p.add_argument('--workdir', required=True, help='one subfolder per run, plus report/')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override, e.g. train.epochs=20 (repeatable); '
                 '--config.KEY=VALUE works too')
  p.add_argument('--no_report', action='store_true', help='do not write the report at the end')
  return p


def parse_args(argv):
  """(args, the loaded config, overrides as ``[(key, raw value)]``: ``--set`` ones first, then
  ``--config.key=value`` ones). Usage errors exit 2; a config that does not load raises."""
  p = _parser()
  cfg, argv, config_overrides = cli.config_from_argv(argv)
  args, rest = p.parse_known_args(argv)
  overrides = []
  for item in args.set:
    key, eq, value = item.partition('=')
    if not eq or not key:
      p.error(f'--set {item!r}: expected KEY=VALUE')
    overrides.append((key.strip(), value))
  if rest:
    p.error(f'unrecognized argument {rest[0]!r} (overrides are --set KEY=VALUE or '
            '--config.KEY=VALUE)')
  return args, cfg, overrides + config_overrides


def _split(text: str, what: str, cast=str) -> list:
  items = [t.strip() for t in text.split(',') if t.strip()]
  try:
    items = [cast(t) for t in items]
  except ValueError:
    raise ConfigError(f'--{what}={text!r}: expected a comma-separated list of integers') from None
  if not items:
    raise ConfigError(f'--{what} is empty')
  if len(set(items)) != len(items):
    raise ConfigError(f'--{what}={text!r} lists a value twice')
  return items


def run_name(strategy: str, seed: int) -> str:
  return f'{strategy}-seed{seed}'


def plan(get_config, strategies, seeds, overrides):
  """[(strategy, seed, config)] in run order (seed-major); every config validated.

  ``get_config()`` gives a fresh config per run; ``overrides`` are ``[(key, raw value)]``.
  """
  from jaxdisp import config_checks, strategies as registry  # pylint: disable=g-import-not-at-top
  for key, _ in overrides:
    if key in ('strategy', 'seed'):
      raise ConfigError(f'{key} is set by --{"strategies" if key == "strategy" else "seeds"}, '
                        'not by an override')
  runs = []
  for seed in seeds:
    for strategy in strategies:
      cfg = get_config()
      cli.apply_overrides(cfg, overrides)
      cfg.strategy, cfg.seed = strategy, seed
      try:
        check_shared_network(registry.get(strategy), cfg)
      except ConfigError as e:
        raise ConfigError(f'--strategies: {e}') from None
      if cfg.oracle.kind != 'simulated':
        raise ConfigError(f'oracle.kind={cfg.oracle.kind!r}: a sweep needs '
                          'oracle.kind=simulated (the files oracle waits for people after every '
                          'round; run jaxdisp.main)')
      try:
        config_checks.validate(cfg)
      except ConfigError as e:
        raise ConfigError(f'{run_name(strategy, seed)}: {e}') from None
      runs.append((strategy, seed, cfg))
  return runs


def check_shared_network(strategy, cfg) -> None:
  """Refuses a strategy that needs Monte-Carlo dropout in a config without dropout: the sweep
  will not give it a network the other strategies of the comparison do not get."""
  if strategy.needs_dropout and cfg.model.dropout <= 0:
    raise ConfigError(f'strategy {strategy.name} needs Monte-Carlo dropout and every strategy of '
                      'a sweep runs the same network: set --config.model.dropout=0.3 (for all '
                      'of them; --config.model.dropout_layers=network for dropout through the '
                      'whole network)')


def finished_results(workdir: str, cfg) -> dict | None:
  """results.json of a finished run of exactly ``cfg`` in ``workdir``, else None."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      doc = json.load(f)
  except (OSError, ValueError):
    return None
  same = doc.get('config') == json.loads(json.dumps(cfg.to_dict()))
  done = len(doc.get('rounds', ())) == cfg.al.rounds + 1
  return doc if same and done else None


def _setup_logging() -> None:
  """INFO progress lines of the runs as ``jaxdisp.main`` prints them, minus library chatter."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():  # absl's defaults; avoids "Logging before flag parsing"
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  logger = logging.get_absl_logger()
  if cli.quiet_libraries not in logger.filters:
    logger.addFilter(cli.quiet_libraries)


def sweep(get_config, strategies, seeds, workdir: str, overrides=(),
          report: bool = True) -> str | None:
  """Runs the sweep; returns the report's path (None without a report). Raises JaxdispError."""
  runs = plan(get_config, strategies, seeds, list(overrides))
  cli.check_utf8_path(workdir)
  from jaxdisp import experiment  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  print(f'sweep: {len(runs)} runs ({", ".join(strategies)} x seeds '
        f'{", ".join(map(str, seeds))}) in {workdir}', flush=True)
  t_sweep = time.perf_counter()
  for i, (strategy, seed, cfg) in enumerate(runs, 1):
    name = run_name(strategy, seed)
    run_dir = os.path.join(workdir, name)
    tag = f'sweep: [{i}/{len(runs)}] {name}'
    doc = finished_results(run_dir, cfg)
    if doc is None:
      print(f'{tag}: running in {run_dir}', flush=True)
      t0 = time.perf_counter()
      try:
        state = experiment.run(cfg, run_dir)
      except JaxdispError as e:  # name the run, keep the type
        e.args = (f'{name}: {e}',) + e.args[1:]
        raise
      done = int(state.round)
      last = (f'{100 * float(state.test_accuracy[done - 1]):.2f}% at '
              f'{int(state.num_labeled[done - 1])} labels' if done else 'no round')
      print(f'{tag}: finished in {time.perf_counter() - t0:.0f} s, {last}', flush=True)
    else:
      last = doc['rounds'][-1]
      print(f'{tag}: already finished ({100 * last["test_accuracy"]:.2f}% at '
            f'{last["num_labeled"]} labels), skipped', flush=True)
  print(f'sweep: all {len(runs)} runs finished ({time.perf_counter() - t_sweep:.0f} s)')
  if not report:
    return None
  from jaxdisp import report as report_lib  # pylint: disable=g-import-not-at-top
  path = report_lib.write_report(workdir)
  print(f'sweep: report written to {path}')
  return path


def main(argv=None) -> int:
  try:
    args, cfg, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    strategies = _split(args.strategies, 'strategies')
    seeds = _split(args.seeds, 'seeds', int)
    _setup_logging()
    sweep(lambda: copy.deepcopy(cfg), strategies, seeds, args.workdir, overrides,
          report=not args.no_report)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    return e.exit_code
  return 0


if __name__ == '__main__':
  sys.exit(main())
