"""``python -m aefheight``: the same as the ``aefheight`` command."""

import sys

from aefheight.cli import main

sys.exit(main())
