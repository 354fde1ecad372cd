"""``python -m bip``: the same as the ``bip`` command."""

import sys

from ._cli import main

sys.exit(main())
