r"""The same label-dispersion round in PyTorch, two ways, timed side by side with jaxdisp.

  pip install -e '.[bench]'                        # torch (CPU wheels are fine)
  python benchmarks/torch_reference.py             # small CNN w16 and ResNet18 w16 rounds
  python benchmarks/torch_reference.py --specs resnet18_16 [--channels-last]
  python benchmarks/torch_reference.py --quick     # small CNN w8, 16x16, seconds

All three run one active-learning round on the same synthetic images (``jaxdisp.data.synthetic``),
the same initial labeled set and pool, the same model (architecture, width), epochs, batch size,
eval batch size, optimizer (SGD, Nesterov momentum 0.9, weight decay 5e-4, step schedule at 60%
and 80% of the epochs) and augmentation (random crop with 4-pixel zero padding + flip), and score
the whole pool after every epoch:

* PyTorch **DataLoader** (``DataLoaderLoop``), the way the authors' code and most AL code bases
  do it: a ``Dataset`` whose ``__getitem__`` normalises and augments one image, a ``DataLoader``
  (shuffle, ``num_workers=0``: the 2 cores are busy with the model), ``model.train()`` steps,
  then after every epoch one ``model.eval()`` + ``torch.inference_mode()`` pass over the pool in
  ``eval_batch`` batches that writes the argmax into an int8 history; after training, test
  accuracy, label dispersion from the history and a top-``budget`` selection.
* PyTorch **batched** (``BatchedLoop``), a well-written loop for data that fits in memory: the
  uint8 images stay one tensor, each batch is gathered by index and normalised and augmented
  whole (the crop is one gather, the flip one ``where``), no per-sample Python, no collation;
  ``--channels-last`` runs its model and inputs channels_last. The same training, pool pass,
  test pass and selection as above.
* jaxdisp: ``rounds.al_round`` after a warm-up round (compilation excluded); its train and
  pool-scoring phases come from one epoch of the trainer without and with recording (see
  ``benchmarks/_rounds.py``).

Both PyTorch loops are timed after a warm-up epoch (first-call costs excluded, as jaxdisp's
compilation is) that also picks their intra-op thread count, the faster of 1 and all cores; their
repetitions are interleaved. Reported per phase: seconds on each side and ``speedup = torch time
/ jaxdisp time`` (> 1: jaxdisp is faster) for training, pool scoring and the whole round. Without
torch the script prints one line and exits 0 (the JSON says ``not measured``). Writes
``<out>/torch_reference[_quick].json``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import _rounds  # pylint: disable=g-import-not-at-top,wrong-import-position

MISSING = "torch not installed: pip install -e '.[bench]'"


def build_torch_model(spec: dict):
  """The jaxdisp model (``jaxdisp/models.py``) in PyTorch, NCHW."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # = flax momentum 0.9

  class SmallCNN(nn.Module):
    def __init__(self, width, num_classes):
      super().__init__()
      layers, cin = [], 3
      for i in range(3):
        cout = width * 2**i
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn(cout), nn.ReLU()]
        if i < 2:
          layers.append(nn.MaxPool2d(2))
        cin = cout
      self.features = nn.Sequential(*layers)
      self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
      return self.fc(self.features(x).mean((2, 3)))

  class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = bn(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = bn(cout)
      self.shortcut = nn.Sequential()
      if stride != 1 or cin != cout:
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + self.shortcut(x))

  class ResNet18(nn.Module):
    def __init__(self, width, num_classes):
      super().__init__()
      self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), bn(width), nn.ReLU())
      blocks, cin = [], width
      for stage in range(4):
        cout = width * 2**stage
        for b in range(2):
          blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
          cin = cout
      self.blocks = nn.Sequential(*blocks)
      self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
      return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

  cls = {'small_cnn': SmallCNN, 'resnet18': ResNet18}[spec['model']]
  return cls(spec['width'], spec['num_classes'])


def _norm_stats(ds):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  flat = ds.train_images.reshape(-1, 3).astype(np.float64) / 255.0
  mean = torch.tensor(flat.mean(0), dtype=torch.float32)[:, None, None]
  std = torch.tensor(flat.std(0), dtype=torch.float32)[:, None, None]
  return mean, std


