r"""Linear-probe accuracy of an embeddings ``.npz``: every training label, the whole test split.

  python benchmarks/linear_probe.py --npz /work/cifar10_kmeans.npz
  python benchmarks/linear_probe.py --npz E.npz --pca_dims 0,1024,256 --loss l2svm
  python benchmarks/linear_probe.py --quick     # a tiny synthetic .npz, all features and 8 PCA axes

The features are standardised with the training rows' mean and standard deviation (and, for each
``--pca_dims`` entry above 0, projected on the first principal axes of the standardised training
rows, :func:`jaxdisp.embed.fit_pca`). The head is linear, ``W x + b``, trained full-batch with
L-BFGS (``optax.lbfgs``, at most ``--max_iters`` iterations, float32 on the host's devices) on
the mean loss plus ``lambda / 2 * ||W||^2``: ``--loss logistic`` (multinomial logistic
regression, the default) or ``--loss l2svm`` (one-vs-all squared hinge, the L2-SVM of Coates,
Lee & Ng, AISTATS 2011). ``lambda`` is chosen from ``--lambdas`` by accuracy on a held-out
``--val_fraction`` of the training rows (drawn from ``--seed``); the head is then trained again on
every training row with that ``lambda`` and scored once on the test rows (a single ``--lambdas``
value: no search, that one fit). Writes
``<out>/linear_probe[_quick].json`` (or ``--name``) with the accuracies, the chosen ``lambda``s,
the seconds, the file's size and its ``embed_config``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

PAPER = {'accuracy': 0.796, 'centroids': 4000, 'stride': 1, 'classifier': 'L2-SVM',
         'accuracy_1600': 0.779,
         'source': 'Coates, Lee & Ng, AISTATS 2011, Table 1 (K-means triangle, 4,000 and 1,600 '
                   'features)'}


def standardize(x_train, x_test):
  from jaxdisp import embed  # pylint: disable=g-import-not-at-top
  mean, std = embed.standardize_stats(x_train)
  mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
  return (x_train.astype(np.float32) - mean) * scale, (x_test.astype(np.float32) - mean) * scale


def make_loss(kind: str, num_classes: int):
  """The mean loss of a linear head plus ``lam / 2 * ||W||^2``, as ``loss(params, *, x, y, lam)``
  (keyword data, as optax's line search passes them)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def loss(params, *, x, y, lam):
    logits = x @ params['w'] + params['b']
    if kind == 'logistic':
      data = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
    else:  # one-vs-all squared hinge
      sign = 2.0 * jax.nn.one_hot(y, num_classes) - 1.0
      data = jnp.mean(jnp.sum(jnp.maximum(0.0, 1.0 - sign * logits) ** 2, -1))
    return data + 0.5 * lam * jnp.sum(params['w'] ** 2)

  return loss


@functools.lru_cache(maxsize=None)
def lbfgs_step(kind: str, num_classes: int):
  """(optimizer, one jitted L-BFGS step ``(params, state, x, y, lam) -> (params, state, loss,
  gradient norm)``), compiled once per data shape and reused for every lambda."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  loss = make_loss(kind, num_classes)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def step(params, state, x, y, lam):
    value, grad = value_and_grad(params, x=x, y=y, lam=lam, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss,
                                x=x, y=y, lam=lam)
    return optax.apply_updates(params, updates), state, value, optax.tree.norm(grad)

  return opt, step


def fit(x, y, num_classes: int, lam: float, kind: str, max_iters: int, tol: float = 1e-5):
  """(params, iterations, final loss, final gradient norm) of full-batch L-BFGS from zero
  weights; stops early once the gradient norm is below ``tol`` (checked every 25 steps)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  opt, step = lbfgs_step(kind, num_classes)
  x, y, lam = jnp.asarray(x), jnp.asarray(y), jnp.float32(lam)
  params = {'w': jnp.zeros((x.shape[1], num_classes), jnp.float32),
            'b': jnp.zeros((num_classes,), jnp.float32)}
  state = opt.init(params)
  value = gnorm = float('nan')
  it = 0
  for it in range(1, max_iters + 1):
    params, state, value, gnorm = step(params, state, x, y, lam)
    if it % 25 == 0 and float(gnorm) < tol:
      break
  return params, it, float(value), float(gnorm)


def accuracy(params, x, y) -> float:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  pred = np.asarray(jnp.argmax(jnp.asarray(x) @ params['w'] + params['b'], -1))
  return float((pred == np.asarray(y)).mean())


def probe(x_train, y_train, x_test, y_test, lambdas, kind, max_iters, val_fraction, seed):
  """Chooses lambda on a held-out part of the training rows, refits on all of them (one lambda:
  no search, the one fit on all of them)."""
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(y_train))
  n_val = int(round(val_fraction * len(y_train))) if len(lambdas) > 1 else 0
  val, fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
  search = []
  for lam in (lambdas if n_val else ()):
    t = time.perf_counter()
    params, iters, value, gnorm = fit(x_train[fit_rows], y_train[fit_rows], num_classes, lam,
                                      kind, max_iters)
    search.append({'lambda': lam, 'val_accuracy': accuracy(params, x_train[val], y_train[val]),
                   'iterations': iters, 'loss': value, 'grad_norm': gnorm,
                   'seconds': round(time.perf_counter() - t, 1)})
    print(f'  lambda {lam:g}: val accuracy {search[-1]["val_accuracy"]:.4f} '
          f'({iters} iterations, {search[-1]["seconds"]:.0f} s)', flush=True)
  best = max(search, key=lambda r: (r['val_accuracy'], r['lambda'])) if search else {
      'lambda': lambdas[0]}
  t = time.perf_counter()
  params, iters, value, gnorm = fit(x_train, y_train, num_classes, best['lambda'], kind,
                                    max_iters)
  return {'lambda': best['lambda'], 'search': search, 'val_rows': int(n_val),
          'train_accuracy': accuracy(params, x_train, y_train),
          'test_accuracy': accuracy(params, x_test, y_test), 'iterations': iters, 'loss': value,
          'grad_norm': gnorm, 'refit_seconds': round(time.perf_counter() - t, 1)}


