"""``python -m jaxdisp.report W [--out DIR] [--allow-mixed-models]``: see :mod:`jaxdisp.report.cli`."""

import sys

from jaxdisp.report.cli import main

sys.exit(main())
