"""A per_tile rank reads its share as its engine takes lines, not before: a share of millions of lines is never
held, only the lines in flight (no engine here: the rank's stream itself, over a real file and a real ledger)."""

import itertools

from omegaconf import OmegaConf

from helpers.compose import compose_config
from helpers.inputs import write_inputs
from runner.engine import Answer
from runner.readers import reader_of
from runner.records import LINE, Record
from runner.run_dir import RunDir
from runner.spread_rank import _open, _to_answer, _write
from runner.work_items import Piece


def test_the_share_is_read_only_as_far_as_the_engine_has_taken_and_unread_lines_keep_the_item_open(tmp_path):
    path = write_inputs(tmp_path / "in", {"a.txt": [f"line {i}" for i in range(1, 101)]}) / "a.txt"
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config(f"input.path={path}"), resolve=True))
    run = RunDir(tmp_path / "run").make()
    run.parts.mkdir(parents=True, exist_ok=True)
    item = _open(cfg, run, Piece(str(path), 1, 101, 0, 100))
    item.ledger.append([Record({"file": "a.txt", LINE: n}, "p", "r", prompt_tokens=1, output_tokens=1,
                               finish_reason="stop").to_json() for n in (2, 3)])  # answered by an earlier run
    owner = {}
    stream = _to_answer([item], reader_of(cfg), True, owner)
    taken = list(itertools.islice(stream, 5))
    assert [entry.number for entry in taken] == [1, 4, 5, 6, 7]  # 2 and 3 are not answered again
    assert list(item.numbers) == [1, 2, 3, 4, 5, 6, 7] and not item.read_all  # nothing read beyond what was taken
    assert sorted(owner) == sorted(id(entry) for entry in taken)  # only the lines in flight are held
    _write(owner, [(entry, Answer(f"answer {entry.number}", 1, 1, "stop")) for entry in taken])
    assert owner == {}
    assert not item.finish(run)  # every line read has a record, but 93 were never read (a walltime stop)
    item = _open(cfg, run, Piece(str(path), 1, 101, 0, 100))  # the rerun's rank: its ledger holds 7 lines
    rest = list(_to_answer([item], reader_of(cfg), True, owner))
    assert [entry.number for entry in rest] == list(range(8, 101)) and item.read_all
    _write(owner, [(entry, Answer("a", 1, 1, "stop")) for entry in rest])
    assert item.finish(run) and sorted(p.name for p in run.parts.iterdir()) == ["a.txt.1-101.jsonl"]


def test_an_item_whose_last_line_was_taken_is_read_whole_without_another_pull(tmp_path):
    """A walltime stop right after the engine took an item's last line: the item was never marked read, so its
    answered lines stayed unjoined for a rerun."""
    path = write_inputs(tmp_path / "in", {"a.txt": ["one", "two", "", "three"]}) / "a.txt"
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config(f"input.path={path}"), resolve=True))
    run = RunDir(tmp_path / "run").make()
    run.parts.mkdir(parents=True, exist_ok=True)
    item, owner = _open(cfg, run, Piece(str(path), 1, 5, 0, 3)), {}
    taken = list(itertools.islice(_to_answer([item], reader_of(cfg), True, owner), 3))  # no pull past the last
    assert [entry.number for entry in taken] == [1, 2, 4] and item.read_all
    _write(owner, [(entry, Answer("a", 1, 1, "stop")) for entry in taken])
    assert item.finish(run)
