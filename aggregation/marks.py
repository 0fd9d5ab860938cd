"""Where dedupe marks live: a digest of an event's identity, mapped to the packed position
of the event that set it (``state`` says why the position matters).

Two homes, one interface. ``MemoryMarks`` is a dict: about 120 bytes of RAM per mark,
which a 24-hour window at 150k events/s (13 billion marks) would turn into 1.6 TB.
``DiskGeneration`` keeps the marks in RocksDB on local disk and only a Bloom filter in memory,
about 2 bytes per mark: a mark the filter has never seen is new for certain (the common
case, one probe of a few bytes), and only a filter hit reads the disk, so the answer
stays exact. The local copy is a cache of what the store holds (the stored events are
the marks' source of truth, reloaded when a worker takes a partition), so it is written
without RocksDB's write-ahead log and wiped when a worker starts.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from aggregation.model import Position

# A mark's position packed into one int (a third of the memory of a tuple of three):
# offset above bit 32, the index in the record in bits 16-31 (``MAX_RECORD_EVENTS``),
# the partition below.
MAX_PARTITIONS = 1 << 16


def pack(position: Position) -> int:
    partition, offset, index = position
    return (offset << 32) | (index << 16) | partition


def pack_all(
    partitions: Iterable[int], offsets: Iterable[int], indices: Iterable[int]
) -> list[int]:
    """``pack`` of many positions, given as columns."""
    places = zip(partitions, offsets, indices, strict=True)
    return [(offset << 32) | (index << 16) | partition for partition, offset, index in places]


def unpack(packed: int) -> Position:
    return Position(packed & 0xFFFF, packed >> 32, (packed >> 16) & 0xFFFF)


class Generation(Protocol):
    """One generation of marks (``Marks`` keeps two)."""

    def get(self, mark: bytes, default: None = None) -> int | None: ...
    def get_many(self, marks: list[bytes]) -> list[int | None]: ...
    def __setitem__(self, mark: bytes, packed: int) -> None: ...
    def update(self, marks: dict[bytes, int]) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def prefetch(self, marks: list[bytes]) -> None: ...
    def flush(self) -> None: ...
    def destroy(self) -> None: ...


class MemoryMarks(dict[bytes, int]):
    """A generation held in a dict: about 120 bytes of RAM per mark."""

    def prefetch(self, marks: list[bytes]) -> None:
        pass  # every mark is in memory already

    def get_many(self, marks: list[bytes]) -> list[int | None]:
        get = self.get
        return [get(mark) for mark in marks]

    def flush(self) -> None:
        pass

    def destroy(self) -> None:
        self.clear()


class Marks:
    """Marks in two generations: set in the newest, moved to the older when the dedupe
    window rotates, dropped at the rotation after. Rotating every window W keeps each mark
    for at least W and at most 2W, with no timestamp per mark."""

    def __init__(self, new_generation: Callable[[], Generation] = MemoryMarks) -> None:
        self._new_generation = new_generation
        self.newest, self.older = new_generation(), new_generation()
        # Partitions another worker may now hold: their marks are not answered from here
        # until the store's are reloaded (``restore``), which hold at least as much.
        self.forgotten: set[int] = set()

    def prefetch(self, marks: list[bytes]) -> None:
        """A batch's marks, before it asks for them one by one."""
        for generation in (self.newest, self.older):
            generation.prefetch(marks)

    def flush(self) -> None:
        """The batch is over: what it set is kept as the generation keeps it."""
        self.newest.flush()
        self.older.flush()

    def get(self, mark: bytes) -> int | None:
        packed = self.newest.get(mark)
        if packed is None:
            packed = self.older.get(mark)
        if packed is not None and self.forgotten and packed & 0xFFFF in self.forgotten:
            return None
        return packed

    def get_many(self, marks: list[bytes]) -> list[int | None]:
        """``get`` of each mark, the generations asked once each for the whole list."""
        found = self.newest.get_many(marks)
        if len(self.older):
            missing = [i for i, packed in enumerate(found) if packed is None]
            if missing:
                older = self.older.get_many([marks[i] for i in missing])
                for i, packed in zip(missing, older, strict=True):
                    found[i] = packed
        if self.forgotten:
            gone = self.forgotten
            found = [None if p is not None and p & 0xFFFF in gone else p for p in found]
        return found

    def __setitem__(self, mark: bytes, packed: int) -> None:
        self.newest[mark] = packed

    def set_many(self, marks: dict[bytes, int]) -> None:
        self.newest.update(marks)

    def __len__(self) -> int:
        return len(self.newest) + len(self.older)

    def __iter__(self) -> Iterator[bytes]:
        seen = set()
        for generation in (self.newest, self.older):
            for mark in generation:
                if mark not in seen and self.get(mark) is not None:
                    seen.add(mark)
                    yield mark

    def __contains__(self, mark: object) -> bool:
        return isinstance(mark, bytes) and self.get(mark) is not None

    def forget(self, partitions: set[int]) -> None:
        self.forgotten |= partitions

    def restore(self, marks: Iterable[tuple[bytes, int]], partitions: set[int]) -> None:
        """The store's marks of ``partitions``, which answer for them again."""
        for mark, packed in marks:
            self.newest[mark] = packed
        self.newest.flush()
        self.forgotten -= partitions

    def rotate(self) -> int:
        """Start a new generation; return how many marks the dropped one held."""
        self.flush()
        dropped, self.older, self.newest = self.older, self.newest, self._new_generation()
        forgotten = len(dropped)
        dropped.destroy()
        return forgotten


