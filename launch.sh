#!/usr/bin/env bash
# launch.sh -- run jaxdisp on a Cloud TPU VM / multi-host slice.
#
# STUB: the scale-out work (multi-host jax.distributed, GCS workdirs, TPU VM creation) is a later
# issue. Until then this script only runs the job on the local machine's devices:
#
#   ./launch.sh --config configs/cifar10.py --workdir /tmp/c10 [--config.key=value ...]
#
# What it will do: create (or reuse) a TPU VM / slice with gcloud, install jaxdisp on every host,
# start `python -m jaxdisp.main` on all hosts at once (jax.distributed.initialize), with the
# workdir on a gs:// bucket so a preempted job is resumed by rerunning the same command.
set -euo pipefail
cd "$(dirname "$0")"
echo "launch.sh: stub -- running locally on this machine's devices (see README, 'Scaling out')" >&2
exec python -m jaxdisp.main "$@"
