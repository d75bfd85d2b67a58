"""Data sources: synthetic determinism and difficulty, image folders and their cache, errors."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxdisp import config_checks, config_lib, data
from jaxdisp.data import folder
from jaxdisp.errors import DataError


def test_synthetic_is_deterministic_balanced_and_not_separable_by_colour():
  a = data.synthetic(2000, 500, 10, 32, data_seed=3)
  b = data.synthetic(2000, 500, 10, 32, data_seed=3)
  c = data.synthetic(2000, 500, 10, 32, data_seed=4)
  assert a.train_images.dtype == np.uint8 and a.train_images.shape == (2000, 32, 32, 3)
  assert a.test_images.shape == (500, 32, 32, 3) and a.num_classes == 10
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  assert not np.array_equal(a.train_images, c.train_images)
  assert np.bincount(a.train_labels, minlength=10).min() > 150
  # Nearest class-mean colour is at chance: the classes differ in structure, not colour.
  colour = lambda x: x.reshape(len(x), -1, 3).mean(1)
  means = np.stack([colour(a.train_images)[a.train_labels == k].mean(0) for k in range(10)])
  dist = ((colour(a.test_images)[:, None] - means[None]) ** 2).sum(-1)
  assert (dist.argmin(1) == a.test_labels).mean() < 0.2


def test_synthetic_rejects_bad_sizes():
  with pytest.raises(DataError, match='2..64 classes'):
    data.synthetic(100, 10, num_classes=1)
  with pytest.raises(DataError, match='image sizes'):
    data.synthetic(100, 10, image_size=4)


def write_folder(root, sizes=None, classes=('cat', 'dog', 'emu'), per_class=(4, 2)):
  """<root>/{train,test}/<class>/i.png with a known pixel per image; returns the expected arrays."""
  rng = np.random.default_rng(0)
  out = {}
  for split, n in zip(('train', 'test'), per_class):
    imgs, labels = [], []
    for k, c in enumerate(classes):
      os.makedirs(root / split / c)
      for i in range(n):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        ext = 'png' if i % 2 == 0 else 'PNG'  # suffixes are case-insensitive
        Image.fromarray(img).save(root / split / c / f'{i:03d}.{ext}')
        imgs.append(img)
        labels.append(k)
    out[split] = (np.stack(imgs), np.array(labels))
  return out


def test_image_folder_reads_the_standard_layout_and_caches_by_fingerprint(tmp_path, monkeypatch):
  expected = write_folder(tmp_path / 'ds')
  cache = tmp_path / 'cache'
  ds = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(cache))
  assert ds.class_names == ('cat', 'dog', 'emu') and ds.name == 'ds'
  np.testing.assert_array_equal(ds.train_images, expected['train'][0])  # PNG is lossless
  np.testing.assert_array_equal(ds.train_labels, expected['train'][1])
  np.testing.assert_array_equal(ds.test_images, expected['test'][0])
  assert ds.train_ids[0] == os.path.join('train', 'cat', '000.png')
  assert len(os.listdir(cache)) == 1

  # A second load reads the cache and decodes nothing.
  def no_decode(path):
    raise AssertionError(f'decoded {path} despite the cache')
  monkeypatch.setattr(folder, '_decode', no_decode)
  again = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(cache))
  np.testing.assert_array_equal(again.train_images, ds.train_images)
  monkeypatch.undo()

  # Changing a file changes the fingerprint: decoded again into a second cache entry.
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'ds' / 'train' / 'dog' / '000.png')
  os.utime(tmp_path / 'ds' / 'train' / 'dog' / '000.png', ns=(1, 1))
  changed = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(cache))
  assert changed.train_images[4].max() == 0 and len(os.listdir(cache)) == 2


def test_lazy_folder_decodes_only_the_rows_read_and_a_cache_is_memory_mapped(tmp_path,
                                                                              monkeypatch):
  expected = write_folder(tmp_path / 'ds')
  decoded = []
  real = folder._decode
  monkeypatch.setattr(folder, '_decode', lambda path: decoded.append(path) or real(path))
  ds = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'), lazy=True)
  assert isinstance(ds.train_images, data.FolderRows) and ds.train_images.shape == (12, 8, 8, 3)
  assert not os.path.exists(tmp_path / 'cache')  # nothing decoded in full, nothing cached
  decoded.clear()
  np.testing.assert_array_equal(ds.train_images[5:8], expected['train'][0][5:8])
  assert len(decoded) == 3
  np.testing.assert_array_equal(ds.train_images[4, :, :, 1], expected['train'][0][4, :, :, 1])
  np.testing.assert_array_equal(np.asarray(ds.train_images), expected['train'][0])
  monkeypatch.undo()
  data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'))  # writes the cache
  cached = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'), lazy=True)
  assert isinstance(cached.train_images, np.memmap)
  np.testing.assert_array_equal(cached.train_images, expected['train'][0])


def test_load_dataset_folder_source_via_config(tmp_path):
  write_folder(tmp_path / 'ds')
  cfg = config_lib.base_config()
  cfg.dataset.source, cfg.dataset.root = 'folder', str(tmp_path / 'ds')
  cfg.dataset.cache_dir = str(tmp_path / 'cache')
  ds = data.load_dataset(cfg.dataset)
  assert (ds.num_train, ds.num_test, ds.image_shape) == (12, 6, (8, 8, 3))


@pytest.mark.parametrize('breakage, message', [
    ('missing_root', 'is not a folder'),
    ('no_test_split', "no 'test' split"),
    ('empty_class', 'has no .jpg/.jpeg/.png images'),
    ('mixed_sizes', 'resize the folder to one size'),
    ('corrupt', 'cannot decode image'),
    ('extra_test_class', 'has classes not in train'),
    # filesystem oddities (issue 17): one line each, not an OSError traceback from os.stat
    ('dangling_symlink', r'train/cat/gone.png: No such file or directory \(it is a dangling symlink'),
    ('symlink_loop', r'train/cat/loop1.png: Too many levels of symbolic links \(it is a symlink loop'),
    ('dangling_class_symlink', r'train/fox: No such file or directory \(it is a dangling symlink'),
    ('fifo', 'train/cat/pipe.png is not a regular file'),
])
def test_image_folder_errors_name_the_problem(breakage, message, tmp_path):
  root = tmp_path / 'ds'
  if breakage != 'missing_root':
    write_folder(root)
  if breakage == 'no_test_split':
    os.rename(root / 'test', root / 'valid')
  elif breakage == 'empty_class':
    os.makedirs(root / 'train' / 'fox')
  elif breakage == 'mixed_sizes':
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / 'train' / 'cat' / '999.png')
  elif breakage == 'corrupt':
    (root / 'train' / 'dog' / 'bad.jpg').write_bytes(b'not a jpeg')
  elif breakage == 'dangling_symlink':
    os.symlink(root / 'nowhere.png', root / 'train' / 'cat' / 'gone.png')
  elif breakage == 'symlink_loop':
    os.symlink(root / 'train' / 'cat' / 'loop2.png', root / 'train' / 'cat' / 'loop1.png')
    os.symlink(root / 'train' / 'cat' / 'loop1.png', root / 'train' / 'cat' / 'loop2.png')
  elif breakage == 'dangling_class_symlink':
    os.symlink(root / 'nowhere', root / 'train' / 'fox')
  elif breakage == 'fifo':
    os.mkfifo(root / 'train' / 'cat' / 'pipe.png')  # decoding it would block forever
  elif breakage == 'extra_test_class':
    os.makedirs(root / 'test' / 'yak')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'test' / 'yak' / '0.png')
  with pytest.raises(DataError, match=message) as err:
    data.image_folder(str(root), cache_dir=str(tmp_path / 'cache'))
  assert '\n' not in str(err.value)
  if breakage == 'corrupt':
    assert 'bad.jpg' in str(err.value)


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
  write_folder(tmp_path / 'ds')
  src = tmp_path / 'ds' / 'train' / 'cat' / '000.png'
  with open(os.fsencode(src.parent) + b'/\xff.png', 'wb') as f:
    f.write(src.read_bytes())
  ds = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'))
  assert ds.num_train == 13 and 'train/cat/\udcff.png' in ds.train_ids


# Pillow opens a 16-bit grayscale PNG in mode I;16 (older versions: I); it writes no mode-I PNG,
# so mode I is a TIFF's bytes under a .png name (Pillow decodes by content).
@pytest.mark.parametrize('dtype, kind', [('uint16', 'PNG'), ('int32', 'TIFF')])
def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(dtype, kind, tmp_path):
  write_folder(tmp_path / 'ds', classes=('a', 'b'), per_class=(2, 1))
  gradient = (np.arange(64).reshape(8, 8) * 1040).astype(dtype)  # 0 .. 65520
  path = tmp_path / 'ds' / 'train' / 'a' / '000.png'
  Image.fromarray(gradient).save(path, format=kind)
  with Image.open(path) as im:
    assert im.mode in ('I;16', 'I') and np.asarray(im).max() == 65520  # really 16 bits
  ds = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'))
  got = np.asarray(ds.train_images)[ds.train_ids.index('train/a/000.png')]
  expected = np.round(gradient.astype(np.float64) * 255 / 65535).astype(np.uint8)
  assert got.shape == (8, 8, 3) and got.dtype == np.uint8
  for channel in range(3):
    np.testing.assert_array_equal(got[..., channel], expected)
  assert (got == 255).mean() < 0.05  # clipping made 98% of this gradient white


def test_tfds_offline_error_names_the_alternatives(tmp_path):
  with pytest.raises(DataError, match='not prepared') as err:
    data.from_tfds('cifar10', data_dir=str(tmp_path))
  assert 'dataset.source=folder' in str(err.value) and 'data_dir' in str(err.value)


def test_class_count_mismatch_between_config_and_data_is_refused(tmp_path):
  write_folder(tmp_path / 'ds')
  cfg = config_lib.base_config()
  cfg.dataset.source, cfg.dataset.root = 'folder', str(tmp_path / 'ds')
  cfg.al.initial_size, cfg.al.budget, cfg.al.rounds = 4, 2, 1
  with pytest.raises(config_lib.ConfigError, match='num_classes=10 but the folder dataset'):
    config_checks.validate_against_data(cfg, 12, 3)
  cfg.dataset.num_classes = 0  # = take it from the data
  config_checks.validate_against_data(cfg, 12, 3)


# ---------------------------------------------------------------------------------------------
# dataset.imbalance: the long-tailed training split


def test_long_tailed_counts_follow_the_exponential_profile():
  # The totals of Cui et al.'s long-tailed CIFAR (n_max = 5,000 or 500 per class).
  totals = {10: (20431, 19573), 50: (13996, 12608), 100: (12406, 10847), 200: (11203, 9502)}
  for ratio, (c10, c100) in totals.items():
    assert sum(data.long_tailed_counts([5000] * 10, ratio)) == c10
    assert sum(data.long_tailed_counts([500] * 100, ratio)) == c100
  assert data.long_tailed_counts([5000] * 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232,
                                                       139, 83, 50]
  # By hand: n_max = 8, ratio 4, C = 3 -> 8, floor(8 / 2) = 4, floor(8 / 4) = 2; a class smaller
  # than its profile keeps all it has; ratio 1 changes nothing.
  assert data.long_tailed_counts([8, 8, 8], 4) == [8, 4, 2]
  assert data.long_tailed_counts([6, 8, 1], 4) == [6, 4, 1]
  assert data.long_tailed_counts([7, 9, 8], 1) == [7, 9, 8]
  with pytest.raises(DataError, match='must be a finite number >= 1'):
    data.long_tailed_counts([5, 5], 0.5)


def test_long_tailed_split_is_deterministic_for_the_seed_and_keeps_the_test_split():
  ds = data.synthetic(1000, 100, 5, 8, data_seed=0)
  sizes = np.bincount(ds.train_labels, minlength=5)
  lt = data.long_tailed(ds, 10.0, seed=0)
  n_max = sizes.max()
  expected = [min(int(n), int(n_max * 0.1 ** (i / 4))) for i, n in enumerate(sizes)]
  np.testing.assert_array_equal(np.bincount(lt.train_labels, minlength=5), expected)
  assert lt.num_train == sum(expected) and lt.class_names == ds.class_names
  # Every kept row is the original row of the same name, in dataset order.
  index = {name: i for i, name in enumerate(ds.train_ids)}
  orig = np.array([index[name] for name in lt.train_ids])
  assert np.all(np.diff(orig) > 0)
  np.testing.assert_array_equal(lt.train_images, ds.train_images[orig])
  np.testing.assert_array_equal(lt.train_labels, ds.train_labels[orig])
  assert lt.test_images is ds.test_images and lt.test_labels is ds.test_labels
  # Same seed, same subset; another seed, another; a larger ratio keeps a subset of it.
  assert data.long_tailed(ds, 10.0, seed=0).train_ids == lt.train_ids
  assert data.long_tailed(ds, 10.0, seed=1).train_ids != lt.train_ids
  assert set(data.long_tailed(ds, 20.0, seed=0).train_ids) < set(lt.train_ids)
  assert data.long_tailed(ds, 1.0, seed=0) is ds
  # 217 * (1e-6) ** (2 / 4) = 0.217: class 2 would be empty.
  assert n_max == 217
  with pytest.raises(DataError, match="imbalance=1000000.0 leaves class 'class_2' with no "
                     r'training samples \(largest class: 217\)'):
    data.long_tailed(ds, 1e6, seed=0)


def test_long_tailed_folder_stays_lazy(tmp_path, monkeypatch):
  expected = write_folder(tmp_path / 'ds')  # 3 classes x 4 training images
  decoded = []
  real = folder._decode
  monkeypatch.setattr(folder, '_decode', lambda path: decoded.append(path) or real(path))
  ds = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'), lazy=True)
  decoded.clear()
  lt = data.long_tailed(ds, 4.0, seed=0)  # 4, 2, 1 images
  assert isinstance(lt.train_images, data.RowSubset) and not decoded
  assert lt.train_images.shape == (7, 8, 8, 3) and lt.train_images.dtype == np.uint8
  assert lt.train_labels.tolist() == [0, 0, 0, 0, 1, 1, 2]
  orig = [int(name.split(os.sep)[-1][:3]) + 4 * int(label)
          for name, label in zip(lt.train_ids, lt.train_labels)]
  np.testing.assert_array_equal(lt.train_images[4:6], expected['train'][0][orig[4:6]])
  assert len(decoded) == 2  # only the rows read
  np.testing.assert_array_equal(lt.train_images[6, :, :, 2], expected['train'][0][orig[6], :, :, 2])
  np.testing.assert_array_equal(np.asarray(lt.train_images), expected['train'][0][orig])
  monkeypatch.undo()
  data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'))  # writes the cache
  cached = data.image_folder(str(tmp_path / 'ds'), cache_dir=str(tmp_path / 'cache'), lazy=True)
  lt_cached = data.long_tailed(cached, 4.0, seed=0)
  assert isinstance(lt_cached.train_images, data.RowSubset)
  assert lt_cached.train_ids == lt.train_ids
  np.testing.assert_array_equal(np.asarray(lt_cached.train_images), np.asarray(lt.train_images))


def test_load_dataset_applies_imbalance_and_config_refuses_bad_values():
  cfg = config_lib.base_config()
  cfg.dataset.source, cfg.dataset.num_train, cfg.dataset.num_test = 'synthetic', 600, 50
  cfg.dataset.image_size, cfg.dataset.imbalance, cfg.dataset.data_seed = 8, 10.0, 3
  ds = data.load_dataset(cfg.dataset)
  full = data.synthetic(600, 50, 10, 8, data_seed=3)
  counts = np.bincount(ds.train_labels, minlength=10)
  assert counts.tolist() == data.long_tailed_counts(
      np.bincount(full.train_labels, minlength=10), 10.0)
  assert ds.train_ids == data.long_tailed(full, 10.0, 3).train_ids
  config_checks.validate(cfg)
  for bad in (0.5, 0.0, -2.0, float('nan'), float('inf')):
    cfg.dataset.imbalance = bad
    with pytest.raises(config_lib.ConfigError, match=r'dataset\.imbalance=.* must be a finite '
                       r'number >= 1') as err:
      config_checks.validate(cfg)
    assert '\n' not in str(err.value)
  cfg.dataset.imbalance, cfg.dataset.data_seed = 1.0, -1
  with pytest.raises(config_lib.ConfigError, match='dataset.data_seed=-1 must be >= 0'):
    config_checks.validate(cfg)


def test_imbalance_below_one_is_one_error_line_on_the_command_line(tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, '-m', 'jaxdisp.main', '--config', os.path.join(repo, 'configs', 'demo.py'),
       '--workdir', str(tmp_path / 'w'), '--config.dataset.imbalance=0.5'],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: dataset.imbalance=0.5 must be a finite number >= 1 (1 = the data as given, '
      '10 = the largest class 10 times the smallest)')
  assert not os.path.exists(tmp_path / 'w' / 'results.json')
