"""IronflowSaver: LangGraph checkpoints kept as Ironflow entity-stream events.

How they map (one rule each):

- A thread is the entity stream ``langgraph/thread/<thread_id>``; the stream
  ``langgraph/threads`` lists the threads (one ``langgraph.thread`` event each), so a
  listing across threads or a delete by run id can find them.
- ``put`` appends one ``langgraph.checkpoint`` event: the checkpoint without its channel
  values, its metadata, its parent's id, and the values of the channels that changed
  (the ``new_versions``), keyed by channel and version. A checkpoint's channel values are
  read back from whichever event holds each ``(channel, version)``.
- ``put_writes`` appends one ``langgraph.writes`` event per call. Writes at an index
  already recorded for a task are ignored (the first wins), special writes (errors,
  interrupts) are replaced by a later one, as LangGraph's own savers do.
- Each append carries an idempotency key made of what it stores, so a call repeated
  after a lost reply appends nothing new.
- A node's writes and the checkpoint that follows them are appended in one transaction
  when the store can (one durable commit a node, not two; see ``_turns.py``).
- Deletes and prunes delete stream events (``Store.delete_stream_events``); values a
  kept checkpoint still needs from a deleted event are first appended again in a
  ``langgraph.blobs`` event, so nothing a kept checkpoint reads is ever lost.

Being events, checkpoints show in ``ironflow events``, the HTTP API and the dashboard,
and every append is durable (fsync'd, or acknowledged by the server) before ``put``
returns. Reads fold the stream; each saver caches the folds of recent threads and reads
only the events appended since, checking that the last event it folded is still there.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_serializable_checkpoint_metadata,
        writes_sort_key,
    )
except ImportError:  # pragma: no cover - depends on the install
    from ironflow.errors import MissingExtraError

    raise MissingExtraError("ironflow.contrib.langgraph", "langgraph", "langgraph") from None

from ironflow.contrib.langgraph._turns import Pending, Turns
from ironflow.contrib.langgraph._values import EMPTY, decode, encode, is_empty, make_serializer
from ironflow.errors import InvalidInputError
from ironflow.store import Event, Store
from ironflow.store._machine import StoreMachine

__all__ = ["THREADS_STREAM", "IronflowSaver", "thread_stream"]

T = TypeVar("T")

THREADS_STREAM = "langgraph/threads"
_THREAD_PREFIX = "langgraph/thread/"
_CHECKPOINT = "langgraph.checkpoint"
_WRITES = "langgraph.writes"
_BLOBS = "langgraph.blobs"
_THREAD = "langgraph.thread"
_PAGE = 1000
#: How many threads' folds one saver keeps in memory.
_CACHED_THREADS = 64
_STREAM_MAX_BYTES = 200


#: What a drop deletes (event versions) and re-appends first (values by namespace).
_Plan = tuple[list[int], dict[str, list[list[Any]]]]


def thread_stream(thread_id: str) -> str:
    """The entity stream that holds a thread's checkpoints."""
    stream = _THREAD_PREFIX + thread_id
    if len(stream.encode("utf-8", "surrogatepass")) > _STREAM_MAX_BYTES or "\x00" in thread_id:
        raise InvalidInputError(
            f"a LangGraph thread_id for IronflowSaver must be at most "
            f"{_STREAM_MAX_BYTES - len(_THREAD_PREFIX)} bytes without NUL, not {thread_id!r}"
        )
    return stream


def _digest(*parts: Any) -> str:
    raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:40]


def _version_key(version: Any) -> str:
    # 1, 1.0 and "1" are different versions to LangGraph; JSON text tells them apart.
    return orjson.dumps(version).decode()


class _Checkpoint:
    __slots__ = ("checkpoint", "id", "metadata", "ns", "parent", "run_id", "version")

    def __init__(self, data: dict[str, Any], version: int) -> None:
        self.ns: str = data["ns"]
        self.id: str = data["id"]
        self.parent: str | None = data["parent"]
        self.checkpoint: dict[str, Any] = data["checkpoint"]
        self.metadata: dict[str, Any] = data["metadata"]
        self.run_id: str | None = data.get("run_id")
        self.version = version


