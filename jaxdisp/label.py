"""``python -m jaxdisp.label`` and the ``jaxdisp-label`` script: the human oracle's command line.

The commands live in :mod:`jaxdisp.oracle.cli` (``import`` validates an answers CSV and appends
it to the label ledger, ``export`` writes every acquired label as CSV); this module is their
stable entry point.
"""

import sys

from jaxdisp.oracle.cli import export_labels, import_labels, main

__all__ = ['export_labels', 'import_labels', 'main']

if __name__ == '__main__':
  sys.exit(main())
