"""Document: the exact input bytes of any value, for info-hashes."""

from __future__ import annotations

import hashlib

import pytest

from bip_bencode import (
    BencodeDecodeError,
    BencodeError,
    BencodePathError,
    DecodeErrorKind,
    Document,
    Encodable,
    PathStep,
    decode,
    decode_document,
    encode,
)

INFO = b"d6:lengthi1024e4:name8:file.txt12:piece lengthi16384e6:pieces20:" + bytes(range(20)) + b"e"
TORRENT = b"d8:announce23:http://tracker.example/7:comment2:hi4:info" + INFO + b"e"

FILES = b"d5:emptyle5:filesld6:lengthi1e4:pathl1:aeed6:lengthi2e4:pathl1:b1:ceee4:name3:dire"


def _path_error(doc: Document, *path: PathStep) -> BencodePathError:
    with pytest.raises(BencodePathError) as info:
        doc.span(*path)
    with pytest.raises(BencodePathError):
        doc.raw(*path)
    return info.value


# --- spans and raw bytes -------------------------------------------------------------


def test_the_whole_document() -> None:
    doc = decode_document(TORRENT)
    assert doc.data == TORRENT
    assert doc.value == decode(TORRENT)
    assert doc.span() == (0, len(TORRENT))
    assert doc.raw() == TORRENT
    assert "Document" in repr(doc)
    assert str(len(TORRENT)) in repr(doc)


def test_top_level_keys() -> None:
    doc = decode_document(TORRENT)
    start = TORRENT.index(b"4:info") + 6
    assert doc.span(b"info") == (start, start + len(INFO))
    assert doc.raw(b"info") == INFO
    assert doc.raw(b"announce") == b"23:http://tracker.example/"
    assert doc.raw(b"comment") == b"2:hi"
    assert doc.span(b"announce") == (11, 37)


def test_nested_keys() -> None:
    doc = decode_document(TORRENT)
    assert doc.raw(b"info", b"name") == b"8:file.txt"
    assert doc.raw(b"info", b"length") == b"i1024e"
    assert doc.raw(b"info", b"piece length") == b"i16384e"
    assert doc.raw(b"info", b"pieces") == b"20:" + bytes(range(20))
    start, end = doc.span(b"info", b"length")
    assert TORRENT[start:end] == b"i1024e"


def test_list_indices() -> None:
    doc = decode_document(FILES)
    assert doc.raw(b"files", 0) == b"d6:lengthi1e4:pathl1:aee"
    assert doc.raw(b"files", 1) == b"d6:lengthi2e4:pathl1:b1:cee"
    assert doc.raw(b"files", 1, b"path") == b"l1:b1:ce"
    assert doc.raw(b"files", 1, b"path", 0) == b"1:b"
    assert doc.raw(b"files", 1, b"path", 1) == b"1:c"
    assert doc.raw(b"files", 0, b"length") == b"i1e"
    assert doc.raw(b"empty") == b"le"


def test_every_span_is_the_encoding_of_its_value() -> None:
    doc = decode_document(FILES)
    value = doc.value
    assert isinstance(value, dict)
    for key, item in value.items():
        assert doc.raw(key) == encode(item)
    files = value[b"files"]
    assert isinstance(files, list)
    for index, item in enumerate(files):
        assert doc.raw(b"files", index) == encode(item)


def test_str_path_steps() -> None:
    doc = decode_document(FILES)
    assert doc.raw("files", 1, "path", 1) == doc.raw(b"files", 1, b"path", 1) == b"1:c"
    assert doc.raw("name") == b"3:dir"
    doc = decode_document(encode({"été": {"ü": 1}}))
    assert doc.raw("été", "ü") == b"i1e"
    assert doc.raw("été".encode(), "ü") == b"i1e"


def test_scalar_documents() -> None:
    assert decode_document(b"i-5e").span() == (0, 4)
    assert decode_document(b"4:spam").raw() == b"4:spam"
    assert decode_document(b"0:").raw() == b"0:"
    assert decode_document(b"le").raw() == b"le"


def test_keys_and_values_that_look_like_the_key_sought() -> None:
    # The key b"info" appears first as a value, then inside a string, then as the key.
    data = encode(
        {b"a": b"info", b"b": b"4:infod4:name1:xe", b"c": [b"info"], b"info": {b"name": b"y"}}
    )
    doc = decode_document(data)
    assert doc.raw(b"info") == b"d4:name1:ye"
    assert doc.raw(b"b") == b"17:4:infod4:name1:xe"


def test_empty_key_and_awkward_strings() -> None:
    value: dict[bytes, Encodable] = {
        b"": b"e",
        b"1:": [b"", b"ee", 0],
        b"e": {b"i": -1},
        b"x" * 300: b":" * 300,
    }
    data = encode(value)
    doc = decode_document(data)
    assert doc.raw(b"") == b"1:e"
    assert doc.raw(b"1:") == b"l0:2:eei0ee"
    assert doc.raw(b"1:", 1) == b"2:ee"
    assert doc.raw(b"1:", 2) == b"i0e"
    assert doc.raw(b"e", b"i") == b"i-1e"
    assert doc.raw(b"x" * 300) == b"300:" + b":" * 300