class DataLoaderLoop:
  """The way the authors' code and most AL code bases do it: a per-sample ``Dataset`` whose
  ``__getitem__`` normalises and augments one image, and ``DataLoader``s (``num_workers=0``)."""

  def __init__(self, spec, ds, labeled_ids, pool_ids, channels_last=False):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    from torch.utils.data import DataLoader, Dataset  # pylint: disable=g-import-not-at-top
    del channels_last
    images = torch.from_numpy(ds.train_images).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    test_images = torch.from_numpy(ds.test_images).permute(0, 3, 1, 2).contiguous()
    mean, std = _norm_stats(ds)

    class Images(Dataset):
      def __init__(self, x, labels, ids, augment):
        self.x, self.labels, self.ids, self.augment = x, labels, ids, augment

      def __len__(self):
        return len(self.ids)

      def __getitem__(self, i):
        j = int(self.ids[i])
        img = (self.x[j].float() / 255.0 - mean) / std
        if self.augment:  # RandomCrop(size, padding=4) + RandomHorizontalFlip
          h, w = img.shape[1:]
          padded = F.pad(img, (4, 4, 4, 4))
          dy, dx = np.random.randint(0, 9, 2)
          img = padded[:, dy:dy + h, dx:dx + w]
          if np.random.rand() < 0.5:
            img = img.flip(2)
        return img, int(self.labels[i]), i

    self.train_loader = DataLoader(Images(images, ds.train_labels[labeled_ids], labeled_ids, True),
                                   batch_size=spec['batch'], shuffle=True, num_workers=0)
    self.pool_loader = DataLoader(Images(images, ds.train_labels[pool_ids], pool_ids, False),
                                  batch_size=spec['eval_batch'], shuffle=False, num_workers=0)
    self.test_loader = DataLoader(
        Images(test_images, ds.test_labels, np.arange(ds.num_test), False),
        batch_size=spec['eval_batch'], shuffle=False, num_workers=0)

  def train_batches(self):
    for x, y, _ in self.train_loader:
      yield x, y

  def pool_batches(self):
    for x, _, i in self.pool_loader:
      yield x, i

  def test_batches(self):
    for x, y, _ in self.test_loader:
      yield x, y


class BatchedLoop:
  """A well-written PyTorch loop for data that fits in memory: the uint8 images stay one tensor,
  a batch is gathered by index, normalised and augmented as a whole (random crop with 4-pixel
  zero padding as one gather, flip as one ``where``), no per-sample Python, no collation;
  optionally ``channels_last``."""

  def __init__(self, spec, ds, labeled_ids, pool_ids, channels_last=False):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.spec = spec
    self.images = torch.from_numpy(ds.train_images).permute(0, 3, 1, 2).contiguous()
    self.test_images = torch.from_numpy(ds.test_images).permute(0, 3, 1, 2).contiguous()
    self.train_labels = torch.from_numpy(ds.train_labels.astype(np.int64))
    self.test_labels = torch.from_numpy(ds.test_labels.astype(np.int64))
    self.labeled = torch.from_numpy(np.asarray(labeled_ids, np.int64))
    self.pool = torch.from_numpy(np.asarray(pool_ids, np.int64))
    self.mean, self.std = _norm_stats(ds)
    self.format = torch.channels_last if channels_last else torch.contiguous_format
    h, w = ds.image_shape[:2]
    self.rows, self.cols = torch.arange(h), torch.arange(w)

  def _inputs(self, images, idx, augment):
    torch = self.torch
    x = images[idx].float().div_(255.0).sub_(self.mean).div_(self.std)
    if augment:
      b, c, h, w = x.shape
      padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
      dy = torch.randint(0, 9, (b, 1))
      dx = torch.randint(0, 9, (b, 1))
      x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 (dy + self.rows)[:, None, :, None], (dx + self.cols)[:, None, None, :]]
      flip = torch.rand(b) < 0.5
      x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=self.format)

  def train_batches(self):
    order = self.labeled[self.torch.randperm(len(self.labeled))]
    b = self.spec['batch']
    for s in range(0, len(order), b):
      idx = order[s:s + b]
      yield self._inputs(self.images, idx, True), self.train_labels[idx]

  def pool_batches(self):
    b = self.spec['eval_batch']
    for s in range(0, len(self.pool), b):
      yield self._inputs(self.images, self.pool[s:s + b], False), slice(s, s + b)

  def test_batches(self):
    b = self.spec['eval_batch']
    for s in range(0, len(self.test_labels), b):
      idx = self.torch.arange(s, min(s + b, len(self.test_labels)))
      yield self._inputs(self.test_images, idx, False), self.test_labels[idx]


LOOPS = {'dataloader': DataLoaderLoop, 'batched': BatchedLoop}


