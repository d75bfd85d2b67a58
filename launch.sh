#!/usr/bin/env bash
# launch.sh -- run jaxdisp on a Cloud TPU VM through gcloud, or on this machine.
#
#   ./launch.sh --name my-tpu --zone us-central2-b --type v4-8 --spot create
#   ./launch.sh --name my-tpu --zone us-central2-b setup
#   ./launch.sh --name my-tpu --zone us-central2-b run --config configs/cifar10.py \
#       --workdir gs://my-bucket/c10 --config.train.epochs=3
#   ./launch.sh --name my-tpu --zone us-central2-b status
#   ./launch.sh fetch --workdir gs://my-bucket/c10 --dest results/
#   ./launch.sh --name my-tpu --zone us-central2-b delete
#   ./launch.sh local --config configs/demo.py --workdir /tmp/demo
#
# `./launch.sh --help` has the details; `--dry-run` prints every command instead of running it.
#
# Design notes:
# - setup copies this working tree (a tarball of the repo, without .git, workdirs/ and caches)
#   to ~/jaxdisp on every worker and runs `pip install -e ".[tfds]" "jax[tpu]"` there (tfds: the
#   documented runs read a prepared tfds dataset from the bucket), in a venv
#   (~/jaxdisp-venv, Python 3.11 via uv: jax needs Python >= 3.11, the TPU runtimes ship 3.10).
#   Copying, rather than cloning from git, also ships uncommitted changes and needs no access to
#   the repository from the TPU VM.
# - run starts the job on every worker with `--worker=all`, detached with nohup + setsid (log:
#   ~/jaxdisp-logs/run.log on each worker), so a dropped ssh connection does not stop it.
# - A gs:// workdir goes to jaxdisp.main as it is: process 0 writes the outputs there through
#   etils.epath (tf.io.gfile: setup installs TensorFlow with [tfds]), and every worker writes its
#   checkpoint shards to gs://.../checkpoints through orbax, so a re-created VM (spot preemption)
#   resumes from the bucket. Nothing is staged on the workers' disks.
# - Remote scripts use $HOME etc. in single quotes on purpose: they expand on the TPU VM.
# shellcheck disable=SC2016
set -euo pipefail

USAGE=''
read -r -d '' USAGE <<'EOF' || true
usage: ./launch.sh [flags] COMMAND [command flags]

Runs `python -m jaxdisp.main` on a Cloud TPU VM (or slice) through gcloud, or on this machine.

Commands:
  create         create the TPU VM (needs --name, --zone, --type; --version has a default per
                 type); arguments after `--` go to `gcloud compute tpus tpu-vm create` as they are
                 (e.g. -- --network=my-net --service-account=sa@project.iam.gserviceaccount.com)
  setup          copy this working tree to ~/jaxdisp on every worker and install it there:
                 `pip install -e ".[tfds]" "jax[tpu]"` in ~/jaxdisp-venv (made with uv, Python
                 $JAXDISP_TPU_PYTHON, default 3.11: jax needs >= 3.11, the TPU images have 3.10).
                 Rerun it after changing the code (it overwrites files, keeps workdirs).
  run --config FILE [--workdir DIR] [--config.key=value ...] [other jaxdisp.main flags]
                 run `python -m jaxdisp.main ...` on all workers (--worker=all), from ~/jaxdisp,
                 detached (nohup + setsid, log in ~/jaxdisp-logs/run.log on each worker): a
                 dropped ssh connection does not stop it. Refuses while a job is still running.
                 Every flag not listed here is passed to jaxdisp.main unchanged.
      --foreground      stay attached, stream the output, exit with the job's status
  status [--lines N]    the TPU's state, and on every worker whether the job runs + the last
                        N (5) lines of its log
  fetch --workdir DIR [--dest DIR]
                 copy a run's workdir into DEST (default .): `gcloud storage cp -r` for a gs://
                 workdir (no --name/--zone needed), `tpu-vm scp` from worker 0 otherwise
  delete [--yes] delete the TPU VM (--yes: without asking)
  local [jaxdisp.main flags]
                 run `python -m jaxdisp.main ...` on this machine (no gcloud needed; $JAXDISP_PYTHON
                 picks the interpreter, default `python`)

