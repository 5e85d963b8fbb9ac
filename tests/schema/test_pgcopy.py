"""PostgreSQL binary format helpers: JSON for jsonb columns, numeric arrays both ways."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from skyledger.schema.pgcopy import ENCODERS, CopyWriter, decode_array, numpy_arrays, to_json


def test_to_json_takes_numpy_scalars_and_turns_non_finite_numbers_into_null():
    assert json.loads(to_json({"a": np.int32(3), "b": np.float32(0.5), "c": np.bool_(True), "d": "x"})) == {
        "a": 3, "b": 0.5, "c": True, "d": "x",
    }  # fmt: skip
    # jsonb has no NaN: a NaN anywhere, however deep, becomes null; the rest is kept.
    nested = {"plate": 1, "deep": {"list": [1.0, math.nan, {"x": -math.inf}]}, "z": np.float64("nan")}
    assert json.loads(to_json(nested)) == {"plate": 1, "deep": {"list": [1.0, None, {"x": None}]}, "z": None}
    # Non-string keys and unknown objects go through the careful walk, as text.
    assert json.loads(to_json({1: "a", "b": object}))["1"] == "a"
    assert to_json([np.int64(2), "s"]) == '[2,"s"]'


def test_row_pieces_join_to_the_row_encoding():
    writer = CopyWriter(["int8", "text", "float4[]", "jsonb"])
    row = (7, "spec-1", np.arange(5, dtype=np.float32), {"a": 1})
    assert b"".join(writer.parts(row)) == writer.encode(row)
    assert writer.encode((None, None, None, None)).count(b"\xff\xff\xff\xff") == 4


def _fetch(database, query: str):
    """One value of ``query``, read in binary through a cursor with the numpy loaders."""
    with database.engine.connect() as conn:
        with conn.connection.driver_connection.cursor(binary=True) as cur:
            numpy_arrays(cur)
            return cur.execute(query).fetchone()[0]


def test_numeric_arrays_come_back_from_the_server_as_numpy(database):
    flux = _fetch(database, "SELECT ARRAY[1.5, -2.25, 3e-30, 'Infinity', 'NaN']::real[]")
    assert flux.dtype == np.float32 and flux.dtype.isnative
    np.testing.assert_array_equal(flux, np.array([1.5, -2.25, 3e-30, np.inf, np.nan], dtype=np.float32))
    wave = _fetch(database, "SELECT array_agg(3600.0 + g / 7.0 ORDER BY g)::float8[] FROM generate_series(0, 3999) g")
    np.testing.assert_array_equal(wave, 3600.0 + np.arange(4000) / 7.0)
    mask = _fetch(database, "SELECT ARRAY[0, 1, -2147483648, 2147483647]::int4[]")
    assert mask.dtype == np.int32 and mask.tolist() == [0, 1, -(2**31), 2**31 - 1]
    assert _fetch(database, "SELECT ARRAY[7, -1]::int8[]").tolist() == [7, -1]
    assert _fetch(database, "SELECT ARRAY[3]::int2[]").dtype == np.int16
    assert _fetch(database, "SELECT '{}'::real[]").shape == (0,)
    assert _fetch(database, "SELECT '{{1,2,3},{4,5,6}}'::float8[]").tolist() == [[1, 2, 3], [4, 5, 6]]
    # A NULL element is NaN in a float array; the whole-array NULL stays None.
    with_null = _fetch(database, "SELECT ARRAY[1, NULL, 3]::float8[]")
    assert with_null[0] == 1 and np.isnan(with_null[1]) and with_null[2] == 3
    assert _fetch(database, "SELECT NULL::real[]") is None
    # What the encoder writes, the decoder reads back.
    values = np.linspace(-1, 1, 64, dtype=np.float32)
    encoded = ENCODERS["float4[]"](values)[4:]  # past the COPY field length
    np.testing.assert_array_equal(decode_array(encoded, 700, ">f4"), values)


def test_an_integer_array_with_a_null_element_or_broken_bytes_is_refused(database):
    with pytest.raises(ValueError, match="NULL elements"):
        _fetch(database, "SELECT ARRAY[1, NULL]::int4[]")
    good = ENCODERS["float4[]"](np.arange(4, dtype=np.float32))[4:]
    with pytest.raises(ValueError, match="shorter than its 12-byte header"):
        decode_array(good[:8], 700, ">f4")
    with pytest.raises(ValueError, match="data bytes"):
        decode_array(good[:-1], 700, ">f4")  # truncated
    with pytest.raises(ValueError, match="type OID 700, expected 701"):
        decode_array(good, 701, ">f8")
    bad_len = bytearray(good)
    bad_len[20:24] = (8).to_bytes(4, "big")  # first element claims 8 bytes
    with pytest.raises(ValueError, match="length is not 4 bytes"):
        decode_array(bytes(bad_len), 700, ">f4")
