"""jaxdisp: label-dispersion active learning in JAX/Flax.

Zolfaghari Bengar, Raducanu, van de Weijer, "When Deep Learners Change Their Mind: Learning
Dynamics for Active Learning", CAIP 2021 (arXiv 2107.14707).
"""

from jaxdisp.dispersion import label_changes, label_dispersion, modal_label

__version__ = '0.1.0'
__all__ = ['label_dispersion', 'modal_label', 'label_changes']
