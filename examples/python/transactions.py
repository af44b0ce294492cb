"""Reassembles Tributary's source transactions with confluent-kafka-python.

The contract it relies on is docs/CONSUMING.md: the transactions topic holds
one frame per source transaction, in commit order, with the number of records
the transaction wrote to each topic-partition; a reader that takes exactly
that many committed records from each partition, in offset order, holds the
whole transaction, and merging them by the tributary.position header gives
the source's order.

    python3 transactions.py --brokers HOST:PORT --registry URL --prefix PREFIX \
        --checkpoint FILE [--count N] [--idle-exit SECONDS]

It prints JSON lines: {"begin": ...}, one {"event": ...} per change, then
{"commit": ...}; the producer's heartbeat frames (no transaction) are not
printed. After each commit line it saves its position in FILE (replaced
atomically), and a restart resumes there: a transaction is printed again
only when the process died between its commit line and that save, so this
reader is at-least-once, and exactly-once for an application that stores
its effects and the position in one transaction of its own.

Memory is bounded: records stream through a small buffer per partition
(partitions whose buffer is full are paused), never a whole transaction.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from collections import deque

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

BUFFER = 1000  # records buffered per data partition before it is paused


def header(msg, name):
    for k, v in msg.headers() or []:
        if k == name:
            return v.decode()
    return None


class Checkpoint:
    """The reader's position: the next offset of the transactions topic and
    of every data partition it has read."""

    def __init__(self, path):
        self.path = path
        self.tx_next, self.data_next = 0, {}
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            self.tx_next = saved["transactions_next"]
            self.data_next = {(d["topic"], d["partition"]): d["next"] for d in saved["data"]}

    def save(self):
        state = {"transactions_next": self.tx_next,
                 "data": [{"topic": t, "partition": p, "next": n} for (t, p), n in sorted(self.data_next.items())]}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(self.path)))
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class DataReader:
    """Committed records of the data partitions, from the checkpoint's
    offsets, buffered per partition."""

    def __init__(self, conf, cp):
        self.consumer = Consumer(conf)
        self.cp = cp
        self.buffers = {}
        self.paused = set()

    def ensure(self, tp):
        if tp not in self.buffers:
            self.buffers[tp] = deque()
            start = self.cp.data_next.get(tp, OFFSET_BEGINNING)
            self.consumer.incremental_assign([TopicPartition(tp[0], tp[1], start)])

    def peek(self, tp, deadline):
        """The next committed record of tp, left in the buffer."""
        buf = self.buffers[tp]
        while not buf:
            if time.time() > deadline:
                raise TimeoutError("no record on %s[%d] for 60 s" % tp)
            self.poll()
        return buf[0]

    def take(self, tp, deadline):
        """The next committed record of tp."""
        self.peek(tp, deadline)
        buf = self.buffers[tp]
        msg = buf.popleft()
        if tp in self.paused and len(buf) < BUFFER // 2:
            self.consumer.resume([TopicPartition(tp[0], tp[1])])
            self.paused.discard(tp)
        return msg

    def poll(self):
        for msg in self.consumer.consume(num_messages=500, timeout=0.5):
            if msg.error():
                raise KafkaException(msg.error())
            tp = (msg.topic(), msg.partition())
            buf = self.buffers[tp]
            buf.append(msg)
            if len(buf) >= BUFFER and tp not in self.paused:
                self.consumer.pause([TopicPartition(tp[0], tp[1])])
                self.paused.add(tp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--count", type=int, default=0, help="stop after this many transactions (0: never)")
    ap.add_argument("--idle-exit", type=float, default=0, help="stop after this many seconds without a frame (0: never)")
    args = ap.parse_args()

    deser = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    conf = {"bootstrap.servers": args.brokers, "group.id": "tributary-example-unused",
            "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": False,
            # A stored offset below a partition's log start (retention deleted
            # the records) is an error, never a silent jump to the log's end.
            "auto.offset.reset": "error"}
    cp = Checkpoint(args.checkpoint)
    tx_topic = args.prefix + ".transactions"
    frames = Consumer(conf)
    frames.assign([TopicPartition(tx_topic, 0, cp.tx_next)])
    data = DataReader(conf, cp)
    printed, idle_since = 0, time.time()
    while args.count == 0 or printed < args.count:
        msg = frames.poll(0.5)
        if msg is None:
            if args.idle_exit and time.time() - idle_since > args.idle_exit:
                break
            continue
        if msg.error():
            raise KafkaException(msg.error())
        idle_since = time.time()
        frame = deser(msg.value(), SerializationContext(tx_topic, MessageField.VALUE))
        heartbeat = frame["xid"] == 0 and frame["event_count"] == 0 and not frame.get("snapshot") \
            and not frame.get("snapshot_request")
        commit_lsn = str(frame["commit_lsn"])
        if not heartbeat:
            print(json.dumps({"begin": {"xid": frame["xid"], "commit_lsn": frame["commit_lsn"],
                                        "commit_time": str(frame["commit_ts"]), "events": frame["event_count"],
                                        "snapshot": frame.get("snapshot") is not None}}))
        # Merge the frame's partitions by position: each partition holds its
        # share of the transaction in position order.
        left = {}
        for pc in frame["partitions"]:
            tp = (pc["topic"], pc["partition"])
            data.ensure(tp)
            left[tp] = pc["count"]
        deadline = time.time() + 60
        while any(left.values()):
            tp = min((tp for tp, n in left.items() if n), key=lambda tp: int(header(data.peek(tp, deadline), "tributary.position")))
            rec = data.take(tp, deadline)
            if header(rec, "tributary.commit_lsn") != commit_lsn:
                raise RuntimeError("%s[%d] offset %d: commit LSN %s, frame at offset %d says %s" % (
                    tp[0], tp[1], rec.offset(), header(rec, "tributary.commit_lsn"), msg.offset(), commit_lsn))
            left[tp] -= 1
            cp.data_next[tp] = rec.offset() + 1
            ctx = SerializationContext(tp[0], MessageField.VALUE)
            value = deser(rec.value(), ctx) if rec.value() is not None else None
            key = deser(rec.key(), SerializationContext(tp[0], MessageField.KEY)) if rec.key() else None
            print(json.dumps({"event": {"topic": tp[0], "partition": tp[1], "offset": rec.offset(),
                                        "position": int(header(rec, "tributary.position")),
                                        "key": key, "value": value}}, default=str))
        cp.tx_next = msg.offset() + 1
        if not heartbeat:
            print(json.dumps({"commit": {"xid": frame["xid"], "commit_lsn": frame["commit_lsn"]}}))
            printed += 1
        sys.stdout.flush()
        cp.save()
    frames.close()
    data.consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