Flags, anywhere on the line (defaults from the environment variables in brackets):
  --name NAME     TPU VM name [JAXDISP_TPU_NAME]
  --zone ZONE     zone, e.g. us-central2-b [JAXDISP_TPU_ZONE]
  --type TYPE     accelerator type, e.g. v4-8, v5litepod-8, v6e-8 [JAXDISP_TPU_TYPE]
  --version V     TPU runtime version [JAXDISP_TPU_VERSION]; default by type: v2/v3/v4
                  tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                  v6e v2-alpha-tpuv6e
  --project P     Google Cloud project [JAXDISP_TPU_PROJECT]; default: gcloud's own setting
  --spot          create a spot VM [JAXDISP_TPU_SPOT=1]
  --preemptible   create a preemptible VM (the older kind of spot VM)
  --dry-run       print every command, one per line prefixed with '+ ', instead of running it
                  (gcloud need not be installed)
  -h, --help      this help

Workdirs (run, fetch): jaxdisp.main writes a gs://BUCKET/PATH workdir directly: its outputs
(results, TensorBoard, the label ledger, ...) and its checkpoints (gs://BUCKET/PATH/checkpoints,
written by every worker, which is what a multi-host slice -- v4-16 and up, v5litepod-16 and up --
needs: all workers run the job as one JAX program, each writing its own shards). Rerunning `run` on
a re-created VM (after a spot preemption) resumes from the bucket. The TPU VM's service account
needs write access to the bucket. One job per gs:// workdir: the workdir lock only stops a second
job on the same VM. Any other workdir is on the worker's disk, relative to ~/jaxdisp (single-host
types only, unless --config.checkpoint.dir points at a folder all workers share).

Errors (a missing gcloud, a missing or unknown flag, an unknown command) are one line
`error: ...` on stderr and exit status 2.
EOF

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

# One word, quoted for a POSIX shell only where needed.
shquote() {
  local s=$1 safe='^[A-Za-z0-9_./:=@%+,-]+$'
  if [[ -n $s && $s =~ $safe ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

join_quoted() {
  local out='' w
  for w in "$@"; do
    out+="${out:+ }$(shquote "$w")"
  done
  printf '%s' "$out"
}

DRY_RUN=0

# Runs a command, or with --dry-run only prints it. Real runs echo it to stderr first.
x() {
  if ((DRY_RUN)); then
    printf '+ %s\n' "$(join_quoted "$@")"
    return 0
  fi
  printf '+ %s\n' "$(join_quoted "$@")" >&2
  "$@"
}

is_true() {
  case ${1:-} in 1 | true | True | TRUE | yes | on) return 0 ;; *) return 1 ;; esac
}

# ------------------------------------------------------------------------------------------------
# Arguments

NAME=${JAXDISP_TPU_NAME:-}
ZONE=${JAXDISP_TPU_ZONE:-}
TYPE=${JAXDISP_TPU_TYPE:-}
VERSION=${JAXDISP_TPU_VERSION:-}
PROJECT=${JAXDISP_TPU_PROJECT:-}
SPOT=0
if is_true "${JAXDISP_TPU_SPOT:-}"; then SPOT=1; fi
PREEMPTIBLE=0
PY_VERSION=${JAXDISP_TPU_PYTHON:-3.11}

CMD=''
ARGS=()  # the command's own arguments
REST=()  # after `--`

while (($#)); do
  a=$1
  shift
  case $a in
    --name | --zone | --type | --accelerator-type | --version | --project)
      (($#)) || die "$a needs a value"
      set -- "$a=$1" "${@:2}"
      continue
      ;;
    --name=*) NAME=${a#*=} ;;
    --zone=*) ZONE=${a#*=} ;;
    --type=* | --accelerator-type=*) TYPE=${a#*=} ;;
    --version=*) VERSION=${a#*=} ;;
    --project=*) PROJECT=${a#*=} ;;
    --spot) SPOT=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      printf '%s\n' "$USAGE"
      exit 0
      ;;
    --)
      REST=("$@")
      break
      ;;
    *)
      if [[ -n $CMD ]]; then
        ARGS+=("$a")
      elif [[ $a == -* ]]; then
        die "unknown flag $a (see ./launch.sh --help)"
      else
        CMD=$a
      fi
      ;;
  esac
done

case $CMD in
  create | setup | run | status | fetch | delete | local) ;;
  '') die "no command given: one of create, setup, run, status, fetch, delete, local (see ./launch.sh --help)" ;;
  *) die "unknown command '$CMD': one of create, setup, run, status, fetch, delete, local" ;;
