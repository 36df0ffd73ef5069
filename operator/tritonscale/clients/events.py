"""What to do with an Event before it reaches the API server: create it, fold it into an
earlier one, or drop it.

The rules are client-go's EventCorrelator (tools/record/events_cache.go), which kubectl users
already know from the events of Deployments and Pods:
- the same event (object, type, reason, message) again within 10 minutes raises the earlier
  one's count and lastTimestamp (`kubectl describe` shows "x4 over 9m") instead of adding one;
- from the 10th distinct message of one object, type and reason within 10 minutes, they are
  folded into one event "(combined from similar events): <latest message>";
- each object may post a burst of 25 events, then one every 5 minutes (a token bucket), so a
  flapping stack cannot flood etcd.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# client-go's defaults (events_cache.go).
SIMILAR_WINDOW_S = 600.0
SIMILAR_BEFORE_COMBINING = 10
BURST = 25
REFILL_EVERY_S = 300.0
CACHE_ENTRIES = 4096
COMBINED_PREFIX = "(combined from similar events): "


@dataclass(frozen=True)
class Create:
    """Post a new Event with this message; report its name back with `created`."""

    key: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Update:
    """Raise the count of the Event `name` and show this message."""

    key: tuple[str, ...]
    name: str
    count: int
    message: str


@dataclass(frozen=True)
class Drop:
    """The object spent its budget: nothing is posted."""


Action = Create | Update | Drop


@dataclass
class _Posted:
    name: str | None  # None until the API server named it
    count: int
    last_s: float


@dataclass
class _Similar:
    messages: dict[str, float]  # distinct messages -> when last seen


@dataclass
class _Bucket:
    tokens: float
    refilled_s: float


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class EventCorrelator:
    """Thread-safe; `decide` before posting, `created` once the API server named the Event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posted: _Lru[tuple[str, ...], _Posted] = _Lru(CACHE_ENTRIES)
        self._similar: _Lru[tuple[str, ...], _Similar] = _Lru(CACHE_ENTRIES)
        self._buckets: _Lru[str, _Bucket] = _Lru(CACHE_ENTRIES)

    def decide(self, obj: str, event_type: str, reason: str, message: str, now_s: float) -> Action:
        """`obj` identifies the involved object (its UID, or namespace/name)."""
        with self._lock:
            if not self._take_token(obj, now_s):
                return Drop()
            similar_key = (obj, event_type, reason)
            similar = self._similar.get(similar_key) or _Similar({})
            similar.messages = {m: t for m, t in similar.messages.items() if now_s - t < SIMILAR_WINDOW_S}
            similar.messages[message] = now_s
            self._similar.put(similar_key, similar)
            if len(similar.messages) >= SIMILAR_BEFORE_COMBINING:
                key: tuple[str, ...] = (*similar_key, COMBINED_PREFIX)
                message = COMBINED_PREFIX + message
            else:
                key = (*similar_key, message)
            posted = self._posted.get(key)
            if posted is not None and posted.name is not None and now_s - posted.last_s < SIMILAR_WINDOW_S:
                posted.count += 1
                posted.last_s = now_s
                return Update(key, posted.name, posted.count, message)
            self._posted.put(key, _Posted(None, 1, now_s))
            return Create(key, message)

    def created(self, key: tuple[str, ...], name: str) -> None:
        with self._lock:
            posted = self._posted.get(key)
            if posted is not None:
                posted.name = name

    def forget(self, key: tuple[str, ...]) -> None:
        """The Event is gone (expired or deleted): the next one is created afresh."""
        with self._lock:
            self._posted.put(key, _Posted(None, 0, float("-inf")))

    def _take_token(self, obj: str, now_s: float) -> bool:
        bucket = self._buckets.get(obj) or _Bucket(float(BURST), now_s)
        bucket.tokens = min(float(BURST), bucket.tokens + (now_s - bucket.refilled_s) / REFILL_EVERY_S)
        bucket.refilled_s = now_s
        self._buckets.put(obj, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
