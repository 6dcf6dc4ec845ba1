"""The run's books against a plain Python reference: every input claimed once, replays
answered the same, the exactly-once tally, and buckets that split without losing anyone."""

from __future__ import annotations

import random

import numpy as np
import pytest

from resnet_batch.core.ledger import Ledger, bucket_of
from resnet_batch.core.pathset import path_hashes
from resnet_batch.run.bookkeeping import Books


def entries(seed: int, n: int, distinct: int) -> list[str]:
    rng = random.Random(seed)
    return [f"s3://bucket/{rng.randrange(distinct)}.jpg" for _ in range(n)]


@pytest.mark.parametrize("chunk", [1, 37, 5000])
def test_claims_match_a_reference_set(chunk):
    paths = entries(1, 20_000, 6_000)
    done_before = set(random.Random(2).sample(sorted(set(paths)), 800)) | {"s3://bucket/not-listed.jpg"}
    ledger = Ledger()
    ledger.add_done(path_hashes(sorted(done_before)))
    ledger.seal_done()
    seen, went = set(), []
    for start in range(0, len(paths), chunk):
        piece = paths[start : start + chunk]
        positions = np.arange(start, start + len(piece), dtype=np.int64)
        goes = ledger.claim(path_hashes(piece), positions)
        # A retried read lists the same entries at the same positions: the same answer.
        assert ledger.claim(path_hashes(piece), positions).tolist() == goes.tolist()
        for path, go in zip(piece, goes, strict=False):
            assert go == (path not in seen and path not in done_before), path
            seen.add(path)
        went += [p for p, g in zip(piece, goes, strict=False) if g]
    assert len(went) == len(set(went)) == len(seen - done_before)
    assert (ledger.inputs, ledger.already_done) == (len(seen), len(seen & done_before))
    assert len(ledger.runs) <= 2 * np.log2(len(seen)) + 1  # merged as they grow


def test_a_later_entry_never_takes_an_owned_input():
    ledger = Ledger()
    hashes = path_hashes(["/a.jpg", "/b.jpg"])
    assert ledger.claim(hashes, np.array([10, 11])).tolist() == [True, True]
    # The same paths at other positions (listed again, elsewhere): not again.
    assert ledger.claim(hashes, np.array([3, 12])).tolist() == [False, False]
    assert ledger.claim(hashes[:1], np.array([10])).tolist() == [True]  # the owner's replay


def test_a_folder_that_changed_since_the_count_is_claimed_as_it_is_now():
    """A resume counts what is left, then its pipeline lists the folder again: an image added
    in between moves every later rank, and none of them may read as a repeat."""
    before = [f"/d/{i:03d}.jpg" for i in range(0, 200, 2)]
    now = sorted(before + [f"/d/{i:03d}.jpg" for i in range(1, 200, 2)])
    ledger = Ledger()
    ledger.add_done(path_hashes(before[:50]))
    ledger.seal_done()
    assert ledger.claim(path_hashes(before), np.arange(100, dtype=np.int64)).sum() == 50  # the count
    ledger.forget_claims()
    goes = ledger.claim(path_hashes(now), np.arange(200, dtype=np.int64))
    assert goes.sum() == 150 and ledger.repeated == 0 and (ledger.inputs, ledger.already_done) == (200, 50)
    ledger.add_written(path_hashes([p for p, g in zip(now, goes, strict=True) if g]))
    assert ledger.tally()["missing"] == 0


def test_tally_counts_missing_and_duplicate_rows():
    paths = [f"/x/{i}.jpg" for i in range(100)]
    ledger = Ledger()
    ledger.add_done(path_hashes(paths[:10] + paths[:2]))  # two rows written twice before
    ledger.seal_done()
    ledger.claim(path_hashes(paths), np.arange(100, dtype=np.int64))
    ledger.add_written(path_hashes(paths[10:95]))
    ledger.set_hidden("/x", 3)
    assert ledger.tally() == {
        "outside": 0,
        "inputs": 100,
        "already_done": 10,
        "missing": 5,
        "rows": 97,
        "duplicates": 2,
        "repeated": 0,
        "hidden": 3,
    }
    # An output read back whole counts what it holds now, not what it held before.
    ledger.add_written(path_hashes(paths[:10]))
    assert ledger.tally(with_done=False)["rows"] == 95


def test_buckets_split_every_hash_once():
    hashes = path_hashes(entries(3, 50_000, 50_000))
    for n in (1, 3, 64):
        which = bucket_of(hashes, n)
        assert which.min() >= 0 and which.max() < n
        counts = np.bincount(which, minlength=n)
        assert counts.sum() == len(hashes) and counts.min() > 0.7 * len(hashes) / n  # near even


def test_books_on_ray_answer_as_one_ledger(ray_local):
    paths = entries(4, 30_000, 10_000)
    local, spread = Books.in_process(), Books.on_ray(buckets=3)
    claims = []
    for start in range(0, len(paths), 4000):
        hashes = path_hashes(paths[start : start + 4000])
        positions = np.arange(start, start + len(hashes), dtype=np.int64)
        claims.append((hashes, positions))
        assert local.claim(hashes, positions).tolist() == spread.claim(hashes, positions).tolist()
    assert local.tally(True) == spread.tally(True)
    # The driver's books handed to an actor as they stand: replays get the same answers.
    moved = Books.on_ray(local)
    for hashes, positions in claims:
        assert moved.claim(hashes, positions).tolist() == local.claim(hashes, positions).tolist()
    assert moved.tally(True) == local.tally(True)
