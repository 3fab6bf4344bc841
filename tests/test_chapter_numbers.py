"""Chapter regression: the key numbers each chapter reports on the demo world stay put.

`make book` sets SCALEINV_RECORD so every `scaleinv_utils.record.record(key, value)` call in a
chapter lands in _build/chapter_numbers.jsonl. A dependency or code change that silently moves
a reported number outside its tolerance fails here. To accept an intended change, update
tests/chapter_numbers.json (and say why in the commit)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from scaleinv_utils.record import record

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "_build" / "chapter_numbers.jsonl"
EXPECTED = json.loads((ROOT / "tests" / "chapter_numbers.json").read_text())


def recorded_numbers():
    if not RECORDED.exists():
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail(f"{RECORDED} missing: the book build recorded no numbers")
        pytest.skip("book not built (run `make book`)")
    values = {}
    for line in RECORDED.read_text().splitlines():
        item = json.loads(line)
        values[item["key"]] = item["value"]
    return values


@pytest.mark.book
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_reported_number_unchanged(key):
    values = recorded_numbers()
    assert key in values, f"{key} was not reported by any chapter"
    spec = EXPECTED[key]
    assert np.isclose(values[key], spec["value"], rtol=spec.get("rtol", 0.05), atol=spec.get("atol", 0.0)), \
        f"{key}: the book now reports {values[key]:.4g}, expected {spec['value']:.4g}"


@pytest.mark.book
def test_every_reported_number_has_an_expectation():
    missing = sorted(set(recorded_numbers()) - set(EXPECTED))
    assert not missing, f"add these to tests/chapter_numbers.json: {missing}"


def test_record_appends_and_validates(tmp_path, monkeypatch):
    target = tmp_path / "numbers.jsonl"
    monkeypatch.setenv("SCALEINV_RECORD", str(target))
    assert record("a.b", 1.5) == 1.5
    record("a.c", np.float32(2))
    assert [json.loads(x)["key"] for x in target.read_text().splitlines()] == ["a.b", "a.c"]
    with pytest.raises(ValueError, match="finite scalar"):
        record("a.d", [1, 2])
    with pytest.raises(ValueError, match="finite scalar"):
        record("a.e", float("nan"))
    monkeypatch.delenv("SCALEINV_RECORD")
    assert record("a.f", 3) == 3  # no file outside a build
