"""Decodes every record of one topic as a third party would.

confluent-kafka-python reading committed records only, keys and values
decoded by its AvroDeserializer (fastavro) with default settings, the writer
schema fetched by the ID each record carries.

    python3 decode.py BROKERS REGISTRY_URL TOPIC COUNT

It stops after COUNT records and prints one JSON line: the count decoded, the
records that failed (partition, offset, error) and a few decoded values. It
exits 1 when any record failed or fewer than COUNT arrived in 120 s.
"""
import json
import os
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    if len(sys.argv) != 5:
        print("usage: python3 decode.py BROKERS REGISTRY_URL TOPIC COUNT", file=sys.stderr)
        return 2
    brokers, registry, topic, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    deser = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "thirdparty-py-%d-%d" % (os.getpid(), time.time()),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    decoded, failures, samples = 0, [], []
    deadline = time.time() + 120
    while decoded + len(failures) < want and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            failures.append({"error": str(msg.error())})
            continue
        try:
            key = None
            if msg.key() is not None:
                key = deser(msg.key(), SerializationContext(topic, MessageField.KEY))
            value = deser(msg.value(), SerializationContext(topic, MessageField.VALUE))
            decoded += 1
            if len(samples) < 2 and value.get("after"):
                samples.append({"key": key, "after": value["after"]})
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures.append({"partition": msg.partition(), "offset": msg.offset(), "error": "%s: %s" % (type(e).__name__, e)})
    consumer.close()
    print(json.dumps({"decoder": "confluent-kafka-python", "decoded": decoded, "want": want,
                      "failures": failures[:20], "failed": len(failures), "samples": samples}, default=str))
    return 0 if decoded == want and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
