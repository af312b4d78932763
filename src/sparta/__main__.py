"""``python -m sparta``: the ``sparta`` command (see :mod:`sparta.cli`)."""

import sys

from sparta.cli import main

sys.exit(main())
