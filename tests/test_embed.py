"""``python -m jaxdisp.embed``: the npz it writes, its determinism, the method's pieces against
plain NumPy, and one-line errors for bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdisp import embed
from jaxdisp.embed import coates
from jaxdisp.data.folder import image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--centroids', '8', '--patches', '3000', '--iterations', '3', '--chunk', '4']


def _write_folder(root, per_class=(20, 5), size=16, seed=0):
  """``root/{train,test}/{dark,light}/NN.png``: two classes that differ in brightness and
  texture."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for split, n in zip(('train', 'test'), per_class):
    for c, name in enumerate(('dark', 'light')):
      os.makedirs(os.path.join(root, split, name))
      for i in range(n):
        base = rng.integers(0, 120, (size, size, 3)) + 100 * c
        if c:
          base[::2] //= 2  # stripes
        Image.fromarray(base.astype(np.uint8)).save(os.path.join(root, split, name, f'{i:02d}.png'))
  return root


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return str(_write_folder(str(tmp_path_factory.mktemp('images') / 'two')))


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('cache'))


@pytest.fixture(scope='module')
def base(folder, cache, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('out') / 'emb.npz')
  assert embed.main(['--root', folder, '--out', out, '--cache_dir', cache] + SMALL) == 0
  return out


def test_output_arrays_shapes_dtypes_and_ids(base, folder, cache):
  with np.load(base, allow_pickle=False) as z:
    assert set(z.files) == {'x_train', 'y_train', 'x_test', 'y_test', 'class_names', 'files',
                            'embed_config'}
    assert z['x_train'].shape == (40, 32) and z['x_train'].dtype == np.float16
    assert z['x_test'].shape == (10, 32) and z['x_test'].dtype == np.float16
    assert z['y_train'].dtype == np.int32 and z['y_test'].dtype == np.int32
    assert np.isfinite(z['x_train'].astype(np.float32)).all()
    assert list(z['class_names']) == ['dark', 'light']
    ds = image_folder(folder, cache_dir=cache)
    assert list(z['files']) == list(ds.train_ids)  # the ids of dataset.source=folder
    assert z['files'][0] == os.path.join('train', 'dark', '00.png')
    np.testing.assert_array_equal(z['y_train'], ds.train_labels)
    np.testing.assert_array_equal(z['y_test'], ds.test_labels)
    config = json.loads(str(z['embed_config']))
    assert (config['centroids'], config['dim'], config['stride']) == (8, 32, 1)
    x = z['x_train'].astype(np.float64)  # standardised with the training rows' statistics
    np.testing.assert_allclose(x.mean(0), 0, atol=2e-3)
    np.testing.assert_allclose(x.std(0), 1, atol=2e-3)
    # the two classes are apart in feature space (nearest class mean on the test rows)
    means = np.stack([x[z['y_train'] == c].mean(0) for c in (0, 1)])
    xt = z['x_test'].astype(np.float64)
    pred = ((xt[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == z['y_test']).mean() >= 0.9


def test_same_seed_same_bytes(base, folder, cache, tmp_path):
  again = str(tmp_path / 'again.npz')
  assert embed.main(['--root', folder, '--out', again, '--cache_dir', cache] + SMALL) == 0
  with open(base, 'rb') as a, open(again, 'rb') as b:
    assert a.read() == b.read()


def test_pca_float32_limits_and_from_npz(folder, cache, base, tmp_path):
  out = str(tmp_path / 'pca.npz')
  assert embed.main(['--root', folder, '--out', out, '--cache_dir', cache, '--pca_dim', '5',
                     '--dtype', 'float32', '--limit_train', '30', '--limit_test', '6',
                     '--seed', '3'] + SMALL) == 0
  with np.load(out) as z:
    assert z['x_train'].shape == (30, 5) and z['x_train'].dtype == np.float32
    assert z['x_test'].shape == (6, 5) and len(z['files']) == 30
    assert list(z['files']) == sorted(z['files'])  # the subset keeps folder order
    var = z['x_train'].var(0)
    assert (np.diff(var) <= 1e-4).all()  # principal components in decreasing variance
    ds = image_folder(folder, cache_dir=cache)
    index = {f: i for i, f in enumerate(ds.train_ids)}
    np.testing.assert_array_equal(z['y_train'], ds.train_labels[[index[f] for f in z['files']]])
  reduced = str(tmp_path / 'reduced.npz')
  assert embed.main(['--from_npz', base, '--pca_dim', '4', '--out', reduced]) == 0
  with np.load(base) as a, np.load(reduced) as b:
    assert b['x_train'].shape == (40, 4) and b['x_test'].shape == (10, 4)
    for key in ('y_train', 'y_test', 'class_names', 'files'):
      np.testing.assert_array_equal(a[key], b[key])
    assert json.loads(str(b['embed_config']))['from_dim'] == 32


def _triangle_pool_reference(z):
  """Plain loops: triangle activation per position, summed over each quadrant (top/left
  quadrants take ceil(n / 2) rows/columns), quadrant-major."""
  b, h, w, k = z.shape
  hh, hw = (h + 1) // 2, (w + 1) // 2
  out = np.zeros((b, 4, k))
  for n in range(b):
    for i in range(h):
      for j in range(w):
        f = np.maximum(z[n, i, j].mean() - z[n, i, j], 0.0)
        out[n, 2 * (i >= hh) + (j >= hw)] += f
  return out.reshape(b, 4 * k)


def test_triangle_and_quadrant_pool_against_numpy():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  z = np.random.default_rng(0).uniform(0, 3, (2, 5, 4, 3)).astype(np.float32)
  got = np.asarray(embed.quadrant_pool(embed.triangle(jnp.asarray(z))))
  np.testing.assert_allclose(got, _triangle_pool_reference(z), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(embed.quadrant_pool(embed.triangle(z)),
                             _triangle_pool_reference(z), rtol=1e-5, atol=1e-5)


def test_zca_against_numpy():
  rng = np.random.default_rng(1)
  x = (rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6))).astype(np.float32) + 3
  mean, w = embed.fit_zca(x, chunk=700)
  cov = np.cov(x.astype(np.float64), rowvar=False)
  lam, v = np.linalg.eigh(cov)
  ref = v @ np.diag(1 / np.sqrt(lam + 0.1)) @ v.T
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5)
  white = (x - mean) @ w  # covariance lambda / (lambda + 0.1) along the eigenvectors
  np.testing.assert_allclose(np.cov(white, rowvar=False), v @ np.diag(lam / (lam + 0.1)) @ v.T,
                             atol=1e-3)


