"""bip: the ``bip`` command, a reference BitTorrent client and toolbox.

It is built only on the public APIs of the eight bip libraries, so every gap it meets is a
gap to fix in a library. Run ``bip --help`` for the commands.
"""

__all__: list[str] = []

__version__ = "0.1.0"