def test_deep_paths() -> None:
    depth = 10_000
    data = b"l" * depth + b"e" * depth
    doc = decode_document(data, max_depth=depth)
    assert doc.span(*([0] * (depth - 1))) == (depth - 1, depth + 1)
    assert doc.span(*([0] * (depth // 2))) == (depth // 2, len(data) - depth // 2)
    error = _path_error(doc, *([0] * depth))
    assert "no value" in str(error)


def test_input_types() -> None:
    for data in (bytearray(TORRENT), memoryview(TORRENT), memoryview(b"x" + TORRENT + b"x")[1:-1]):
        doc = decode_document(data)
        assert type(doc.data) is bytes
        assert doc.data == TORRENT
        assert doc.raw(b"info") == INFO


def test_raw_is_independent_of_later_changes_to_a_mutable_input() -> None:
    data = bytearray(TORRENT)
    doc = decode_document(data)
    data[:] = b"x" * len(data)
    assert doc.raw(b"info") == INFO


# --- lenient documents: the info-hash of non-canonical bytes ---------------------------

UNSORTED_INFO = b"d4:name1:x6:lengthi1e12:piece lengthi4e6:pieces0:e"
UNSORTED_TORRENT = b"d4:infod4:name1:x6:lengthi1e12:piece lengthi4e6:pieces0:e8:announce0:e"


def test_lenient_raw_returns_the_original_non_canonical_bytes() -> None:
    with pytest.raises(BencodeDecodeError) as info:
        decode_document(UNSORTED_TORRENT)
    assert info.value.kind is DecodeErrorKind.UNSORTED_KEYS
    doc = decode_document(UNSORTED_TORRENT, lenient=True)
    raw = doc.raw(b"info")
    assert raw == UNSORTED_INFO
    value = doc.value
    assert isinstance(value, dict)
    canonical = encode(value[b"info"])
    assert canonical == b"d6:lengthi1e4:name1:x12:piece lengthi4e6:pieces0:e"
    assert raw != canonical
    assert hashlib.sha1(raw).digest() != hashlib.sha1(canonical).digest()
    assert doc.raw(b"info", b"name") == b"1:x"
    assert doc.raw(b"announce") == b"0:"
    assert doc.raw() == UNSORTED_TORRENT


def test_lenient_keys_keep_input_order_in_the_value() -> None:
    doc = decode_document(UNSORTED_TORRENT, lenient=True)
    value = doc.value
    assert isinstance(value, dict)
    assert list(value) == [b"info", b"announce"]
    info = value[b"info"]
    assert isinstance(info, dict)
    assert list(info) == [b"name", b"length", b"piece length", b"pieces"]


def test_lenient_document_of_sorted_input_is_the_same() -> None:
    doc = decode_document(TORRENT, lenient=True)
    assert doc.raw(b"info") == INFO == encode(decode(INFO))


# --- paths that lead nowhere ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ((b"missing",), "[b'missing']"),
        (("missing",), "['missing']"),
        ((b"info", b"nope"), "[b'info'][b'nope']"),
        ((b"info", b"name", b"x"), "[b'info'][b'name'][b'x']"),  # into a string
        ((b"info", b"length", 0), "[b'info'][b'length'][0]"),  # into an integer
        ((b"info", 0), "[b'info'][0]"),  # an index into a dict
        ((0,), "[0]"),
        ((b"inf",), "[b'inf']"),  # a prefix of a key
        ((b"infox",), "[b'infox']"),
        ((b"announce", 0), "[b'announce'][0]"),
    ],
)
def test_missing_paths_in_a_dict(path: tuple[PathStep, ...], where: str) -> None:
    error = _path_error(decode_document(TORRENT), *path)
    assert isinstance(error, LookupError)
    assert isinstance(error, BencodeError)
    assert where in str(error)


@pytest.mark.parametrize(
    "path",
    [
        (b"files", 2),
        (b"files", 100),
        (b"files", -1),
        (b"files", b"0"),  # a key into a list
        (b"files", "0"),
        (b"empty", 0),
        (b"files", 0, b"path", 1),
        (b"files", 1, b"path", 0, 0),
    ],
)
def test_missing_paths_in_a_list(path: tuple[PathStep, ...]) -> None:
    error = _path_error(decode_document(FILES), *path)
    assert "".join(f"[{step!r}]" for step in path) in str(error)


def test_paths_into_scalar_documents() -> None:
    _path_error(decode_document(b"i1e"), 0)
    _path_error(decode_document(b"4:spam"), b"spam")
    _path_error(decode_document(b"4:spam"), 0)


def test_a_str_step_with_a_lone_surrogate_is_a_missing_path() -> None:
    doc = decode_document(b"d1:ai1ee")
    _path_error(doc, "\ud800")


# --- decode_document errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "offset"),
    [
        (b"", DecodeErrorKind.UNEXPECTED_EOF, 0),
        (TORRENT[:-1], DecodeErrorKind.UNEXPECTED_EOF, len(TORRENT) - 1),
        (TORRENT + b"x", DecodeErrorKind.TRAILING_DATA, len(TORRENT)),
        (b"d1:ai01ee", DecodeErrorKind.LEADING_ZERO, 5),
        (b"d1:ai1e1:ai1ee", DecodeErrorKind.DUPLICATE_KEY, 7),
    ],
)
def test_decode_document_errors(data: bytes, kind: DecodeErrorKind, offset: int) -> None:
    for lenient in (False, True):
        with pytest.raises(BencodeDecodeError) as info:
            decode_document(data, lenient=lenient)
        assert (info.value.kind, info.value.offset) == (kind, offset)


def test_decode_document_max_depth() -> None:
    with pytest.raises(BencodeDecodeError) as info:
        decode_document(b"llee", max_depth=1)
    assert info.value.kind is DecodeErrorKind.DEPTH_EXCEEDED
    assert decode_document(b"llee", max_depth=2).raw(0) == b"le"
    with pytest.raises(ValueError, match="max_depth"):
        decode_document(b"le", max_depth=-1)


def test_decode_document_rejects_str() -> None:
    with pytest.raises(TypeError):
        decode_document("le")  # type: ignore[arg-type]