esac

no_rest() {
  ((${#REST[@]} == 0)) || die "$CMD takes no arguments after --"
}

need_name_zone() {
  [[ -n $NAME ]] || die "$CMD needs --name NAME (or JAXDISP_TPU_NAME)"
  [[ -n $ZONE ]] || die "$CMD needs --zone ZONE (or JAXDISP_TPU_ZONE)"
  local re='^[a-z]([-a-z0-9]*[a-z0-9])?$'
  [[ $NAME =~ $re ]] || die "--name=$NAME: a TPU name is lowercase letters, digits and hyphens, starting with a letter"
}

need_gcloud() {
  ((DRY_RUN)) && return 0
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login', or use --dry-run to preview the commands"
}

PROJECT_ARGS=()
gcloud_common() {
  if [[ -n $PROJECT ]]; then PROJECT_ARGS=("--project=$PROJECT"); fi
}

default_version() {
  case $1 in
    v2-* | v3-* | v4-*) printf 'tpu-ubuntu2204-base' ;;
    v5litepod-*) printf 'v2-alpha-tpuv5-lite' ;;
    v5p-*) printf 'v2-alpha-tpuv5' ;;
    v6e-*) printf 'v2-alpha-tpuv6e' ;;
    *) return 1 ;;
  esac
}

# ------------------------------------------------------------------------------------------------
# Commands

