"""``python -m jaxdisp.embed`` (:mod:`jaxdisp.embed.command`)."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from jaxdisp.embed.command import main  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.exit(main())