# The Bloom filter's shape: 12 bits and 8 probes per mark give 0.3% false positives, a
# disk read for one new mark in 300; a filter that fills up is joined by one twice its
# size, so memory follows the number of marks (at most 24 bits, 3 bytes, per mark).
BITS_PER_MARK = 12
PROBES = 8
FIRST_CAPACITY = 1 << 16


class _BloomFilter:
    """Over 16-byte digests, which are uniform already: the two halves of a digest give
    the probes (Kirsch and Mitzenmacher's double hashing), no further hashing needed.
    It answers and learns a batch of marks at a time, in NumPy."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bits = capacity * BITS_PER_MARK
        self.array = np.zeros((self.bits + 7) // 8, dtype=np.uint8)
        self.count = 0

    def _probes(self, digests: np.ndarray) -> np.ndarray:
        """Bit numbers, one row of PROBES per digest (rows of two little-endian uint64)."""
        first, step = digests[:, 0:1], digests[:, 1:2] | np.uint64(1)
        with np.errstate(over="ignore"):  # 64-bit arithmetic that wraps, on purpose
            probes = first + np.arange(PROBES, dtype=np.uint64) * step
        return (probes % np.uint64(self.bits)).astype(np.int64)

    def might_hold(self, digests: np.ndarray) -> np.ndarray:
        bits = self._probes(digests)
        held = (self.array[bits >> 3] >> (bits & 7).astype(np.uint8)) & 1
        return cast(np.ndarray, held.all(axis=1))

    def add(self, digests: np.ndarray) -> None:
        bits = self._probes(digests).ravel()
        np.bitwise_or.at(self.array, bits >> 3, np.left_shift(1, bits & 7).astype(np.uint8))
        self.count += len(digests)


def _digests(marks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(marks), dtype="<u8").reshape(-1, 2)


def _encode(packed: int) -> bytes:
    return packed.to_bytes((packed.bit_length() + 7) // 8 or 1, "little")


class DiskGeneration:
    """A generation of marks in a RocksDB of its own, behind Bloom filters in memory.

    The batch step asks for a batch's marks at once (``prefetch``): the filters answer
    for all of them in one vectorised probe, and the few they might hold are read in one
    multi-get. Marks set during the batch wait in a dict and reach the disk and the
    filters together when the batch ends (``flush``), in one write."""

    def __init__(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = path
        self._db = Rdict(str(path), options)
        self._no_log = WriteOptions()
        # A property, which the stubs take for a method.
        self._no_log.disable_wal = True  # type: ignore[method-assign,assignment]
        self._filters = [_BloomFilter(FIRST_CAPACITY)]
        self._known: dict[bytes, int | None] = {}  # prefetched: mark -> stored, or None
        self._pending: dict[bytes, int] = {}  # set during the batch
        self._count = 0

    def prefetch(self, marks: list[bytes]) -> None:
        """Read what the disk holds of ``marks``; ``get`` then answers from memory."""
        if not marks:
            return
        digests = _digests(marks)
        maybe = np.zeros(len(marks), dtype=bool)
        for bloom in self._filters:
            maybe |= bloom.might_hold(digests)
        self._known.update(dict.fromkeys(marks))
        hits = [mark for mark, hit in zip(marks, maybe.tolist(), strict=True) if hit]
        if hits:
            found = cast(list[bytes | None], self._db.get(cast(Any, hits)))
            for mark, value in zip(hits, found, strict=True):
                if value is not None:
                    self._known[mark] = int.from_bytes(value, "little")

    def _stored(self, mark: bytes) -> int | None:
        if mark in self._known:
            return self._known[mark]
        digests = _digests([mark])
        if not any(bloom.might_hold(digests)[0] for bloom in self._filters):
            return None
        value = cast(bytes | None, self._db.get(mark))
        return None if value is None else int.from_bytes(value, "little")

    def get(self, mark: bytes, default: None = None) -> int | None:
        packed = self._pending.get(mark)
        return packed if packed is not None else self._stored(mark)

    def get_many(self, marks: list[bytes]) -> list[int | None]:
        pending, known, stored = self._pending, self._known, self._stored
        return [
            packed if (packed := pending.get(mark)) is not None
            else known[mark] if mark in known else stored(mark)
            for mark in marks
        ]  # fmt: skip

    def __setitem__(self, mark: bytes, packed: int) -> None:
        self._pending[mark] = packed

    def update(self, marks: dict[bytes, int]) -> None:
        self._pending.update(marks)

    def flush(self) -> None:
        """Write what the batch set, and teach the filters its new marks."""
        pending, self._pending = self._pending, {}
        self.prefetch([mark for mark in pending if mark not in self._known])
        new = [mark for mark in pending if self._known[mark] is None]
        self._known = {}
        if not pending:
            return
        batch = WriteBatch(raw_mode=True)
        for mark, packed in pending.items():
            batch.put(mark, _encode(packed))
        self._db.write(batch, self._no_log)
        while new:
            bloom = self._filters[-1]
            room = bloom.capacity - bloom.count
            if room <= 0:
                self._filters.append(_BloomFilter(bloom.capacity * 2))
                continue
            bloom.add(_digests(new[:room]))
            new = new[room:]
        self._count = sum(bloom.count for bloom in self._filters)

    def __len__(self) -> int:
        return self._count + len(self._pending)

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pending
        for mark in self._db.keys():  # noqa: SIM118 (a RocksDB, whose iterator is not its keys)
            if mark not in self._pending:
                yield cast(bytes, mark)

    @property
    def memory_bytes(self) -> int:
        """What the filters hold in RAM (RocksDB's own caches are bounded, not per mark)."""
        return sum(bloom.array.nbytes for bloom in self._filters)

    def compact(self) -> None:
        """Move everything to disk in its final, compacted form (for measuring it)."""
        self._db.flush()
        self._db.compact_range(None, None)

    def destroy(self) -> None:
        self._db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)


def disk_generations(folder: Path) -> Callable[[], Generation]:
    """New generations of ``DiskGeneration`` in a folder of this process's own under
    ``folder``. What a process left there is a cache of the store (a worker reloads the
    marks of the partitions it takes), so the folders of processes that are gone are
    removed: several workers may share one data directory on a host."""
    for left in folder.glob("process-*"):
        if not _alive(int(left.name.removeprefix("process-"))):
            shutil.rmtree(left, ignore_errors=True)
    own = folder / f"process-{os.getpid()}"
    shutil.rmtree(own, ignore_errors=True)
    numbers = itertools.count()
    return lambda: DiskGeneration(own / f"generation-{next(numbers)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return pid != os.getpid()
