"""bip_metainfo: .torrent files (v1, v2, hybrid), magnet links, and creating torrents."""

from ._errors import MagnetError, MetainfoError, MetainfoErrorKind
from ._infohash import InfoHash

__all__ = ["InfoHash", "MagnetError", "MetainfoError", "MetainfoErrorKind"]

__version__ = "0.1.0"
