"""`EventCapture`: a sink that keeps every event, for assertions in tests."""

from __future__ import annotations

from agentkit.events import Event

__all__ = ["EventCapture"]


class EventCapture:
    """Pass an instance as a sink (it is callable) and inspect what the run emitted.

    >>> capture = EventCapture()
    >>> runtime = Runtime(task, sinks=[capture])   # doctest: +SKIP
    >>> capture.kinds()[:1]                        # doctest: +SKIP
    ['run.started']
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        """Every event's kind, in emission order."""
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]

    def first(self, kind: str) -> Event:
        """The first event of a kind (AssertionError naming what was seen if there is none)."""
        for event in self.events:
            if event.kind == kind:
                return event
        raise AssertionError(f"no {kind!r} event; saw {self.kinds()}")

    def clear(self) -> None:
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)
