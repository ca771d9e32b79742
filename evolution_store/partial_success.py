"""What an ingest call did not store, as OTLP's `partial_success` reports it: rejected spans
and warnings (a reward carrier that could not be read), with a bounded number of messages so
a batch of 100,000 bad spans cannot produce a 10 MB answer."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ERROR_MESSAGES = 5


@dataclass
class PartialSuccess:
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    _dropped_messages: int = field(default=0, repr=False)

    def reject(self, message: str) -> None:
        """Count one rejected span and keep its reason (the first few only)."""
        self.rejected += 1
        self.note(message)

    def note(self, message: str) -> None:
        """Keep a short message for `error_message` (the first few only)."""
        if len(self.errors) < MAX_ERROR_MESSAGES:
            self.errors.append(message)
        else:
            self._dropped_messages += 1

    def absorb(self, other: PartialSuccess) -> None:
        """Add another report's rejections and messages to this one."""
        self.rejected += other.rejected
        for message in other.errors:
            self.note(message)
        self._dropped_messages += other._dropped_messages

    @property
    def error_message(self) -> str:
        """The text for `partial_success.error_message` ("" when there is nothing to say)."""
        if not self.errors:
            return ""
        text = "; ".join(self.errors)
        if self._dropped_messages:
            text += f"; and {self._dropped_messages} more"
        if self.rejected:
            text = f"{self.rejected} span(s) rejected: {text}"
        return text