cmd_create() {
  ((${#ARGS[@]} == 0)) || die "create: unknown argument '${ARGS[0]}' (extra gcloud flags go after --)"
  need_name_zone
  [[ -n $TYPE ]] || die "create needs --type TYPE, e.g. v4-8, v5litepod-8, v6e-8 (or JAXDISP_TPU_TYPE)"
  if [[ $TYPE == v5e-* ]]; then
    die "--type=$TYPE: the accelerator type of TPU v5e is v5litepod-N, e.g. v5litepod-${TYPE#v5e-}"
  fi
  if [[ -z $VERSION ]]; then
    VERSION=$(default_version "$TYPE") || die "no default runtime for --type=$TYPE: pass --version (gcloud compute tpus tpu-vm versions list --zone=$ZONE)"
  fi
  ((SPOT && PREEMPTIBLE)) && die "--spot and --preemptible exclude each other"
  need_gcloud
  gcloud_common
  local cmd=(gcloud compute tpus tpu-vm create "$NAME" "--zone=$ZONE" "--accelerator-type=$TYPE"
    "--version=$VERSION")
  if ((SPOT)); then cmd+=(--spot); fi
  if ((PREEMPTIBLE)); then cmd+=(--preemptible); fi
  x "${cmd[@]}" ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} ${REST[@]+"${REST[@]}"}
}

TMP_DIR=''
cleanup() {
  if [[ -n $TMP_DIR ]]; then rm -rf "$TMP_DIR"; fi
}

cmd_setup() {
  ((${#ARGS[@]} == 0)) || die "setup: unknown argument '${ARGS[0]}'"
  no_rest
  need_name_zone
  need_gcloud
  gcloud_common
  local here repo tgz
  case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
  repo=$(cd "$here" && pwd)
  if ((DRY_RUN)); then
    tgz="${TMPDIR:-/tmp}/jaxdisp-src.tgz"
  else
    trap cleanup EXIT
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/jaxdisp-launch.XXXXXX")
    tgz="$TMP_DIR/jaxdisp-src.tgz"
  fi
  local remote
  remote='set -e; mkdir -p "$HOME/jaxdisp"; tar -xzf "$HOME/jaxdisp-src.tgz" -C "$HOME/jaxdisp"'
  remote+='; rm -f "$HOME/jaxdisp-src.tgz"'
  remote+='; if [ ! -x "$HOME/jaxdisp-venv/bin/python" ]; then'
  remote+=' python3 -m pip install --user -q uv || python3 -m pip install --user -q --break-system-packages uv'
  remote+='; "$HOME/.local/bin/uv" venv -q --seed --python '"$(shquote "$PY_VERSION")"' "$HOME/jaxdisp-venv"; fi'
  remote+='; cd "$HOME/jaxdisp"; "$HOME/jaxdisp-venv/bin/python" -m pip install -q -e ".[tfds]" "jax[tpu]"'
  remote+='; "$HOME/jaxdisp-venv/bin/python" -c "import jax, jaxdisp; print(\"jaxdisp ready, jax\", jax.__version__)"'
  x tar -czf "$tgz" --exclude=.git --exclude=workdirs --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=.pytest_cache --exclude=.venv --exclude=venv -C "$repo" .
  x gcloud compute tpus tpu-vm scp "$tgz" "$NAME:jaxdisp-src.tgz" --worker=all "--zone=$ZONE" \
    ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"}
  x gcloud compute tpus tpu-vm ssh "$NAME" "--zone=$ZONE" --worker=all \
    ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} "--command=$remote"
}

# Remote: is the job in ~/jaxdisp-logs/run.pid alive (a zombie no one has reaped yet is not)?
ALIVE='alive() { [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null || return 1; case "$(ps -o stat= -p "$(cat "$p")" 2>/dev/null)" in Z*) return 1 ;; esac; }; '

# The metadata server of a TPU VM knows the worker's number and the slice's workers.
METADATA='http://metadata.google.internal/computeMetadata/v1/instance/attributes'

# Whether the jaxdisp.main arguments name a checkpoint folder (--config.checkpoint.dir[=]...).
has_checkpoint_dir() {
  local a
  for a in "$@"; do
    [[ $a == --config.checkpoint.dir || $a == --config.checkpoint.dir=* ]] && return 0
  done
  return 1
}

cmd_run() {
  local config='' workdir='' have_workdir=0 foreground=0 pass=() a
  set -- ${ARGS[@]+"${ARGS[@]}"}
  while (($#)); do
    a=$1
    shift
    case $a in
      --config | --workdir)
        (($#)) || die "$a needs a value"
        set -- "$a=$1" "${@:2}"
        continue
        ;;
      --config=*)
        config=${a#*=}
        pass+=("$a")
        ;;
      --workdir=*)
        workdir=${a#*=}
        have_workdir=1
        ;;
      --sync-every | --sync-every=*)
        die "--sync-every is gone: jaxdisp.main writes gs:// workdirs directly, nothing is mirrored"
        ;;
      --foreground) foreground=1 ;;
      *) pass+=("$a") ;;
    esac
  done
  pass+=(${REST[@]+"${REST[@]}"})
  need_name_zone
  [[ -n $config ]] || die "run needs --config FILE (e.g. --config configs/cifar10.py)"
  local config_file=${config%%:*}  # absl config files may take an argument: file.py:arg
  if [[ $config_file != /* ]]; then
    local here repo
    case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
    repo=$(cd "$here" && pwd)
    [[ -f $repo/$config_file ]] ||
      die "--config=$config: no such file in $repo (run reads it from the copy that setup installed, relative to the repo root)"
  fi
  if ((have_workdir)) && [[ -z $workdir ]]; then die "--workdir is empty"; fi
  need_gcloud
  gcloud_common

  local py='"$HOME/jaxdisp-venv/bin/python" -m jaxdisp.main'
  local main_args
  main_args=$(join_quoted ${pass[@]+"${pass[@]}"})
  # On SIGTERM (a spot VM shutting down) this script waits for jaxdisp.main, which checkpoints and
  # exits, and logs its exit status.
  local inner='trap "echo launch.sh: got SIGTERM, waiting for jaxdisp.main" TERM; cd "$HOME/jaxdisp" || exit 1; '
  local wd_arg=''
  if [[ $workdir == gs://* ]]; then
    local rel=${workdir#gs://}
    while [[ $rel == */ ]]; do rel=${rel%/}; done
    [[ -n $rel && $rel != /* ]] || die "--workdir=$workdir: expected gs://BUCKET/PATH"
    wd_arg=$(shquote "--workdir=gs://$rel")
  elif ((have_workdir)); then
    if [[ $workdir == \~ ]]; then
      wd_arg='--workdir="$HOME"'
    elif [[ $workdir == \~/* ]]; then
      wd_arg='--workdir="$HOME"/'"$(shquote "${workdir#\~/}")"
    else
      wd_arg=$(shquote "--workdir=$workdir")
    fi
  fi
  inner+="$py${main_args:+ $main_args}${wd_arg:+ $wd_arg}"'; rc=$?; '
  inner+='echo "launch.sh: jaxdisp.main exited with status $rc"; exit "$rc"'

  # A multi-host slice needs one checkpoint folder that every worker sees (gs:// or a shared
  # filesystem); a workdir on the workers' own disks gets a warning.
  local warn=''
  if [[ $workdir != gs://* ]] && ! has_checkpoint_dir ${pass[@]+"${pass[@]}"}; then
    warn='n=$(curl -sf -m 5 -H "Metadata-Flavor: Google" '"$METADATA"'/worker-network-endpoints 2>/dev/null | tr "," "\n" | grep -c .); '
    warn+='if [ "${n:-0}" -gt 1 ]; then echo "$(hostname): warning: this slice has $n workers and the workdir is on each worker'"'"'s own disk, but orbax needs one checkpoint folder that every worker sees: use a gs:// workdir, --config.checkpoint.dir=gs://... or a shared filesystem" >&2; fi; '
  fi

  local remote
  if ((foreground)); then
    remote="$warn$inner"
  else
    remote='mkdir -p "$HOME/jaxdisp-logs" || exit 1; l="$HOME/jaxdisp-logs/run.log"; p="$HOME/jaxdisp-logs/run.pid"; '
    remote+="$ALIVE"'if alive; then echo "$(hostname): error: a jaxdisp job is already running (pid $(cat "$p")); see ./launch.sh status" >&2; exit 1; fi; '
    remote+="$warn"
    remote+='echo "=== $(date -u) launch.sh run" >> "$l"; '
    remote+='nohup setsid bash -c '"$(shquote "$inner")"' >> "$l" 2>&1 < /dev/null & echo $! > "$p"; '
    remote+='echo "$(hostname): started jaxdisp.main (pid $!), log: $l"'
  fi
  x gcloud compute tpus tpu-vm ssh "$NAME" "--zone=$ZONE" --worker=all \
    ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} "--command=$remote"
  if ((!foreground && !DRY_RUN)); then
    printf 'started; follow it with: ./launch.sh --name %s --zone %s status\n' "$(shquote "$NAME")" "$(shquote "$ZONE")" >&2
  fi
}

cmd_status() {
  local lines=5 a
  set -- ${ARGS[@]+"${ARGS[@]}"}
  while (($#)); do
    a=$1
    shift
    case $a in
      --lines)
        (($#)) || die "--lines needs a value"
        lines=$1
        shift
        ;;
      --lines=*) lines=${a#*=} ;;
      *) die "status: unknown argument '$a'" ;;
    esac
  done
  [[ $lines =~ ^[0-9]+$ ]] || die "--lines=$lines: a number of lines"
  no_rest
  need_name_zone
  need_gcloud
  gcloud_common
  local remote
  remote='l="$HOME/jaxdisp-logs/run.log"; p="$HOME/jaxdisp-logs/run.pid"; h=$(hostname); '
  remote+="$ALIVE"'if alive; then echo "$h: jaxdisp running (pid $(cat "$p"))"; '
  remote+='elif [ -f "$l" ]; then echo "$h: jaxdisp not running"; else echo "$h: no job started"; fi; '
  remote+='if [ -f "$l" ] && [ '"$lines"' -gt 0 ]; then tail -n '"$lines"' "$l"; fi'
  x gcloud compute tpus tpu-vm describe "$NAME" "--zone=$ZONE" ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} \
    '--format=table(name.basename(), state, acceleratorType, runtimeVersion, health)'
  x gcloud compute tpus tpu-vm ssh "$NAME" "--zone=$ZONE" --worker=all \
    ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} "--command=$remote"
}

cmd_fetch() {
  local workdir='' dest='.' a
  set -- ${ARGS[@]+"${ARGS[@]}"}
  while (($#)); do
    a=$1
    shift
    case $a in
      --workdir | --dest)
        (($#)) || die "$a needs a value"
        set -- "$a=$1" "${@:2}"
        continue
        ;;
      --workdir=*) workdir=${a#*=} ;;
      --dest=*) dest=${a#*=} ;;
      *) die "fetch: unknown argument '$a'" ;;
    esac
  done
  no_rest
  [[ -n $workdir ]] || die "fetch needs --workdir DIR (the run's workdir: gs://BUCKET/PATH or a path on the TPU VM)"
  [[ -n $dest ]] || die "--dest is empty"
  if [[ $workdir == gs://* ]]; then
    local rel=${workdir#gs://}
    while [[ $rel == */ ]]; do rel=${rel%/}; done
    [[ -n $rel && $rel != /* ]] || die "--workdir=$workdir: expected gs://BUCKET/PATH"
    local gs="gs://$rel"
    need_gcloud
    gcloud_common
    x mkdir -p "$dest"
    x gcloud storage cp -r "$gs" "$dest" ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"}
  else
    need_name_zone
    need_gcloud
    gcloud_common
    local remote_path
    while [[ $workdir == ?*/ ]]; do workdir=${workdir%/}; done
    case $workdir in
      /*) remote_path=$workdir ;;
      \~) die "--workdir=~: name the run's directory" ;;
      \~/*) remote_path=${workdir#\~/} ;;  # scp paths are relative to the home directory
      *) remote_path="jaxdisp/$workdir" ;;   # run starts jaxdisp.main in ~/jaxdisp
    esac
    x mkdir -p "$dest"
    x gcloud compute tpus tpu-vm scp --recurse "$NAME:$remote_path" "$dest" --worker=0 "--zone=$ZONE" \
      ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"}
  fi
}

cmd_delete() {
  local yes=0 a
  for a in ${ARGS[@]+"${ARGS[@]}"}; do
    case $a in
      --yes | -y) yes=1 ;;
      *) die "delete: unknown argument '$a'" ;;
    esac
  done
  no_rest
  need_name_zone
  need_gcloud
  gcloud_common
  local cmd=(gcloud compute tpus tpu-vm delete "$NAME" "--zone=$ZONE")
  if ((yes)); then cmd+=(--quiet); fi
  x "${cmd[@]}" ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"}
}

cmd_local() {
  local cmd=("${JAXDISP_PYTHON:-python}" -m jaxdisp.main ${ARGS[@]+"${ARGS[@]}"} ${REST[@]+"${REST[@]}"})
  if ((DRY_RUN)); then
    x "${cmd[@]}"
  else
    exec "${cmd[@]}"
  fi
}

"cmd_$CMD"