def torch_round(spec: dict, ds, labeled_ids, pool_ids, budget: int, seed: int = 0,
                warmup: bool = True, loop: str = 'dataloader', channels_last: bool = False,
                threads: int | None = None) -> dict:
  """One round in PyTorch with the data path ``loop`` (``LOOPS``); per-phase seconds.

  ``threads``: intra-op threads; None = the faster of 1 and all cores, picked in a warm-up epoch
  (on a CPU shared with other work, OpenMP barriers across all cores can make every op several
  times slower than one thread).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  np.random.seed(seed)
  data = LOOPS[loop](spec, ds, labeled_ids, pool_ids, channels_last)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  epochs = spec['epochs']

  def fresh():
    model = build_torch_model(spec).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, [round(0.6 * epochs), round(0.8 * epochs)], gamma=0.5)
    return model, opt, sched

  model, opt, sched = fresh()

  def train_epoch():
    model.train()
    for x, y in data.train_batches():
      opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(x), y)
      loss.backward()
      opt.step()

  def score_pool(history, t):
    model.eval()
    with torch.inference_mode():
      for x, i in data.pool_batches():
        history[t, i] = model(x).argmax(1).to(torch.int8)

  info = {'threads': threads or torch.get_num_threads()}
  if warmup:
    # First-call costs (allocator, oneDNN primitives) are excluded, as jaxdisp's compilation is.
    seconds = {}
    for n in ([threads] if threads else sorted({1, os.cpu_count() or 1}, reverse=True)):
      torch.set_num_threads(n)
      t0 = time.perf_counter()
      train_epoch()
      score_pool(torch.full((1, len(pool_ids)), -1, dtype=torch.int8), 0)
      seconds[n] = time.perf_counter() - t0
    best = min(seconds, key=seconds.get)
    info = {'threads': best, 'warmup_epoch_seconds_by_threads': seconds}
    model, opt, sched = fresh()
  torch.set_num_threads(info['threads'])

  t_round = time.perf_counter()
  history = torch.full((epochs, len(pool_ids)), -1, dtype=torch.int8)
  train_s = pool_s = 0.0
  for epoch in range(epochs):
    t0 = time.perf_counter()
    train_epoch()
    t1 = time.perf_counter()
    score_pool(history, epoch)
    pool_s += time.perf_counter() - t1
    train_s += t1 - t0
    sched.step()
  t0 = time.perf_counter()
  model.eval()
  correct = 0
  with torch.inference_mode():
    for x, y in data.test_batches():
      correct += int((model(x).argmax(1) == y).sum())
  test_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  counts = F.one_hot(history.long().clamp(min=0), spec['num_classes']).sum(0)  # [N, C]
  recorded = (history >= 0).sum(0)
  dispersion = 1.0 - counts.max(1).values.float() / recorded.clamp(min=1).float()
  tie = torch.rand(len(pool_ids))
  order = np.lexsort((-tie.numpy(), -dispersion.numpy()))[:budget]
  selected = np.sort(np.asarray(pool_ids)[order])
  select_s = time.perf_counter() - t0
  return {'train_s': train_s, 'pool_scoring_s': pool_s, 'test_eval_s': test_s,
          'select_s': select_s, 'total_s': time.perf_counter() - t_round,
          'test_accuracy': correct / ds.num_test, 'num_selected': int(len(selected)),
          'loop': loop, 'channels_last': channels_last, 'threads': info}


def compare(name: str, quick: bool, channels_last: bool = False) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  spec = _rounds.SPECS[name]
  reps = 1 if quick else 2
  exp = _rounds.experiment(spec)
  state0 = exp.initial_state()
  labeled_ids = np.flatnonzero(state0.labeled_round >= 0)
  pool_ids = np.flatnonzero(state0.labeled_round < 0)
  ds = exp.dataset
  budget = exp.cfg.al.budget

  jax_round = _rounds.measure_round(spec, exp, reps=reps)
  jax_epochs = _rounds.measure_epochs(spec, exp, reps=1 if quick else 3)
  runs = {loop: [] for loop in LOOPS}
  for i in range(reps):  # the two PyTorch loops interleaved
    for loop in LOOPS:
      runs[loop].append(torch_round(spec, ds, labeled_ids, pool_ids, budget, seed=i,
                                    warmup=(i == 0), loop=loop,
                                    channels_last=channels_last and loop == 'batched'))
  keys = ('train_s', 'pool_scoring_s', 'test_eval_s', 'select_s', 'total_s')
  t = {loop: {k: _common.median([r[k] for r in rs]) for k in keys} for loop, rs in runs.items()}
  e = spec['epochs']
  j = {'train_s': e * jax_epochs['train_only'], 'pool_scoring_s': e * jax_epochs['record'],
       'total_s': jax_round['wall_s']}
  speedup = {loop: {k: (t[loop][k] / j[k] if j[k] > 0 else None) for k in j} for loop in LOOPS}
  return {'spec': spec, 'torch_threads': runs['dataloader'][0]['threads'],
          'torch_batched_threads': runs['batched'][0]['threads'],
          'torch_batched_channels_last': channels_last,
          'torch': t['dataloader'], 'torch_batched': t['batched'],
          'torch_runs': runs['dataloader'], 'torch_batched_runs': runs['batched'],
          'torch_test_accuracy': runs['dataloader'][0]['test_accuracy'],
          'torch_batched_test_accuracy': runs['batched'][0]['test_accuracy'],
          'jaxdisp': j, 'jaxdisp_round': jax_round, 'jaxdisp_epochs': jax_epochs,
          'speedup_torch_over_jaxdisp': speedup['dataloader'],
          'speedup_torch_batched_over_jaxdisp': speedup['batched']}


def main(argv=None):
  p = _common.parser(__doc__)
  p.add_argument('--specs', default='',
                 help='comma-separated rounds of benchmarks/_rounds.py SPECS (default: '
                      'small_cnn16,resnet18_16; quick with --quick)')
  p.add_argument('--channels-last', action='store_true',
                 help='the batched PyTorch loop runs its model and inputs channels_last')
  args = p.parse_args(argv)
  names = (args.specs.split(',') if args.specs else
           ['quick'] if args.quick else ['small_cnn16', 'resnet18_16'])
  unknown = set(names) - set(_rounds.SPECS)
  if unknown:
    p.error(f'unknown spec(s) {sorted(unknown)}; known: {sorted(_rounds.SPECS)}')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print(MISSING)
    _common.write_json(args.out, 'torch_reference', args.quick, {
        'benchmark': 'torch_reference', 'quick': args.quick, 'status': 'not measured',
        'reason': MISSING, 'machine': _common.machine_info(),
        'headline': {'measured': False, 'pool_scoring_speedup': None, 'train_speedup': None,
                     'round_speedup': None, 'batched_pool_scoring_speedup': None,
                     'batched_train_speedup': None, 'batched_round_speedup': None}})
    return None
  _common.quiet_logs()
  t_start = time.perf_counter()
  comparisons = {}
  for name in names:
    comparisons[name] = compare(name, args.quick, args.channels_last)
    for label, key in (('DataLoader', 'speedup_torch_over_jaxdisp'),
                       ('batched', 'speedup_torch_batched_over_jaxdisp')):
      s = comparisons[name][key]
      print(f'  {name}, torch {label} / jaxdisp: train {s["train_s"]:.2f}, pool scoring '
            f'{s["pool_scoring_s"]:.2f}, round {s["total_s"]:.2f}', flush=True)
  head_name = names[0]
  head = comparisons[head_name]['speedup_torch_over_jaxdisp']
  batched = comparisons[head_name]['speedup_torch_batched_over_jaxdisp']
  result = {
      'benchmark': 'torch_reference', 'quick': args.quick, 'status': 'measured',
      'machine': {**_common.machine_info(), 'torch': torch.__version__,
                  'torch_threads': {k: c['torch_threads'] for k, c in comparisons.items()},
                  'torch_batched_threads': {k: c['torch_batched_threads']
                                            for k, c in comparisons.items()}},
      'comparisons': comparisons,
      'headline': {'measured': True, 'spec': head_name,
                   'train_speedup': head['train_s'],
                   'pool_scoring_speedup': head['pool_scoring_s'],
                   'round_speedup': head['total_s'],
                   'batched_train_speedup': batched['train_s'],
                   'batched_pool_scoring_speedup': batched['pool_scoring_s'],
                   'batched_round_speedup': batched['total_s'],
                   'by_spec': {k: v['speedup_torch_over_jaxdisp'] for k, v in comparisons.items()},
                   'batched_by_spec': {k: v['speedup_torch_batched_over_jaxdisp']
                                       for k, v in comparisons.items()}},
      'wall_s': time.perf_counter() - t_start,
  }
  path = _common.write_json(args.out, 'torch_reference', args.quick, result)
  print(f'\njaxdisp vs PyTorch {torch.__version__}, one round, seconds; speedup = torch / jaxdisp '
        f'(> 1: jaxdisp faster); {path}')
  rows = []
  for name, c in comparisons.items():
    s = c['spec']
    label = f'{name} ({s["model"]} w{s["width"]}, {s["epochs"]} ep)'
    for phase, key in (('train', 'train_s'), ('pool scoring', 'pool_scoring_s'),
                       ('whole round', 'total_s')):
      rows.append([label, phase, c['jaxdisp'][key], c['torch'][key],
                   c['speedup_torch_over_jaxdisp'][key], c['torch_batched'][key],
                   c['speedup_torch_batched_over_jaxdisp'][key]])
      label = ''
  threads = {k: (c['torch_threads']['threads'], c['torch_batched_threads']['threads'])
             for k, c in comparisons.items()}
  print(f'torch intra-op threads (DataLoader, batched): {threads}')
  print(_common.table(['round', 'phase', 'jaxdisp s', 'DataLoader s', 'speedup', 'batched s',
                       'speedup'], rows))
  return result


if __name__ == '__main__':
  main()
