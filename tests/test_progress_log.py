"""progress.jsonl survives a kill in the middle of an append."""

import json
import os

import pytest

from tf_sparse_winograd import training
from tf_sparse_winograd.training import checkpointing


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_records_round_trip(tmp_path):
    path = os.path.join(tmp_path, "progress.jsonl")
    records = [{"event": "start", "epoch": 0}, {"event": "epoch_end", "epoch": 1, "loss": 0.5}]
    for record in records:
        checkpointing.append_progress(path, record)
    assert training.read_progress(tmp_path) == records


def test_a_last_line_cut_by_a_kill_is_skipped(tmp_path):
    whole = json.dumps({"event": "epoch_end", "epoch": 1}) + "\n"
    _write(os.path.join(tmp_path, "progress.jsonl"), whole + '{"event": "epoch_e')
    assert training.read_progress(tmp_path) == [{"event": "epoch_end", "epoch": 1}]


def test_the_next_append_drops_the_fragment(tmp_path):
    path = os.path.join(tmp_path, "progress.jsonl")
    whole = json.dumps({"event": "epoch_end", "epoch": 1}) + "\n"
    _write(path, whole + '{"event": "epoch_e')
    checkpointing.append_progress(path, {"event": "start", "epoch": 1})
    with open(path) as f:
        assert f.read() == whole + json.dumps({"event": "start", "epoch": 1}) + "\n"
    assert [r["event"] for r in training.read_progress(tmp_path)] == ["epoch_end", "start"]


def test_a_fragment_with_no_complete_line_before_it(tmp_path):
    path = os.path.join(tmp_path, "progress.jsonl")
    _write(path, '{"eve')
    assert training.read_progress(tmp_path) == []
    checkpointing.append_progress(path, {"event": "start", "epoch": 0})
    assert training.read_progress(tmp_path) == [{"event": "start", "epoch": 0}]


def test_a_malformed_line_in_the_middle_raises(tmp_path):
    _write(os.path.join(tmp_path, "progress.jsonl"), '{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match=r"progress.jsonl: line 2 .*not json"):
        training.read_progress(tmp_path)
