"""What the docs promise about bip_metainfo's exceptions: one base for all bad input.

Each error bad input can cause is a :class:`MetainfoBaseError` (and still the
:class:`ValueError` it always was), so one ``except`` catches them all.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest

from bip_metainfo import (
    CreateError,
    HashRequestError,
    InfoHash,
    InfoHashError,
    MagnetError,
    MagnetLink,
    Metainfo,
    MetainfoBaseError,
    MetainfoError,
    MetainfoErrorKind,
    MutableLinkError,
    PieceSet,
)

BAD_INPUT: list[tuple[str, Callable[[], object]]] = [
    ("magnet without info-hash", lambda: MagnetLink.parse("magnet:?dn=x")),
    ("info-hash not hex", lambda: InfoHash.parse("nothex")),
    ("bitfield with spare bits", lambda: PieceSet.from_bitfield(b"\xff", 4)),
    ("bitfield too short", lambda: PieceSet.from_bitfield(b"", 4)),
]


@pytest.mark.parametrize(("label", "call"), BAD_INPUT, ids=[label for label, _ in BAD_INPUT])
def test_bad_input_is_a_metainfo_base_error_and_a_value_error(
    label: str, call: Callable[[], object]
) -> None:
    with pytest.raises(MetainfoBaseError) as caught:
        call()
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "cls",
    [MetainfoError, MagnetError, MutableLinkError, CreateError, InfoHashError, HashRequestError],
)
def test_each_error_class_keeps_value_error_under_the_base(cls: type[Exception]) -> None:
    assert issubclass(cls, MetainfoBaseError)
    assert issubclass(cls, ValueError)


def test_metainfo_error_keeps_its_kind() -> None:
    with pytest.raises(MetainfoError) as caught:
        Metainfo.from_bytes(b"not bencoding")
    assert caught.value.kind.libtorrent == "invalid_bencoding"


@pytest.mark.parametrize(
    "error",
    [
        MetainfoError(MetainfoErrorKind.MISSING_INFO, "no info"),
        MagnetError("xt", "no info-hash"),
        MutableLinkError("xt", "a publisher's key"),
    ],
)
def test_errors_with_two_arguments_pickle_and_copy(error: Exception) -> None:
    """Errors whose ``__init__`` takes two arguments survive pickle and copy (a process pool
    or a logging handler sends them on) with their attributes."""
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert vars(again) == vars(error)
