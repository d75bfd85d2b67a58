"""What the command lines share: loading a config file, its ``--config.KEY=VALUE`` overrides, and
one-line errors.

:func:`load_config` is the one way jaxdisp loads a config file (``jaxdisp.main``,
``jaxdisp.sweep``, the tests and the benchmarks); a config file that starts from another one
calls :func:`load_config_beside`. :func:`parse_value` is the one parser of an override: the raw
text of ``--config.KEY=VALUE`` (``jaxdisp.main`` and ``jaxdisp.sweep``) or ``--set KEY=VALUE``
(``jaxdisp.sweep``) becomes a value of the type of the key's current value:

* bool: ``true``/``t``/``1``/``yes`` or ``false``/``f``/``0``/``no`` (any case); a bare
  ``--config.KEY`` is true and ``--noconfig.KEY`` false;
* int: decimal, ``1_000`` or ``0x``/``0o``/``0b``; float: anything ``float()`` reads;
* tuple: a Python literal, ``(0.6,0.8)``, ``0.6,0.8`` or ``[0.6,0.8]``, one element alone
  (``0.5``), elements of the types of the default's; a key repeated on one command line adds its
  elements (``--config.KEY=0.6 --config.KEY=0.8``), as in ml_collections' config flags;
* str: the text as given;
* a group: a dict literal sets the keys it names (``--config.oracle="{'kind': 'files'}"``).

Every mistake is one :class:`~jaxdisp.errors.ConfigError` line: an unknown key, a group given a
value, a value that is not of the key's type. This module imports no JAX: ``jaxdisp.main``
parses its flags before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import sys

import ml_collections

from jaxdisp import config_checks
from jaxdisp.errors import ConfigError, JaxdispError

# Logging of these libraries is reduced to warnings (orbax, clu and tensorstore log every write).
_NOISY = tuple(f'{os.sep}{name}{os.sep}' for name in ('orbax', 'clu', 'tensorstore'))
_TRUE, _FALSE = ('true', 't', '1', 'yes'), ('false', 'f', '0', 'no')
# --config.KEY[=VALUE], -config.KEY..., --noconfig.KEY (absl's form of a false boolean flag)
_OVERRIDE = re.compile(r'^--?(no)?config\.([^=]*)(=(.*))?$', re.DOTALL)
_CONFIG_FLAG = re.compile(r'^--?config(=(.*))?$', re.DOTALL)


def load_config(path: str) -> ml_collections.ConfigDict:
  """A fresh ConfigDict: ``get_config()`` of the config file at ``path``.

  ``FILE.py:ARG`` (when no file is named so) passes ``ARG`` to ``get_config``, as ml_collections'
  config flags do. A missing file, a file that does not run, no ``get_config`` or a
  ``get_config`` that fails or returns no ConfigDict is one ConfigError line.
  """
  file, args = path, ()
  if not os.path.isfile(path) and ':' in path:
    file, arg = path.split(':', 1)
    args = (arg,)
  if not os.path.isfile(file):
    raise ConfigError(f'cannot load --config: {file or "(empty)"} is not a file')
  name = 'jaxdisp_config_' + re.sub(r'\W', '_', os.path.splitext(os.path.basename(file))[0])
  try:
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
  except BaseException as e:
    sys.modules.pop(name, None)
    if isinstance(e, JaxdispError) or not isinstance(e, Exception):
      raise
    raise ConfigError(f'cannot load --config {path}: {_one_line(e)}') from None
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ConfigError(f'cannot load --config {path}: it defines no get_config()')
  try:
    cfg = get_config(*args)
  except JaxdispError:  # e.g. load_config_beside's own one-line error
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'cannot load --config {path}: get_config() raised {_one_line(e)}') from None
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f'cannot load --config {path}: get_config() returned a '
                      f'{type(cfg).__name__}, not a ConfigDict')
  return cfg


def load_config_beside(config_file: str, name: str) -> ml_collections.ConfigDict:
  """The config of the config file ``name`` in the folder of ``config_file``: how a config file
  starts from another one (``config = cli.load_config_beside(__file__, 'demo.py')``)."""
  return load_config(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def _one_line(e: BaseException) -> str:
  return ' '.join(f'{type(e).__name__}: {e}'.split())


def lookup(cfg, key: str):
  """The value (or group) at dotted ``key``; an unknown key is a ConfigError."""
  node, parts = cfg, key.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"unknown config key '{'.'.join(parts[:i + 1])}' "
                        '(see jaxdisp/config_lib.py)')
    node = node[part]
  return node


def parse_value(key: str, raw: str, current):
  """``raw`` (the text after ``--config.KEY=``) as a value of the type of ``current``."""
  def bad(what):
    return ConfigError(f'--config.{key}={raw}: expected {what}')
  if isinstance(current, bool):
    low = raw.strip().lower()
    if low not in _TRUE + _FALSE:
      raise bad('bool (true or false)')
    return low in _TRUE
  if isinstance(current, int):
    try:
      return int(raw)
    except ValueError:
      pass
    try:
      return int(raw, 0)  # 0x10, 0o17, 0b101
    except ValueError:
      raise bad('int') from None
  if isinstance(current, float):
    try:
      return float(raw)
    except ValueError:
      raise bad('float') from None
  if isinstance(current, (tuple, list)):
    return type(current)(_parse_tuple(raw, current, bad))
  if isinstance(current, str):
    return raw
  try:  # a key without a typed default (None): a Python literal, else the text
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def _parse_tuple(raw: str, current, bad) -> tuple:
  """ml_collections' tuple syntax, each element of a type of ``current``'s elements."""
  example = f'a tuple, e.g. {repr(tuple(current)).replace(" ", "")}'
  try:
    value = ast.literal_eval(raw)
  except ValueError:  # a bare word: one string element
    value = raw
  except SyntaxError:
    if ',' in raw or ' ' in raw:
      raise bad(example) from None
    value = raw  # a path-like word, e.g. a/b*
  value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  wrong = config_checks.wrong_element(value, current)
  if wrong:
    raise bad(f'{example} (elements: {wrong[0]}; got {wrong[1]!r})')
  return value


def apply_overrides(cfg, overrides) -> None:
  """Sets each ``(key, raw)`` of ``overrides`` on ``cfg``, ``raw`` parsed by :func:`parse_value`.

  A tuple key named again adds its elements to those the earlier overrides gave it.
  """
  before = {}  # tuple key -> its value before these overrides (the elements' types)
  for key, raw in overrides:
    current = lookup(cfg, key)
    if isinstance(current, ml_collections.ConfigDict):
      _set_group(cfg, key, raw, current)
      continue
    if isinstance(current, tuple) and key in before:  # named again: add the elements
      value = current + parse_value(key, raw, before[key])
    else:
      value = parse_value(key, raw, current)
      if isinstance(current, tuple):
        before[key] = current
    parent, _, leaf = key.rpartition('.')
    (lookup(cfg, parent) if parent else cfg)[leaf] = value


def _set_group(cfg, key: str, raw: str, group) -> None:
  """``--config.GROUP="{'k': v, ...}"`` sets ``GROUP.k``; any other value is an error."""
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = None
  if not isinstance(value, dict):
    keys = ', '.join(f'{key}.{k}' for k in _flat_keys(group))
    raise ConfigError(f'--config.{key} is a group of keys: set one of them ({keys})')
  apply_overrides(cfg, [(f'{key}.{k}', v if isinstance(v, str) else repr(v))
                        for k, v in value.items()])


def _flat_keys(group, prefix: str = '') -> list[str]:
  out = []
  for k, v in group.items():
    out += (_flat_keys(v, f'{prefix}{k}.') if isinstance(v, ml_collections.ConfigDict)
            else [f'{prefix}{k}'])
  return out


def split_overrides(args, cfg) -> tuple[list[str], list[tuple[str, str]]]:
  """(``args`` without their config overrides, the overrides as ``[(key, raw)]`` in order).

  An override is ``--config.KEY=VALUE``, ``--config.KEY VALUE`` (a key that is not a bool),
  ``--config.KEY`` (a bool: true) or ``--noconfig.KEY`` (a bool: false); one dash works too.
  """
  rest, out, i = [], [], 0
  while i < len(args):
    m = _OVERRIDE.match(args[i])
    negated, key, has_value, raw = m.groups() if m else (None, None, None, None)
    if not m:
      rest.append(args[i])
    elif negated:
      if has_value or not isinstance(lookup(cfg, key), bool):
        raise ConfigError(f'{args[i]}: --noconfig.KEY takes a bool key and no value')
      out.append((key, 'false'))
    elif has_value:
      out.append((key, raw))
    elif isinstance(current := lookup(cfg, key), bool):
      out.append((key, 'true'))
    elif isinstance(current, ml_collections.ConfigDict):
      out.append((key, ''))  # applying it says that it is a group
    elif i + 1 < len(args):
      i += 1
      out.append((key, args[i]))
    else:
      raise ConfigError(f'--config.{key} needs a value: --config.{key}=VALUE')
    i += 1
  return rest, out


def config_from_argv(argv) -> tuple[ml_collections.ConfigDict | None, list[str], list]:
  """(the config ``--config FILE`` in ``argv`` names, ``argv`` without its ``--config.KEY``
  overrides, those overrides as ``[(key, raw)]``); the overrides are not applied yet.

  Without ``--config``: (None, ``argv``, []), for the argument parser to report what is missing.
  """
  path = None
  for i, arg in enumerate(argv):
    m = _CONFIG_FLAG.match(arg)
    if m:
      path = m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  if path is None:
    if any(_OVERRIDE.match(a) for a in argv):
      raise ConfigError('--config.KEY=VALUE overrides need --config FILE')
    return None, list(argv), []
  cfg = load_config(path)
  rest, overrides = split_overrides(argv, cfg)
  return cfg, rest, overrides


def check_utf8_path(path, what: str = '--workdir') -> None:
  """Refuses (one ConfigError line) a path that is not valid UTF-8 (bytes Python could only
  decode with surrogates): checkpoints are written through tensorstore, which takes UTF-8 paths
  only, and the run would fail at its first checkpoint instead of before any work."""
  try:
    os.fspath(path).encode('utf-8')
  except UnicodeEncodeError as e:
    shown = os.fsencode(path).decode('utf-8', 'backslashreplace')
    byte = ord(os.fspath(path)[e.start]) - 0xDC00  # surrogateescape: U+DCxx is byte xx
    raise ConfigError(f'the {what} path {shown} is not valid UTF-8 (byte 0x{byte:02x}); jaxdisp '
                      'writes its files (checkpoints through tensorstore) only to UTF-8 paths: '
                      f'rename the folder or use another {what}') from None


def quiet_libraries(record) -> bool:
  """absl log filter: drops INFO chatter of orbax/clu/tensorstore (warnings still show)."""
  return record.levelno >= 30 or not any(n in record.pathname for n in _NOISY)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with one-line errors (``error: ...``, exit 2), like every jaxdisp tool."""

  def error(self, message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
