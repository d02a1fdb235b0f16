#!/usr/bin/env python3
"""The lab's independent Kafka client (kafka-python): produce a known sequence of messages to
one broker (one tansu one-node cluster), read it back, and report as one JSON line.

  kafka_roundtrip.py roundtrip --bootstrap HOST:PORT --topic T --messages N --size S --partitions P
  kafka_roundtrip.py produce   --bootstrap HOST:PORT --topic T --messages N --size S --partitions P

Message i goes to partition i % P and carries "<i>:" then padding, so the reader can tell
every message apart and check that each partition holds its messages complete and in order.
`produce` only produces and times it (the throughput comparison); `roundtrip` also consumes
and verifies. Every wait is bounded; a failure prints {"error": ...} and exits 1.
"""

import argparse
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

TIMEOUT_MS = 15000


def ensure_topic(bootstrap, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS,
                             client_id="lab-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def value(i, size):
    head = f"{i}:".encode()
    return head + b"x" * max(0, size - len(head))


def produce(bootstrap, topic, messages, size, partitions):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                             batch_size=256 * 1024, request_timeout_ms=TIMEOUT_MS,
                             max_block_ms=TIMEOUT_MS, client_id="lab-producer")
    # The metadata exchange is not part of what is timed.
    producer.partitions_for(topic)
    start = time.monotonic()
    futures = [producer.send(topic, value(i, size), partition=i % partitions)
               for i in range(messages)]
    producer.flush(timeout=60)
    seconds = time.monotonic() - start
    offsets = {}
    for f in futures:
        md = f.get(timeout=TIMEOUT_MS / 1000)
        offsets.setdefault(md.partition, []).append(md.offset)
    # The brokers this client was sent to, as the cluster advertises them.
    brokers = sorted(f"{b.host}:{b.port}" for b in producer._metadata.brokers())
    producer.close(timeout=10)
    return seconds, offsets, brokers


def consume(bootstrap, topic, messages, partitions):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             request_timeout_ms=TIMEOUT_MS + 1000, client_id="lab-consumer",
                             consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 60
    count = 0
    while count < messages and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000)
        for tp, records in batch.items():
            for r in records:
                got[tp.partition].append(int(r.value.split(b":", 1)[0]))
                count += 1
    consumer.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["roundtrip", "produce"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1)
    a = ap.parse_args()
    try:
        ensure_topic(a.bootstrap, a.topic, a.partitions)
        seconds, offsets, brokers = produce(a.bootstrap, a.topic, a.messages, a.size,
                                            a.partitions)
        out = {
            "bootstrap": a.bootstrap,
            "topic": a.topic,
            "brokers": brokers,
            "produced": sum(len(v) for v in offsets.values()),
            "bytes": a.messages * a.size,
            "produce_seconds": seconds,
            "mb_per_s": a.messages * a.size / seconds / 1e6 if seconds > 0 else 0.0,
        }
        if a.mode == "roundtrip":
            got = consume(a.bootstrap, a.topic, a.messages, a.partitions)
            # The topic is new (the lab's brokers start empty): it must hold exactly these.
            consumed = sum(len(v) for v in got.values())
            in_order = all(got[p] == [i for i in range(a.messages) if i % a.partitions == p]
                           for p in range(a.partitions))
            out["consumed"] = consumed
            out["in_order"] = in_order
        print(json.dumps(out))
        return 0
    except Exception as e:  # one line the lab can show, whatever failed
        print(json.dumps({"bootstrap": a.bootstrap, "error": f"{type(e).__name__}: {e}"}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
