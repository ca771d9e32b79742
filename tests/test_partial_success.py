"""`partial_success`: counts every rejected span, keeps a bounded number of messages."""

from __future__ import annotations

from evolution_store.partial_success import MAX_ERROR_MESSAGES, PartialSuccess


def test_nothing_to_say_is_an_empty_message() -> None:
    report = PartialSuccess()
    assert (report.rejected, report.errors, report.error_message) == (0, [], "")


def test_rejections_are_counted_with_their_reasons() -> None:
    report = PartialSuccess()
    report.reject("span 1: bad id")
    report.reject("span 2: bad id")
    assert report.rejected == 2
    assert report.error_message == "2 span(s) rejected: span 1: bad id; span 2: bad id"


def test_a_note_alone_is_a_warning_without_a_count() -> None:
    report = PartialSuccess()
    report.note("rewards on span ab could not be read")
    assert report.rejected == 0
    assert report.error_message == "rewards on span ab could not be read"


def test_messages_are_bounded_and_the_rest_counted() -> None:
    report = PartialSuccess()
    for index in range(100_000):
        report.reject(f"span {index}: bad")
    assert report.rejected == 100_000
    assert len(report.errors) == MAX_ERROR_MESSAGES
    assert report.errors[0] == "span 0: bad"  # the first ones are kept
    text = report.error_message
    assert text.startswith("100000 span(s) rejected: span 0: bad; ")
    assert text.endswith(f"; and {100_000 - MAX_ERROR_MESSAGES} more")
    assert len(text) < 500


def test_absorb_adds_counts_and_keeps_the_bound() -> None:
    first = PartialSuccess()
    first.reject("a")
    first.note("warning")
    second = PartialSuccess()
    for index in range(MAX_ERROR_MESSAGES + 3):
        second.reject(f"b{index}")
    first.absorb(second)
    assert first.rejected == 1 + MAX_ERROR_MESSAGES + 3
    assert len(first.errors) == MAX_ERROR_MESSAGES
    assert first.errors[:3] == ["a", "warning", "b0"]
    # messages neither report kept: 3 dropped by `second`, the rest by `first` on absorbing
    dropped = (2 + MAX_ERROR_MESSAGES + 3) - MAX_ERROR_MESSAGES
    assert first.error_message.endswith(f"; and {dropped} more")
    assert second.rejected == MAX_ERROR_MESSAGES + 3  # the other report is left as it was


def test_absorbing_an_empty_report_changes_nothing() -> None:
    report = PartialSuccess()
    report.reject("x")
    report.absorb(PartialSuccess())
    assert (report.rejected, report.errors, report.error_message) == (
        1,
        ["x"],
        "1 span(s) rejected: x",
    )
