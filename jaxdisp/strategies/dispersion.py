"""Label dispersion (the paper): how often the network changes its mind about a pool sample.

Zolfaghari Bengar, Raducanu, van de Weijer, "When Deep Learners Change Their Mind: Learning
Dynamics for Active Learning", CAIP 2021. ``1 - f_x / T`` over the per-epoch prediction history;
the authors' quirks are ``dispersion.*`` options (see ``jaxdisp.dispersion``).
"""

from jaxdisp.strategies import base


def score(view: base.PoolView):
  return view.label_dispersion()


# In the diagnostics of every run that keeps a prediction history (dispersion.record_always).
DIAGNOSTIC = base.PoolScore('dispersion', 'dispersion', highest=True, compute=score,
                            records=('labels',))


STRATEGY = base.register(base.Strategy(
    name='dispersion',
    summary='label dispersion over the per-epoch prediction history (the paper)',
    reference='Zolfaghari Bengar et al., CAIP 2021 (arXiv 2107.14707)',
    cost='T (one per recorded epoch, during training; none after)',
    records=('labels',), score=score, diagnostics=(DIAGNOSTIC,),
    tie_break=lambda cfg: cfg.dispersion.tie_break), builtin=True)
