"""Fencing and part names, on real files: a writer that lost its output's lease makes no
part visible, a part that became visible after the takeover is never counted, and no two
sets of paths share a part name, whatever characters the paths hold."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resnet_batch.core.errors import LeaseLost
from resnet_batch.output import lease_record, ownership
from resnet_batch.output.part_names import FENCED_PREFIX, OUR_PART, part_name
from resnet_batch.output.record import RunRecord
from resnet_batch.output.repair import set_aside_fenced
from resnet_batch.output.writer import OutputDir


def _table(paths: list[str]) -> pa.Table:
    return pa.table({"path": paths, "error": pa.array([None] * len(paths), pa.string())})


@pytest.mark.parametrize(
    "one, other",
    [
        (["a\nb"], ["a", "b"]),  # the separator the old name joined with, inside a path
        (["a\x00b"], ["a", "b"]),
        (["ab", "c"], ["a", "bc"]),
        ([""], []),
        (["", ""], [""]),
        (["a\x00\x00\x00\x00\x00\x00\x00\x01b"], ["a", "b"]),  # a path holding a length prefix's bytes
    ],
)
def test_part_names_are_injective(one, other, tmp_path):
    assert part_name(one, "0" * 16) != part_name(other, "0" * 16)
    out = OutputDir(str(tmp_path / "out"))
    out.fs.makedirs(out.path, exist_ok=True)
    names = {out.write_part(_table(one)), out.write_part(_table(other))}
    assert len(names) == 2 and all(OUR_PART.fullmatch(n) for n in names)
    read = sorted(p for part in out.part_files() for p in pq.read_table(part).column("path").to_pylist())
    assert read == sorted(one + other)


def _mark(out: OutputDir) -> str:
    assert out.fence is not None, "the output's lease is held"
    return out.fence.mark


def test_a_retried_write_rewrites_its_own_part(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    with out.lease():
        first, again = out.write_part(_table(["a", "b"])), out.write_part(_table(["a", "b"]))
        assert first == again and first.endswith(f"-{_mark(out)}.parquet")
        assert len(out.part_files()) == 1


def _stale(lease_path, token: str) -> None:
    with open(lease_path) as f:
        record = json.load(f)
    assert record["token"] == token
    record["renewed"] = time.time() - 2 * lease_record.STALE_AFTER_S  # as after a long pause
    with open(lease_path, "w") as f:
        json.dump(record, f)


def test_a_writer_that_lost_the_lease_makes_nothing_visible(tmp_path):
    uri = str(tmp_path / "out")
    paused = OutputDir(uri)
    paused_lease = paused.lease().__enter__()
    paused.write_part(_table(["before"]))
    _stale(paused_lease.lease, paused_lease.token)
    taker = OutputDir(uri)
    with taker.lease() as lease:
        seal = json.loads((tmp_path / "out" / f"{ownership.FENCE_PREFIX}{_mark(paused)}.json").read_text())
        assert seal["parts"] == [p.rsplit("/", 1)[-1] for p in paused.part_files()] and seal["by"] == lease.token
        with pytest.raises(LeaseLost, match="is no longer this job's: another job took it over"):
            paused.write_part(_table(["after"]))
        with pytest.raises(LeaseLost):
            paused.record_run(RunRecord(model="none"))
        assert not list((tmp_path / "out").glob("_tmp-*")), "a refused part leaves no temporary file"
        taker.write_part(_table(["after"]))
    paused_lease._stop.set()  # its renewer: the lease is gone, and it never rewrites one not its own
    rows = pq.read_table(tmp_path / "out").column("path").to_pylist()
    assert sorted(rows) == ["after", "before"]


def test_a_part_made_visible_after_the_takeover_is_never_counted(tmp_path):
    """The check and the rename are two steps: a writer paused between them publishes after
    the takeover. Its mark is sealed, so the part is not counted, and is set aside."""
    uri = str(tmp_path / "out")
    paused = OutputDir(uri)
    paused_lease = paused.lease().__enter__()
    kept = paused.write_part(_table(["a"]))
    _stale(paused_lease.lease, paused_lease.token)
    taker = OutputDir(uri)
    with taker.lease():
        late = part_name(["b"], _mark(paused))  # what the paused writer renames into place now
        pq.write_table(_table(["b"]), tmp_path / "out" / late)
        assert [p.rsplit("/", 1)[-1] for p in taker.part_files()] == [kept]
        assert taker.fenced_parts() == [late]
        set_aside_fenced(taker)
        assert (tmp_path / "out" / f"{FENCED_PREFIX}{late}").exists()
    paused_lease._stop.set()
    assert pq.read_table(tmp_path / "out").column("path").to_pylist() == ["a"]


def test_the_renewer_never_takes_back_a_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "RENEW_EVERY_S", 0.01)
    uri = str(tmp_path / "out")
    paused = OutputDir(uri)
    paused_lease = paused.lease().__enter__()
    paused_lease._stop.set()  # paused: no renewal
    assert paused_lease._renewer is not None
    paused_lease._renewer.join()
    _stale(paused_lease.lease, paused_lease.token)
    with OutputDir(uri).lease() as taker:
        paused_lease._stop.clear()
        paused_lease._renew()  # wakes up: finds the lease another job's, and stops
        assert "another job took it over" in (paused_lease.lost or "")
        assert json.loads((tmp_path / "out" / ownership.LEASE_FILE).read_text())["token"] == taker.token


def test_stale_after_is_a_checked_setting(monkeypatch):
    monkeypatch.setenv(lease_record.STALE_VARIABLE, "5")
    assert lease_record.stale_after_s() == 5.0
    monkeypatch.setenv(lease_record.STALE_VARIABLE, "soon")
    with pytest.raises(ValueError, match="RESNET_BATCH_LEASE_STALE_S='soon': give the seconds"):
        lease_record.stale_after_s()
