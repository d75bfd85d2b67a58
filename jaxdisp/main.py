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

from jaxdisp import cli
from jaxdisp.errors import JaxdispError, Preempted

_CONFIG = flags.DEFINE_string('config', None, 'Experiment config file (configs/*.py); '
                              '--config.KEY=VALUE sets one of its keys (jaxdisp.cli).')
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


def main(argv, cfg):
  from jaxdisp import experiment, parallel  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(cli.quiet_libraries)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    experiment.run(cfg, _WORKDIR.value or experiment.default_workdir(cfg))
  except JaxdispError as e:
    fail(str(e))
  except Preempted as e:
    fail(str(e), e.exit_code, prefix='stopped')


def parse_flags(argv):
  """(absl's remaining argv, the config): ``--config`` loaded by :func:`jaxdisp.cli.load_config`
  with its ``--config.KEY=VALUE`` overrides set, every mistake one line."""
  try:
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    cfg, rest, overrides = cli.config_from_argv(argv[1:])
    if cfg is not None:
      cli.apply_overrides(cfg, overrides)
      cfg.lock()  # no new keys from here on
    return flags.FLAGS(argv[:1] + rest), cfg
  except JaxdispError as e:
    fail(str(e))
  except Exception as e:  # pylint: disable=broad-except  (flags.Error, IOError, ...)
    fail(' '.join(str(e).split()) or type(e).__name__)


def run():
  parsed = {}

  def parse(argv):
    argv, parsed['config'] = parse_flags(argv)
    return argv

  app.run(lambda argv: main(argv, parsed['config']), flags_parser=parse)


if __name__ == '__main__':
  run()
