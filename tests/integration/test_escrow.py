"""Bounds and the int64 range rest only on confirmed writes (I9), through
the api: while a write waits for Kafka (the broker frozen), it makes no
room for another write that would cross a bound should it fail; once
Kafka confirms it, the room is there. And a keyed write that the api
applied itself and then sent again through the log (Redis stalled, the
retry got 202) is confirmed by the applier from the log, so that its
first attempt, should its own event fail, takes nothing back (issue 15,
items 3 and 4a)."""

import json
import os
import signal
import time
import uuid

import scripts
from conftest import counter_name, freeze, run, wait_pg_total, wait_until
from resp import Resp


def test_a_write_waiting_for_kafka_makes_no_room_below(api, redis, pg, stack):
    name = counter_name("it_gauge_escrow")  # min 0, max 100
    pid = stack.pid("kafka")
    freeze(pid)
    try:
        up = api.incr(name, 1, timeout=30)
        assert up.status == 503 and up.json["error"]["code"] == "indeterminate", up.json
        assert redis.value(name) == 1, "applied in Redis, waiting for Kafka"
        down = api.decr(name, 1)
        assert down.status == 409, down.json
        assert down.json["error"]["code"] == "out_of_bounds"
    finally:
        os.kill(pid, signal.SIGCONT)
    # the broker persists the +1; once its delivery report comes, the
    # escrow goes and the decrement fits
    wait_until(lambda: redis.cli("EXISTS", "{c:%s}:p" % name) == "0", 30, 0.2,
               "the +1 confirmed")
    assert redis.cli("EXISTS", "{c:%s}:lo" % name) == "0", "no escrow left"
    assert api.decr(name, 1).status == 200
    assert api.value(name) == 0
    wait_pg_total(pg, name, 0)


def test_the_applier_confirms_a_pending_keyed_write_from_the_log(api, redis, pg, kafka, stack):
    """The first attempt of key K applied in Redis and is pending (its
    Kafka delivery unknown); its retry went around Redis (202) and the
    applier meets it: it finishes K's entry and publishes a record of what
    the first attempt applied, under K's generation. The first attempt's
    undo then finds the write is not its to take back."""
    name = counter_name("it_escrow_key")
    key = "k-" + uuid.uuid4().hex
    now = int(time.time() * 1000)
    token = "00000000000000ab"
    k = "{c:%s}" % name
    with Resp(stack.redis_host, stack.redis_port) as r:
        write = r.call("SCRIPT", "LOAD", scripts.text("write"))
        head = f"AP|{now + 600000}|{token}|0123456789abcdef"
        res = r.call("EVALSHA", write, 9, k, k + ":t", k + ":p", k + ":none", k + ":o:0",
                     k + ":id:" + key, scripts.epoch_marker(scripts.key_slot(k)),
                     k + ":lo", k + ":hi",
                     "add", "6", str(now), "", "", "", "", "reject", "0", "0", "", "86400",
                     head, key, f"{now}|{now - 1}", "")
        assert res[0] == 0, res
        since = kafka.end_offsets()
        # the retry, through the log: bare, its key's generation (another)
        ev = {"v": 1, "id": key, "counter": name, "delta": 6, "ts": now}
        run(["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_input_topic, "-k", name,
             "-X", "partitioner=murmur2_random", "-H", f"dedup={now + 50}"],
            input=json.dumps(ev) + "\n")
        wait_until(lambda: r.call("EXISTS", k + ":p") == 0, 30, 0.1,
                   "the applier finishes the first attempt's entry")
        assert r.call("GET", k + ":id:" + key).startswith("AD|")
        undo = r.call("SCRIPT", "LOAD", scripts.text("undo"))
        assert r.call("EVALSHA", undo, 6, k, k + ":t", k + ":p", k + ":id:" + key,
                      k + ":lo", k + ":hi", key, token) == -1
    assert api.value(name) == 6
    recs = [m for m in kafka.messages(since, key=name)
            if m["headers_dict"].get("origin") == "applier"]
    assert len(recs) == 1, recs
    assert recs[0]["event"]["delta"] == 6
    assert recs[0]["headers_dict"]["dedup"] == str(now - 1), "the first attempt's generation"
    wait_pg_total(pg, name, 6)
