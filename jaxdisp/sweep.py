r"""Runs every (strategy, seed) of a comparison as its own resumable experiment, then the report.

  python -m jaxdisp.sweep --config configs/cifar10_cpu.py \
      --strategies dispersion,random,entropy --seeds 0,1,2 --workdir runs/cifar10_cpu \
      [--set train.epochs=10 ...] [--config.train.epochs=10 ...]

Experiment (strategy s, seed i) lives in ``WORKDIR/<s>-seed<i>/`` and is exactly what
``python -m jaxdisp.main --config ... --config.strategy=s --config.seed=i --workdir
WORKDIR/<s>-seed<i>`` would run (same outputs, same resumption). Runs go seed by seed (every
strategy of seed 0 first), so an interrupted sweep already has comparable runs. Rerunning the
command skips finished runs -- without loading any data when ``results.json`` is complete and
holds the same config -- and resumes an unfinished one where it stopped. A strategy that needs
Monte-Carlo dropout (``Strategy.needs_dropout``: ``bald``) gets ``model.dropout=0.3`` when the
config has no dropout; the other strategies keep the config's dropout. At the end it writes the report (``jaxdisp.report``) into
``WORKDIR/report/``.

Overrides: ``--set key=value`` or ``--config.key=value`` (repeatable, the same keys as
``jaxdisp.main``; values are parsed as the type of the key: ``True/False``, ints, floats, tuples
like ``(0.6,0.8)``, strings as given). ``strategy`` and ``seed`` come from ``--strategies`` /
``--seeds``. Every config is validated before the first run starts. A bad input prints one
``error: ...`` line and exits with status 2 (the first failing run stops the sweep); SIGTERM /
Ctrl-C stop like ``jaxdisp.main`` (checkpoint saved, exit 128 + signal).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time

from jaxdisp.errors import ConfigError, JaxdispError, Preempted
from jaxdisp.io_utils import ArgumentParser, quiet_libraries

MC_DROPOUT = 0.3  # model.dropout given to strategies that need Monte-Carlo dropout


def _parser() -> ArgumentParser:
  p = ArgumentParser(prog='python -m jaxdisp.sweep', description=__doc__.splitlines()[0],
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
  """(args, overrides as [(key, raw value)]) with ``--config.key=value`` folded into overrides."""
  p = _parser()
  args, rest = p.parse_known_args(argv)
  overrides = []
  for item in args.set:
    key, eq, value = item.partition('=')
    if not eq or not key:
      p.error(f'--set {item!r}: expected KEY=VALUE')
    overrides.append((key.strip(), value))
  for item in rest:
    key, eq, value = item.partition('=')
    if not key.startswith('--config.') or not eq:
      p.error(f'unrecognized argument {item!r} (overrides are --set KEY=VALUE or '
              '--config.KEY=VALUE)')
    overrides.append((key[len('--config.'):], value))
  return args, overrides


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


def load_config_module(path: str):
  """The config file's ``get_config`` (a fresh ConfigDict per call)."""
  if not os.path.isfile(path):
    raise ConfigError(f'cannot load --config: {path} is not a file')
  try:
    spec = importlib.util.spec_from_file_location('jaxdisp_sweep_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = module.get_config
  except Exception as e:  # pylint: disable=broad-except  (syntax errors, missing get_config, ...)
    raise ConfigError(f'cannot load --config {path}: {type(e).__name__}: {e}') from None
  return get_config


def _parse_value(key: str, raw: str, current):
  """``raw`` as the type of the config value ``current`` (like ml_collections' config flags)."""
  def bad(why=''):
    return ConfigError(f'--config.{key}={raw}: expected {type(current).__name__}{why}')
  if isinstance(current, bool):
    low = raw.strip().lower()
    if low in ('true', '1', 'yes'):
      return True
    if low in ('false', '0', 'no'):
      return False
    raise bad()
  if isinstance(current, int):
    try:
      return int(raw)
    except ValueError:
      raise bad() from None
  if isinstance(current, float):
    try:
      return float(raw)
    except ValueError:
      raise bad() from None
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      raise bad(', e.g. (0.6,0.8)') from None
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return tuple(value)
  if isinstance(current, str):
    return raw
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def apply_overrides(cfg, overrides) -> None:
  """Sets ``key=raw`` pairs on ``cfg`` (dotted keys), each parsed as its key's type."""
  from jaxdisp import config_lib  # pylint: disable=g-import-not-at-top
  for key, raw in overrides:
    current = config_lib.flatten(cfg).get(key)
    if current is None:
      config_lib.set_key(cfg, key, None)  # raises the one-line unknown-key / group error
    config_lib.set_key(cfg, key, _parse_value(key, raw, current))


def run_name(strategy: str, seed: int) -> str:
  return f'{strategy}-seed{seed}'


def plan(get_config, strategies, seeds, overrides):
  """[(strategy, seed, config)] in run order (seed-major); every config validated."""
  from jaxdisp import config_lib, strategies as registry  # pylint: disable=g-import-not-at-top
  for key, _ in overrides:
    if key in ('strategy', 'seed'):
      raise ConfigError(f'{key} is set by --{"strategies" if key == "strategy" else "seeds"}, '
                        'not by an override')
  runs = []
  for seed in seeds:
    for strategy in strategies:
      cfg = get_config()
      apply_overrides(cfg, overrides)
      cfg.strategy, cfg.seed = strategy, seed
      try:
        if registry.get(strategy).needs_dropout and cfg.model.dropout == 0:
          cfg.model.dropout = MC_DROPOUT
      except ConfigError as e:
        raise ConfigError(f'--strategies: {e}') from None
      if cfg.oracle != 'simulated':
        raise ConfigError(f'oracle={cfg.oracle!r}: a sweep needs oracle=simulated (the files '
                          'oracle waits for people after every round; run jaxdisp.main)')
      try:
        config_lib.validate(cfg)
      except ConfigError as e:
        raise ConfigError(f'{run_name(strategy, seed)}: {e}') from None
      runs.append((strategy, seed, cfg))
  return runs


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
  if quiet_libraries not in logger.filters:
    logger.addFilter(quiet_libraries)


def sweep(get_config, strategies, seeds, workdir: str, overrides=(),
          report: bool = True) -> str | None:
  """Runs the sweep; returns the report's path (None without a report). Raises JaxdispError."""
  runs = plan(get_config, strategies, seeds, list(overrides))
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
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    strategies = _split(args.strategies, 'strategies')
    seeds = _split(args.seeds, 'seeds', int)
    get_config = load_config_module(args.config)
    _setup_logging()
    sweep(get_config, strategies, seeds, args.workdir, overrides, report=not args.no_report)
  except JaxdispError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    return e.exit_code
  return 0


if __name__ == '__main__':
  sys.exit(main())
