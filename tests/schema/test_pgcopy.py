"""Binary COPY encoding helpers: JSON for jsonb columns."""

from __future__ import annotations

import json
import math

import numpy as np
from skyledger.schema.pgcopy import CopyWriter, to_json


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
