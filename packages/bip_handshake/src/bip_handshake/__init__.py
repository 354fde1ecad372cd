"""bip_handshake: meeting BitTorrent peers (work in progress: the sans-IO codecs)."""

__all__: list[str] = []

__version__ = "0.1.0"
