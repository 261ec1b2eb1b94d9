"""Atomic outputs and the one writer of case lists (duolift_bundle/io_utils.py)."""

from __future__ import annotations

import json

import pytest
from duolift_bundle.io_utils import write_case_list


@pytest.mark.parametrize("name", ["failed.json", "skipped.json"])
def test_a_case_list_is_written_or_a_stale_one_removed(tmp_path, name):
    path = tmp_path / name
    write_case_list(path, {"x": "bad"})
    assert json.loads(path.read_text()) == {"x": "bad"}
    assert not [p for p in tmp_path.iterdir() if p.name != name]  # no temporary left beside it
    write_case_list(path, {})
    assert not path.exists()
    write_case_list(path, {})  # nothing there, nothing listed: no error
    write_case_list(path, [{"path": "a", "reason": "no CT"}])  # skipped.json: a list of sources
    assert json.loads(path.read_text()) == [{"path": "a", "reason": "no CT"}]
