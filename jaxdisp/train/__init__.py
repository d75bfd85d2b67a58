"""Training: module-level steps over explicit state, jitted by the caller.

Everything a compiled function needs to know that is not an array -- the model, the optimizer,
the batch size, which epochs record the pool -- is a frozen :class:`TrainSetup`; the steps take it
as their first argument and the caller closes over it (``jax.jit(functools.partial(train_epoch,
setup), donate_argnums=...)``; :func:`compile_steps` does exactly that for a run).

An epoch is ``begin`` (learning rate, shuffle), the optimizer steps over the labeled set, and
``end`` (on recorded epochs, an eval-mode pass over the unlabeled pool into the prediction history
and the running statistics). The step loop runs on device (TPU/GPU: one compiled call per epoch)
or from the host (CPU). The labeled set and the pool are fixed-capacity index buffers plus a
count, so a growing labeled set reuses the compiled epoch (see :func:`labeled_capacity`). State,
history and statistics are donated, so they are updated in place.

The package by role (each module's docstring says more):

* ``state``: :class:`TrainState`, :class:`TrainSetup`, the optimizer and its schedule, a fresh
  model, the index buffers;
* ``task_loss``: what a step minimises (``Objective``) and the task loss;
* ``steps``: the single model's steps (one optimizer step, an epoch's begin and steps, the
  test-set evaluation);
* ``metrics``: an epoch's running sums and metrics, and the NaN/divergence policy;
* ``recording``: the prediction history and the running statistics (:data:`STATS`), and the
  epoch's end;
* ``members``: K independently initialised models trained as one program
  (``Strategy.members``);
* ``aux_head``: an auxiliary head trained alongside the task model (``Strategy.aux_head``): a
  loss wrapped around the task loss, the same steps;
* ``loop``: the one step loop, on device or from the host (VAAL's training runs on it too);
* ``program``: the setup of a config and the jitted steps of a run.

Every name other code uses is re-exported here (``from jaxdisp import train; train.X``).
"""

from jaxdisp.train.state import (
    MIN_BUCKET, TrainSetup, TrainState, index_buffer, init_state, labeled_capacity,
    lr_for_epoch, make_optimizer, pool_capacity, variables)
from jaxdisp.train.task_loss import TASK_LOSS, Objective, TaskLoss, Terms, cross_entropy
from jaxdisp.train.metrics import (
    DIVERGENCE_FACTOR, EpochMetrics, StepSums, diverged, epoch_metrics, epoch_problem)
from jaxdisp.train.steps import (
    accuracy_on_test, epoch_begin, epoch_step, evaluate, model_inputs, train_step)
from jaxdisp.train.recording import (
    STATS, Recording, empty_history, empty_stats, epoch_end, history_dtype, history_sharding,
    record_epoch, record_pool)
from jaxdisp.train.members import (
    MEMBER_MAPS, evaluate_members, init_members, member_keys, member_probs, members_epoch_begin,
    members_epoch_end, members_epoch_step, members_train_epoch, over_members, resolve_member_map)
from jaxdisp.train.aux_head import AuxHead, ClassifierWithAux, with_aux_head
from jaxdisp.train.program import (
    Steps, compile_steps, make_setup, shards_train_images, step_loop, train_epoch)
from jaxdisp.train import loop  # pylint: disable=g-bad-import-order

__all__ = [
    'AuxHead', 'ClassifierWithAux', 'DIVERGENCE_FACTOR', 'EpochMetrics', 'MEMBER_MAPS',
    'MIN_BUCKET', 'Objective', 'Recording', 'STATS', 'StepSums', 'Steps', 'TASK_LOSS',
    'TaskLoss', 'Terms', 'TrainSetup', 'TrainState', 'accuracy_on_test', 'compile_steps',
    'cross_entropy', 'diverged', 'empty_history', 'empty_stats', 'epoch_begin', 'epoch_end',
    'epoch_metrics', 'epoch_problem', 'epoch_step', 'evaluate', 'evaluate_members',
    'history_dtype', 'history_sharding', 'index_buffer', 'init_members', 'init_state',
    'labeled_capacity', 'loop', 'lr_for_epoch', 'make_optimizer', 'make_setup', 'member_keys',
    'member_probs', 'members_epoch_begin', 'members_epoch_end', 'members_epoch_step',
    'members_train_epoch', 'model_inputs', 'over_members', 'pool_capacity', 'record_epoch',
    'record_pool', 'resolve_member_map', 'shards_train_images', 'step_loop', 'train_epoch',
    'train_step', 'variables', 'with_aux_head']
