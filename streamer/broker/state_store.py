"""The calibrator state store on Kafka: each partition's checkpoint written in chunks to the
compacted state topic (two copies, so a crash mid-save never leaves only a torn one) and read back
when the partition is assigned (``streamer.checkpoints.PartitionCheckpoints`` decides when)."""

from __future__ import annotations

from collections.abc import Collection

import structlog
from kafka import KafkaProducer

from streamer.broker.ranges import read_to_end
from streamer.broker.sinks import ProducerSink
from streamer.broker.transactions import Transaction
from streamer.broker.waits import DeliveryWait
from streamer.checkpoints import SavedState
from streamer.config import KafkaConfig
from streamer.records import Partition

log = structlog.get_logger(__name__)


class KafkaStateStore:
    """Checkpoints on the compacted ``<group>.state`` topic.

    A snapshot can exceed Kafka's 1 MB record limit (about 330 KB per entity at a 10,000-score
    window), so it is cut into chunks of at most ``chunk_bytes``, keyed
    ``<group>|<topic>/<partition>|<slot>|<index>``. Generations alternate between slots 0 and 1,
    so compaction never removes the last complete generation while a newer one is half written
    (a crash mid-save); a reader takes the newest generation whose chunks are all present.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        kafka: KafkaConfig,
        transaction: Transaction | None = None,
        chunk_bytes: int = 900_000,
        wait: DeliveryWait | None = None,
    ) -> None:
        self.kafka, self.chunk_bytes = kafka, chunk_bytes
        self.sink = ProducerSink(producer, kafka.state_topic, transaction, wait)
        self.prefix = f"{kafka.group_id}|"

    def write(self, partition: Partition, saved: SavedState) -> None:
        data, size = saved.snapshot, self.chunk_bytes
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        topic, number = partition
        for index, chunk in enumerate(chunks):
            key = f"{self.prefix}{topic}/{number}|{saved.generation % 2}|{index}"
            headers = [
                ("tandem.generation", str(saved.generation).encode()),
                ("tandem.chunks", str(len(chunks)).encode()),
                ("tandem.offset", str(saved.offset).encode()),
            ]
            self.sink.send(key.encode(), chunk, headers)

    def flush(self) -> None:
        self.sink.flush()

    def read(
        self, partitions: Collection[Partition], timeout_s: float = 30.0
    ) -> dict[Partition, SavedState]:
        wanted = {f"{topic}/{number}": (topic, number) for topic, number in partitions}
        # (partition, slot) -> index -> (generation, chunks, offset, bytes); later records win.
        slots: dict[tuple[Partition, str], dict[int, tuple[int, int, int, bytes]]] = {}
        for record in read_to_end(self.kafka, self.kafka.state_topic, timeout_s):
            key, value, headers = record.key, record.value, record.headers or ()
            parts = key.decode(errors="replace").split("|") if key else []
            if len(parts) != 4 or f"{parts[0]}|" != self.prefix or parts[1] not in wanted:
                continue
            try:
                meta = {name: int(raw) for name, raw in headers if name.startswith("tandem.")}
                chunk = (meta["tandem.generation"], meta["tandem.chunks"], meta["tandem.offset"])
                index = int(parts[3])
            except (KeyError, ValueError):
                log.warning("checkpoint_chunk_unreadable", key=parts)
                continue
            slots.setdefault((wanted[parts[1]], parts[2]), {})[index] = (*chunk, value or b"")
        found: dict[Partition, SavedState] = {}
        for (partition, _), chunks in slots.items():
            generation, count, offset, _ = chunks.get(0, (0, 0, 0, b""))
            pieces = [chunks.get(i) for i in range(count)]
            if not count or any(p is None or p[0] != generation for p in pieces):
                continue
            best = found.get(partition)
            if best is None or generation > best.generation:
                data = b"".join(p[3] for p in pieces if p is not None)
                found[partition] = SavedState(data, offset, generation)
        return found
