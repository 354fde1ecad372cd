"""``python -m bip``: the same as the ``bip`` command."""

import sys

from ._entry import main

if __name__ == "__main__":  # importing the module (doctest collection) runs nothing
    sys.exit(main())
