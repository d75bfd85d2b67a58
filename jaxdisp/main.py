r"""Runs an active-learning experiment: flags in, exit status out.

  python -m jaxdisp.main --config configs/demo.py --workdir /tmp/demo
  python -m jaxdisp.main --config configs/cifar10.py --workdir /tmp/c10 \
      --config.dataset.source=folder --config.dataset.root=../shared/datasets/cifar10-jpg

Rerunning the same command on the same ``--workdir`` resumes where it stopped (mid-round
included); on a finished workdir it prints the summary and exits 0. A bad input prints one
``error: ...`` line and exits with status 2; a stop signal exits with ``128 + signal``. The
experiment itself is :func:`jaxdisp.experiment.run`.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdisp.errors import JaxdispError, Preempted

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


def fail(message: str, status: int = 2, prefix: str = 'error') -> None:
  print(f'{prefix}: {message}', file=sys.stderr)
  sys.exit(status)


def main(argv):
  from jaxdisp import experiment, io_utils, parallel  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(io_utils.quiet_libraries)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    cfg = _CONFIG.value
    cfg.get('seed')  # config_flags defers a load failure to the first access
  except Exception as e:  # pylint: disable=broad-except
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(f'cannot load --config: {lines[-1] if lines else type(e).__name__}')
  try:
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    experiment.run(cfg, _WORKDIR.value or experiment.default_workdir(cfg))
  except JaxdispError as e:
    fail(str(e))
  except Preempted as e:
    fail(str(e), e.exit_code, prefix='stopped')


def _parse_flags(argv):
  """absl flag parsing with one-line errors (bad --config file, unknown or ill-typed keys)."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (flags.Error, KeyError, IOError, ...)
    msg = ' '.join(str(e).split()) or type(e).__name__
    if isinstance(e, (AttributeError, KeyError)):
      msg = f'unknown config key {msg.strip(chr(34) + chr(39))!r} (see jaxdisp/config_lib.py)'
    elif 'as a ConfigDict' in msg:  # --config.oracle=files: a group, not a value
      from jaxdisp import config_lib  # pylint: disable=g-import-not-at-top
      group = msg.split('=', 1)[0].removeprefix('flag ')
      keys = [k for k in config_lib.flatten(config_lib.base_config())
              if k.startswith(group.removeprefix('--config.') + '.')]
      msg = f'{group} is a group of keys: set one of them ({", ".join(keys)})'
    fail(msg)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