class _Thread:
    """A thread's stream folded: its checkpoints, channel values and writes."""

    def __init__(self) -> None:
        self.version = 0
        self.last_id: str | None = None
        self.checkpoints: dict[str, dict[str, _Checkpoint]] = {}
        #: (ns, channel, version key) -> (stored value, the event version holding it)
        self.blobs: dict[tuple[str, str, str], tuple[dict[str, Any], int]] = {}
        #: (ns, checkpoint id) -> (task id, idx) -> (task, channel, value, path, event version)
        self.writes: dict[
            tuple[str, str], dict[tuple[str, int], tuple[str, str, dict[str, Any], str, int]]
        ] = {}
        #: event version -> (kind, ns, checkpoint id or None)
        self.events: dict[int, tuple[str, str, str | None]] = {}

    def apply(self, event: Event) -> None:
        data, version = event.data, event.version
        if event.name == _CHECKPOINT:
            cp = _Checkpoint(data, version)
            self.checkpoints.setdefault(cp.ns, {})[cp.id] = cp
            self._blobs(cp.ns, data["blobs"], version)
            self.events[version] = (_CHECKPOINT, cp.ns, cp.id)
        elif event.name == _WRITES:
            ns, cp_id = data["ns"], data["checkpoint"]
            stored = self.writes.setdefault((ns, cp_id), {})
            for idx, channel, value in data["writes"]:
                key = (data["task"], idx)
                if idx >= 0 and key in stored:
                    continue  # a regular write is recorded once; a special one is replaced
                stored[key] = (data["task"], channel, value, data["path"], version)
            self.events[version] = (_WRITES, ns, cp_id)
        elif event.name == _BLOBS:
            self._blobs(data["ns"], data["blobs"], version)
            self.events[version] = (_BLOBS, data["ns"], None)
        self.version = version
        self.last_id = event.id

    def _blobs(self, ns: str, blobs: list[list[Any]], version: int) -> None:
        for channel, channel_version, value in blobs:
            self.blobs[(ns, channel, _version_key(channel_version))] = (value, version)

    def latest(self, ns: str) -> _Checkpoint | None:
        found = self.checkpoints.get(ns)
        return found[max(found)] if found else None

    @staticmethod
    def needed_blobs(cp: _Checkpoint, serde: Any) -> list[tuple[str, str, str]]:
        """The (namespace, channel, version) of every channel value the checkpoint reads."""
        stored = cp.checkpoint
        checkpoint = stored["json"] if "json" in stored else decode(serde, stored)
        versions = checkpoint.get("channel_versions", {})
        return [(cp.ns, ch, _version_key(v)) for ch, v in versions.items()]

    def ordered_writes(self, ns: str, cp_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        stored = self.writes.get((ns, cp_id), {})
        keys = sorted(stored, key=lambda k: writes_sort_key(stored[k][3], k[0], k[1]))
        return [(stored[k][0], stored[k][1], stored[k][2]) for k in keys]


class _Raw:
    """What a reader takes out of a fold under the lock; decoded after it is released."""

    __slots__ = ("blobs", "cp", "thread", "writes")

    def __init__(self, thread: str, t: _Thread, cp: _Checkpoint, serde: Any) -> None:
        self.thread = thread
        self.cp = cp
        needed = t.needed_blobs(cp, serde)
        self.blobs = {key: t.blobs[key][0] for key in needed if key in t.blobs}
        self.writes = t.ordered_writes(cp.ns, cp.id)


class IronflowSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer whose checkpoints are durable Ironflow records.

    ``IronflowSaver()`` opens the store the ``ironflow`` command would (``IRONFLOW_URL``,
    else ``IRONFLOW_DATA_DIR``, else ``./.ironflow``) and closes it on :meth:`close`.
    ``IronflowSaver(store)`` uses an open :class:`~ironflow.store.Store` or an
    :class:`ironflow.Client` and leaves closing it to the caller.

    Guarantees: ``put`` and ``put_writes`` return only after the store made the append
    durable; a call repeated after a crash or a lost reply stores nothing twice. Values
    are stored as JSON or, through LangGraph's serializer with pickle off, as msgpack;
    a value that cannot be stored, or whose type is outside ``allowed_modules`` (plus
    LangGraph's own safe types: messages, ``Send``, ``Interrupt``, datetimes, ...), raises
    :class:`~ironflow.errors.NotSerializableError` naming the channel, and nothing is
    written. Safe to share between threads; the ``a*`` methods run the same calls on a
    worker thread.
    """

    def __init__(
        self,
        store: Any = None,
        *,
        allowed_modules: Iterable[tuple[str, ...] | type] = (),
    ) -> None:
        super().__init__(serde=make_serializer(allowed_modules))
        self._owns_store = store is None
        if store is None:
            from ironflow.store._open import open_store

            store = open_store()
        elif not isinstance(store, Store) and isinstance(getattr(store, "store", None), Store):
            store = store.store  # an ironflow.Client
        if not isinstance(store, Store):
            raise InvalidInputError(
                f"IronflowSaver(store) takes an Ironflow Store or Client, not {store!r}"
            )
        self.store: Store = store
        self._lock = threading.Lock()
        self._folds: OrderedDict[str, _Thread] = OrderedDict()
        self._indexed: set[str] = set()
        #: Several appends in one transaction, where the store has it (not over HTTP).
        self._batch = store.append_many_to_stream if isinstance(store, StoreMachine) else None
        # A task's writes wait for the checkpoint put after them, to share its commit.
        self._turns = Turns(
            self._store_appends,
            waits=_WRITES,
            ends_wait=_CHECKPOINT,
            batches=self._batch is not None,
        )

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the store if this saver opened it. Idempotent."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> IronflowSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> IronflowSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- reading a thread ---------------------------------------------------------------

    def _read(self, stream: str, from_version: int) -> list[Event]:
        out: list[Event] = []
        while True:
            page = self.store.read_stream(stream, from_version=from_version, limit=_PAGE)
            out.extend(page)
            if len(page) < _PAGE:
                return out
            from_version = page[-1].version + 1

    def _with_fold(self, thread: str, fn: Callable[[_Thread], T]) -> T:
        """Bring the thread's fold up to date with its stream, then ``fn(fold)`` under the lock."""
        stream = thread_stream(thread)
        with self._lock:
            cached = self._folds.get(thread)
            base = (cached.version, cached.last_id) if cached is not None else (0, None)
        # The event last folded is read again: if it is gone (a delete elsewhere), refold.
        events = self._read(stream, base[0])
        with self._lock:
            fold = self._folds.get(thread)
            fresh = fold is None or (fold.version, fold.last_id) != base
            if base[0] and not (events and (events[0].version, events[0].id) == base):
                fresh = True
            if fresh or fold is None:
                if base[0]:
                    events = self._read(stream, 0)
                fold = _Thread()
                self._folds[thread] = fold
            for event in events:
                if event.version > fold.version:
                    fold.apply(event)
            self._folds.move_to_end(thread)
            while len(self._folds) > _CACHED_THREADS:
                self._folds.popitem(last=False)
            return fn(fold)

    def _appended(self, thread: str, event: Event) -> None:
        """Fold our own append, if it directly follows what is cached (else read it later)."""
        with self._lock:
            fold = self._folds.get(thread)
            if fold is not None and event.version == fold.version + 1:
                fold.apply(event)

    def _forget(self, thread: str) -> None:
        with self._lock:
            self._folds.pop(thread, None)

    def _tuple(self, raw: _Raw) -> CheckpointTuple:
        cp, serde = raw.cp, self.serde
        checkpoint = decode(serde, cp.checkpoint)
        values = {}
        for channel, version in checkpoint["channel_versions"].items():
            stored = raw.blobs.get((cp.ns, channel, _version_key(version)))
            if stored is not None and not is_empty(stored):
                values[channel] = decode(serde, stored)
        checkpoint["channel_values"] = values
        parent = None
        if cp.parent:
            parent = _config(raw.thread, cp.ns, cp.parent)
        return CheckpointTuple(
            config=_config(raw.thread, cp.ns, cp.id),
            checkpoint=checkpoint,
            metadata=decode(serde, cp.metadata),
            parent_config=parent,
            pending_writes=[(task, ch, decode(serde, v)) for task, ch, v in raw.writes],
        )

    # -- the BaseCheckpointSaver interface -------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest in its namespace."""
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        wanted = get_checkpoint_id(config)

        def pick(t: _Thread) -> _Raw | None:
            cp = t.checkpoints.get(ns, {}).get(wanted) if wanted else t.latest(ns)
            return None if cp is None else _Raw(thread, t, cp, self.serde)

        raw = self._with_fold(thread, pick)
        return None if raw is None else self._tuple(raw)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (and namespace, if given), or of all."""
        conf = config["configurable"] if config else {}
        threads = [str(conf["thread_id"])] if "thread_id" in conf else self._threads()
        ns = conf.get("checkpoint_ns")
        only = conf.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread in threads:

            def pick(t: _Thread, thread: str = thread) -> builtins.list[_Raw]:
                found = [
                    cp
                    for space, cps in t.checkpoints.items()
                    if ns is None or space == ns
                    for cp in cps.values()
                    if (not only or cp.id == only) and (not before_id or cp.id < before_id)
                ]
                found.sort(key=lambda cp: cp.id, reverse=True)
                return [_Raw(thread, t, cp, self.serde) for cp in found]

            for raw in self._with_fold(thread, pick):
                if remaining is not None and remaining <= 0:
                    return
                if filter:
                    metadata = decode(self.serde, raw.cp.metadata)
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                if remaining is not None:
                    remaining -= 1
                yield self._tuple(raw)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Append the checkpoint and its changed channel values; durable when it returns."""
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        what = f"LangGraph checkpoint {checkpoint['id']} of thread {thread!r}"
        serde = self.serde
        rest = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        values = checkpoint.get("channel_values", {})
        blobs = [
            [ch, v, encode(serde, values[ch], what, f"channel {ch!r}") if ch in values else EMPTY]
            for ch, v in new_versions.items()
        ]
        meta = get_serializable_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        data = {
            "thread": thread,
            "ns": ns,
            "id": checkpoint["id"],
            "parent": conf.get("checkpoint_id"),
            "run_id": None if run_id is None else str(run_id),
            "checkpoint": encode(serde, rest, what, "checkpoint"),
            "metadata": encode(serde, meta, what, "metadata"),
            "blobs": blobs,
        }
        self._append(thread, _CHECKPOINT, data)
        return _config(thread, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Append a task's writes against a checkpoint; durable when it returns."""
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        cp_id = conf["checkpoint_id"]
        what = f"LangGraph write of task {task_id!r} on thread {thread!r}"
        entries = [
            [WRITES_IDX_MAP.get(ch, idx), ch, encode(self.serde, value, what, f"channel {ch!r}")]
            for idx, (ch, value) in enumerate(writes)
        ]
        data = {
            "thread": thread,
            "ns": ns,
            "checkpoint": cp_id,
            "task": task_id,
            "path": task_path,
            "writes": entries,
        }
        self._append(thread, _WRITES, data)

    def _append(self, thread: str, name: str, data: dict[str, Any]) -> Event:
        after = None
        if name in (_CHECKPOINT, _WRITES):
            after = f"{data['ns']}\x00{data['parent' if name == _CHECKPOINT else 'checkpoint']}"
        return self._turns.append(thread, Pending(name, data, f"{name}:{_digest(data)}", after))

    def _store_appends(self, thread: str, items: builtins.list[Pending]) -> None:
        """Append ``items`` to the thread's stream, in one transaction if the store can;
        each item gets its event or its error, and our own appends are folded."""
        stream = thread_stream(thread)
        try:
            self._index(thread)  # in the thread's turn: its first appends do not race here
        except Exception as exc:
            for item in items:
                item.error = exc
            return
        if self._batch is not None and len(items) > 1:
            try:
                events = self._batch(stream, [(i.name, i.data, i.key) for i in items])
            except Exception:
                pass  # each item again alone, below: its caller hears its own answer
            else:
                for item, event in zip(items, events, strict=True):
                    item.event = event
                    self._appended(thread, event)
                return
        # One at a time: a store without batches, a lone item, or a batch that failed
        # (each caller then hears its own append's answer; the keys make a repeat of an
        # append that did commit a no-op).
        for item in items:
            try:
                event = self.store.append_to_stream(
                    stream, item.name, item.data, idempotency_key=item.key
                )
            except Exception as exc:
                item.error = exc
            else:
                item.event = event
                self._appended(thread, event)

    def _index(self, thread: str) -> None:
        """List the thread in the threads stream (once per saver), before its first append."""
        if thread in self._indexed:
            return
        self.store.append_to_stream(
            THREADS_STREAM,
            _THREAD,
            {"thread": thread},
            idempotency_key=f"thread:{_digest(thread)}",
        )
        self._indexed.add(thread)

    def _threads(self) -> builtins.list[str]:
        seen: dict[str, None] = {}
        for event in self._read(THREADS_STREAM, 0):
            seen.setdefault(event.data["thread"], None)
        return list(seen)

    # -- deleting, copying, pruning --------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of the thread."""
        thread = str(thread_id)
        self.store.delete_stream_events(thread_stream(thread))
        versions = [
            e.version for e in self._read(THREADS_STREAM, 0) if e.data.get("thread") == thread
        ]
        if versions:
            self.store.delete_stream_events(THREADS_STREAM, versions)
        self._indexed.discard(thread)
        self._forget(thread)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that these LangGraph runs made."""
        wanted = {str(r) for r in run_ids}
        if not wanted:
            return
        for thread in self._threads():
            doomed = self._with_fold(
                thread,
                lambda t: {
                    (cp.ns, cp.id)
                    for cps in t.checkpoints.values()
                    for cp in cps.values()
                    if cp.run_id in wanted
                },
            )
            if doomed:
                self._drop(thread, doomed)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread onto another, in order."""
        source, target = str(source_thread_id), str(target_thread_id)
        thread_stream(target)
        for event in self._read(thread_stream(source), 0):
            if event.name in (_CHECKPOINT, _WRITES, _BLOBS):
                self._append(target, event.name, {**event.data, "thread": target})

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint; ``delete``: keep none.

        A kept checkpoint keeps what it reads: its channel values, its writes and, for a
        thread using LangGraph's ``DeltaChannel``, every ancestor back to the nearest one
        holding a stored value for each delta channel.
        """
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInputError(
                f"prune strategy must be 'keep_latest' or 'delete', not {strategy!r}"
            )
        for thread_id in thread_ids:
            thread = str(thread_id)
            if strategy == "delete":
                self.delete_thread(thread)
                continue
            doomed = self._with_fold(thread, self._all_but_latest)
            if doomed:
                self._drop(thread, doomed)

    def _all_but_latest(self, t: _Thread) -> set[tuple[str, str]]:
        keep: set[tuple[str, str]] = set()
        for ns, cps in t.checkpoints.items():
            latest = cps[max(cps)]
            keep.add((ns, latest.id))
            delta = decode(self.serde, latest.metadata).get("counters_since_delta_snapshot")
            remaining = set(delta or ())
            current = cps.get(latest.parent) if latest.parent else None
            while remaining and current is not None:
                keep.add((ns, current.id))
                versions = decode(self.serde, current.checkpoint).get("channel_versions", {})
                for ch in list(remaining):
                    stored = t.blobs.get((ns, ch, _version_key(versions.get(ch))))
                    if ch in versions and stored is not None and not is_empty(stored[0]):
                        remaining.discard(ch)
                current = cps.get(current.parent) if current.parent else None
        return {(ns, cp_id) for ns, cps in t.checkpoints.items() for cp_id in cps} - keep

    def _drop(self, thread: str, doomed: set[tuple[str, str]]) -> None:
        """Delete these checkpoints and their writes, keeping what the others read."""

        def plan(t: _Thread) -> _Plan:
            kept = [
                cp for cps in t.checkpoints.values() for cp in cps.values()
                if (cp.ns, cp.id) not in doomed
            ]
            dead = {
                v for v, (kind, ns, cp_id) in t.events.items()
                if kind != _BLOBS and (ns, cp_id) in doomed
            }
            needed = {key for cp in kept for key in t.needed_blobs(cp, self.serde)}
            holders = {t.blobs[key][1] for key in needed if key in t.blobs}
            dead |= {v for v, (kind, _, _) in t.events.items() if kind == _BLOBS} - holders
            rehome: dict[str, builtins.list[builtins.list[Any]]] = {}
            for ns, ch, vkey in sorted(needed):
                found = t.blobs.get((ns, ch, vkey))
                if found is not None and found[1] in dead:
                    rehome.setdefault(ns, []).append([ch, orjson.loads(vkey), found[0]])
            return sorted(dead), rehome

        dead, rehome = self._with_fold(thread, plan)
        # Values still needed are appended again before the events holding them go, so a
        # crash in between leaves a duplicate, never a loss.
        for ns, blobs in rehome.items():
            self._append(thread, _BLOBS, {"thread": thread, "ns": ns, "blobs": blobs})
        if dead:
            self.store.delete_stream_events(thread_stream(thread), dead)
        self._forget(thread)

    def get_next_version(self, current: str | int | None, channel: None = None) -> str:
        """Versions that sort as text: a counter, then a random tie-breaker."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- async: the same calls on a worker thread ------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: [*self.list(config, filter=filter, before=before, limit=limit)]
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
    }
