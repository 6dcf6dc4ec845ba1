"""--mode error|overwrite|resume and the bad-input catalogue through the whole pipeline."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.run import ray_session
from resnet_batch.run.job import run_label

from .inputs_catalogue import write_catalogue


def read_parts(out):
    # The user's own NOTES.md sits in the directory too, so read the part files by name.
    return pq.ParquetDataset(sorted(str(p) for p in out.glob("part-*.parquet"))).read()


def config(inputs, out, **kw) -> LabelConfig:
    base = dict(model="resnet18", weights="none", precision="fp32", batch_size=4, top_k=2)
    return LabelConfig.of(inputs=tuple(str(i) for i in inputs), output=str(out), **{**base, **kw})


def test_catalogue_end_to_end(ray_local, tmp_path):
    folder = tmp_path / "in"
    expected = write_catalogue(folder)
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(str(folder / n) for n in sorted(expected)) + "\n")
    summary = run_label(config([manifest], tmp_path / "out", max_pixels=50_000_000))
    assert summary.complete and summary.inputs == len(expected)
    want = Counter(v for v in expected.values() if v)
    assert summary.errors == want
    rows = {r["path"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert set(rows) == {str(folder / n) for n in expected}
    for name, outcome in expected.items():
        row = rows[str(folder / name)]
        if outcome is None:
            assert row["error"] is None and len(row["topk_ids"]) == 2 and len(row["embedding"]) == 512, name
            assert row["width"] > 0 and row["height"] > 0
        else:
            assert row["error"].startswith(outcome + ":"), (name, row["error"])
            assert row["embedding"] is None and row["topk_ids"] is None


def test_overwrite_replaces_only_our_files_and_resume_skips_done(ray_local, tmp_path, monkeypatch):
    from .conftest import write_reference_set

    images = write_reference_set(tmp_path / "in")
    out = tmp_path / "out"
    null = dict(model="none")  # which files and rows, not what they hold
    first = run_label(config([tmp_path / "in"], out, rows_per_file=3, **null))
    assert first.complete and first.processed == len(images)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 2 and all(pq.read_metadata(p).num_rows <= 3 for p in parts)
    (out / "NOTES.md").write_text("kept")

    with pytest.raises(UsageError, match="already holds"):
        run_label(config([tmp_path / "in"], out, **null))

    # Resume with nothing left: no work, same files, and a local directory is counted
    # without Ray.
    with monkeypatch.context() as m:
        m.setattr(ray_session, "join_or_start", lambda address: pytest.fail("Ray started for a finished resume"))
        resumed = run_label(config([tmp_path / "in"], out, mode="resume", **null))
    assert resumed.complete and resumed.processed == 0 and resumed.already_done == len(images)
    assert sorted(out.glob("part-*.parquet")) == parts

    # Simulate a run that died after some files: drop two part files, leave a temp file.
    lost = pq.read_table(parts[0]).num_rows + pq.read_table(parts[1]).num_rows
    parts[0].unlink(), parts[1].unlink()
    temporary = out / f"_tmp-{'de' * 16}.parquet"  # as the writer names them
    temporary.write_bytes(b"half a file")
    resumed = run_label(config([tmp_path / "in"], out, mode="resume", **null))
    assert resumed.complete and resumed.processed == lost and resumed.already_done == len(images) - lost
    assert not temporary.exists()
    assert read_parts(out).num_rows == len(images)

    # Resuming with settings that change the numbers is refused.
    with pytest.raises(UsageError, match=r"--top-k was \d+, now 7 \(in part-"):
        run_label(config([tmp_path / "in"], out, mode="resume", top_k=7, **null))
    with pytest.raises(UsageError, match="--review-below was unset, now 0.5"):
        run_label(config([tmp_path / "in"], out, mode="resume", review_below=0.5, **null))

    again = run_label(config([tmp_path / "in"], out, mode="overwrite", top_k=1, **null))
    assert again.complete and again.processed == len(images)
    assert (out / "NOTES.md").read_text() == "kept"
    table = read_parts(out)
    assert table.num_rows == len(images) and {len(x) for x in table["topk_ids"].to_pylist()} == {1}


def test_overwrite_refuses_a_file_as_output(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        run_label(config([tmp_path], target, mode="overwrite"))