def test_encoding_against_numpy():
  """The compiled chunked encoder against a loop over patches (odd sizes, both strides)."""
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (3, 11, 13, 3), dtype=np.uint8)
  mean, w = embed.fit_zca(rng.normal(size=(400, 108)).astype(np.float32))
  centroids = rng.normal(size=(4, 108)).astype(np.float32)
  for stride in (1, 2):
    got = embed.encode_images(images, mean, w, centroids, stride, chunk=2)
    h, wd = (11 - 6) // stride + 1, (13 - 6) // stride + 1
    z = np.zeros((3, h, wd, 4))
    for n in range(3):
      for i in range(h):
        for j in range(wd):
          p = images[n, i * stride:i * stride + 6, j * stride:j * stride + 6].reshape(-1)
          p = p.astype(np.float64)
          p = (p - p.mean()) / np.sqrt(p.var(ddof=1) + 10)
          white = (p - mean) @ w
          z[n, i, j] = np.sqrt(((white - centroids) ** 2).sum(-1))
    np.testing.assert_allclose(got, _triangle_pool_reference(z), rtol=1e-4, atol=1e-3)


def test_sampled_patches_are_image_patches():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(3).integers(0, 256, (5, 9, 8, 3), dtype=np.uint8)
  sampled = embed.sample_patches(images, 50, seed=0, chunk=2)
  dense = np.asarray(embed.image_patches(jnp.asarray(images, jnp.float32)))
  rng = coates.rng(0, coates.PATCHES)
  which, rows, cols = rng.integers(0, 5, 50), rng.integers(0, 4, 50), rng.integers(0, 3, 50)
  np.testing.assert_array_equal(sampled, dense[which, rows, cols])


def test_kmeans_against_numpy_lloyd():
  rng = np.random.default_rng(4)
  x = np.concatenate([rng.normal(size=(300, 3)) + c for c in ([0, 0, 6], [6, 0, 0], [0, 6, 0])])
  x = x.astype(np.float32)
  got = embed.kmeans(x, 3, iterations=4, seed=7, batch=128)
  init = coates.rng(7, coates.INIT).choice(900, 3, replace=False)
  ref = x[np.sort(init)]
  for _ in range(4):
    labels = ((x[:, None] - ref[None]) ** 2).sum(-1).argmin(1)
    ref = np.stack([x[labels == k].mean(0) if (labels == k).any() else ref[k] for k in range(3)])
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def _bad(capsys, argv):
  capsys.readouterr()
  try:
    status = embed.main(argv)
  except SystemExit as e:  # argparse
    status = e.code
  err = capsys.readouterr().err
  return status, err


@pytest.mark.parametrize('case', ['missing', 'no_images', 'not_npz', 'out_is_dir', 'under_file',
                                  'k0', 'few_patches', 'pca_too_big', 'stride0', 'flag',
                                  'from_missing'])
def test_bad_inputs_one_line_exit_2(case, folder, cache, tmp_path, capsys):
  out = str(tmp_path / 'o.npz')
  argv = ['--root', folder, '--out', out, '--cache_dir', cache] + SMALL
  if case == 'missing':
    argv[1] = str(tmp_path / 'nowhere')
  elif case == 'no_images':
    os.makedirs(tmp_path / 'empty' / 'train' / 'a')
    os.makedirs(tmp_path / 'empty' / 'test' / 'a')
    argv[1] = str(tmp_path / 'empty')
  elif case == 'not_npz':
    argv[3] = str(tmp_path / 'o.txt')
  elif case == 'out_is_dir':
    argv[3] = str(tmp_path)
    out = str(tmp_path / 'nothing.npz')
  elif case == 'under_file':
    (tmp_path / 'plain').write_text('x')
    argv[3] = out = str(tmp_path / 'plain' / 'o.npz')
  elif case == 'k0':
    argv += ['--centroids', '0']
  elif case == 'few_patches':
    argv += ['--patches', '4']
  elif case == 'pca_too_big':
    argv += ['--pca_dim', '33']
  elif case == 'stride0':
    argv += ['--stride', '0']
  elif case == 'flag':
    argv += ['--centroids', 'many']
  elif case == 'from_missing':
    argv = ['--from_npz', str(tmp_path / 'none.npz'), '--pca_dim', '3', '--out', out]
  status, err = _bad(capsys, argv)
  assert status == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  assert 'Traceback' not in err
  assert not os.path.exists(out)
  assert not [f for f in os.listdir(tmp_path) if f.endswith('.jaxdisp-tmp')]


def test_command_line_error_in_a_subprocess(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'jaxdisp.embed', '--root', str(tmp_path / 'no'),
                         '--out', str(tmp_path / 'o.npz')], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.count('\n') == 1 and proc.stderr.startswith('error: '), proc.stderr
