"""The progress lines of a job in a log or a pipe, from snapshots fed in (no job, no Ray)."""

from __future__ import annotations

from resnet_batch.cli.summary_text import summary_json, summary_lines
from resnet_batch.run.progress.snapshot import LogReporter, Snapshot


def snapshot(phase: str, done: int = 0, saved: int = 0, total: int = 10, walking: bool = True) -> Snapshot:
    return Snapshot(done, saved, total, walking, 0, 1.0, phase=phase)


def test_a_line_every_few_seconds_and_the_last_once():
    lines: list[str] = []
    report = LogReporter(every_s=3600, emit=lines.append)  # no line before the hour is up...
    report(snapshot("starting Ray"))
    report(snapshot("labeling", done=4, saved=2))
    report(snapshot("labeling", done=10, saved=10, walking=False))  # ...but the last, once all is saved
    report(snapshot("labeling", done=10, saved=10, walking=False))
    assert lines == ["labeling: 10/10 images (100.0%), 10 saved, 0 errors, rate not yet known"]

    timed: list[str] = []
    every = LogReporter(every_s=0.0, emit=timed.append)
    for done in range(3):
        every(snapshot("labeling", done=done))
    assert [line.split(",")[0] for line in timed] == [f"labeling: {d} images of 10+ listed so far" for d in range(3)]
    # A total below what is done (a bucket still being listed by tasks): no total, no percentage.
    said: list[str] = []
    unknown = LogReporter(every_s=0.0, emit=said.append)
    unknown(snapshot("labeling", done=450, saved=450, total=0, walking=False))
    assert said == ["labeling: 450 images so far, 450 saved, 0 errors, rate not yet known"]


def test_the_summary_says_what_a_lost_node_made_the_job_redo():
    """Rows through the model beyond the rows received: blocks Ray ran again after a node died."""
    from resnet_batch.run.summary import LabelSummary, Timeline

    def summary(labeled: int) -> LabelSummary:
        return LabelSummary("none", 100, 0, 100, 100, Timeline(launched=1.0, ended=9.0, labeled=labeled))

    redone = summary(116)
    assert "redone: 16 rows labeled twice (their first result was lost)" in summary_lines(redone)
    assert summary_json(redone, "out")["labeled"] == 116
    assert not [line for line in summary_lines(summary(100)) if line.startswith("redone")]


def test_a_stop_says_the_rows_the_first_signal_found_else_those_saved():
    """The stop line's counts: the pipeline's, for the signal that stopped it; a second
    signal while stopping says the first one's; a stop once every row was saved says those."""
    import signal

    from resnet_batch.core.errors import Interrupted
    from resnet_batch.run.job import stop_said

    first = Interrupted(signal.SIGTERM, processed=120, saved=100)
    assert stop_said(first, saved=100) is first
    try:
        try:
            raise first
        except Interrupted:
            raise KeyboardInterrupt  # noqa: B904 (a second signal as Ray stops: chained implicitly)
    except KeyboardInterrupt as second:
        said = stop_said(second, saved=100)
    assert (said.signum, said.processed, said.saved) == (signal.SIGTERM, 120, 100)
    after_the_end = stop_said(Interrupted(signal.SIGINT), saved=64)
    assert (after_the_end.signum, after_the_end.processed, after_the_end.saved) == (signal.SIGINT, 64, 64)
    assert stop_said(Interrupted(signal.SIGINT), saved=0).processed == 0