def quick_npz(path: str) -> None:
  """A tiny synthetic embeddings file: 10 Gaussian classes in 32 dimensions."""
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(10, 32)) * 0.6
  def split(n):
    y = rng.integers(0, 10, n)
    return (centres[y] + rng.normal(size=(n, 32))).astype(np.float16), y.astype(np.int32)
  x_train, y_train = split(600)
  x_test, y_test = split(200)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
           class_names=np.array([f'c{i}' for i in range(10)]))


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--npz', default='', help='the embeddings file (required unless --quick)')
  p.add_argument('--pca_dims', default='0', help='comma-separated; 0 = every feature')
  p.add_argument('--loss', choices=('logistic', 'l2svm'), default='logistic')
  p.add_argument('--lambdas', default='3e-4,1e-3,3e-3')
  p.add_argument('--max_iters', type=int, default=300)
  p.add_argument('--val_fraction', type=float, default=0.1)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--name', default='linear_probe', help='the JSON is <out>/<name>[_quick].json')
  args = p.parse_args(argv)
  _common.quiet_logs()
  if args.quick:
    import tempfile  # pylint: disable=g-import-not-at-top
    args.npz = args.npz or os.path.join(tempfile.mkdtemp(), 'quick.npz')
    quick_npz(args.npz)
    args.max_iters = min(args.max_iters, 50)
    args.pca_dims = '0,8' if args.pca_dims == '0' else args.pca_dims
  if not args.npz or not os.path.isfile(args.npz):
    print(f'error: --npz {args.npz!r} is not a file', file=sys.stderr)
    return 2
  t0 = time.perf_counter()
  with np.load(args.npz, allow_pickle=False) as z:
    x_train, y_train = z['x_train'], z['y_train'].astype(np.int32)
    x_test, y_test = z['x_test'], z['y_test'].astype(np.int32)
    embed_config = json.loads(str(z['embed_config'])) if 'embed_config' in z.files else None
  print(f'{args.npz}: x_train {x_train.shape} {x_train.dtype}, x_test {x_test.shape}; '
        f'{args.loss}, read in {time.perf_counter() - t0:.1f} s', flush=True)
  x_train, x_test = standardize(x_train, x_test)
  dims = [int(d) for d in args.pca_dims.split(',')]
  axes = None
  if any(dims):
    from jaxdisp import embed  # pylint: disable=g-import-not-at-top
    t = time.perf_counter()
    axes = embed.fit_pca(x_train, max(dims))
    print(f'PCA ({max(dims)} axes) in {time.perf_counter() - t:.0f} s', flush=True)
  lambdas = [float(v) for v in args.lambdas.split(',')]
  runs = []
  for dim in dims:
    xs_train, xs_test = ((x_train, x_test) if not dim else
                         (x_train @ axes[:, :dim], x_test @ axes[:, :dim]))
    print(f'dim {xs_train.shape[1]}{" (PCA)" if dim else ""}:', flush=True)
    t = time.perf_counter()
    result = probe(xs_train, y_train, xs_test, y_test, lambdas, args.loss, args.max_iters,
                   args.val_fraction, args.seed)
    result.update({'dim': int(xs_train.shape[1]), 'pca': bool(dim),
                   'seconds': round(time.perf_counter() - t, 1)})
    runs.append(result)
    print(f'  -> lambda {result["lambda"]:g}: test accuracy {result["test_accuracy"]:.4f} '
          f'(train {result["train_accuracy"]:.4f}), {result["seconds"]:.0f} s', flush=True)
  full = next((r for r in runs if not r['pca']), runs[0])
  out = {'benchmark': 'linear_probe', 'quick': args.quick, 'machine': _common.machine_info(),
         'npz': os.path.abspath(args.npz), 'npz_bytes': os.path.getsize(args.npz),
         'num_train': int(len(y_train)), 'num_test': int(len(y_test)),
         'loss': args.loss, 'lambdas': lambdas, 'max_iters': args.max_iters,
         'val_fraction': args.val_fraction, 'seed': args.seed, 'embed_config': embed_config,
         'runs': runs, 'paper': PAPER, 'seconds': round(time.perf_counter() - t0, 1),
         'headline': {'test_accuracy': full['test_accuracy'], 'dim': full['dim'],
                      'by_dim': {str(r['dim']): r['test_accuracy'] for r in runs},
                      'paper_accuracy': PAPER['accuracy']}}
  print(_common.table(['dim', 'pca', 'lambda', 'train acc', 'test acc', 'seconds'],
                      [[r['dim'], r['pca'], r['lambda'], r['train_accuracy'],
                        r['test_accuracy'], r['seconds']] for r in runs]))
  print('wrote', _common.write_json(args.out, args.name, args.quick, out))
  return 0


if __name__ == '__main__':
  sys.exit(main())
