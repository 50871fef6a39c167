"""The resolver (applier/resolver.c): pending writes that no api will settle
are made whole by the applier once applier.resolve_after_ms have passed
(35 s with tests/config.test.yaml): published when the log lacks their
event, finished when it has it, never both.

The pending entries are made the way an api that died right after its
Redis script leaves them: by the write script itself, with the data set's
epoch, then nothing. (A real api killed between its script and Kafka is
the fault suite's scenario b.)"""

import json
import time
import uuid

import pytest

import scripts
from conftest import CATCH_UP_S, counter_name, run, wait_pg_total, wait_until
from resp import Resp

RESOLVE_WAIT_S = 35 + 30  # resolve_after_ms, plus sweeps on a busy machine


@pytest.fixture(scope="module")
def r(stack):
    with Resp(stack.redis_host, stack.redis_port) as conn:
        yield conn


def pending_write(r, name, delta, event_id, created_ms, key_gen=0):
    """The write script as the api runs it: applied, its entry pending.
    key_gen > 0: an Idempotency-Key write (event_id the key)."""
    sha = r.call("SCRIPT", "LOAD", scripts.text("write"))
    k = "{c:%s}" % name
    head = f"AP|{created_ms}|00000000000000aa|0123456789abcdef" if key_gen else ""
    keys = [k, k + ":t", k + ":p", k + ":none", k + ":o:0", k + ":id:" + event_id,
            scripts.epoch_marker(scripts.key_slot(k)), k + ":lo", k + ":hi"]
    argv = ["add", str(delta), str(created_ms), "", "", "", "", "reject", "0", "0", "",
            "86400" if key_gen else "0", head, event_id, f"{created_ms}|{key_gen}", ""]
    res = r.call("EVALSHA", sha, 9, *keys, *argv)
    assert res[0] == 0, res
    return res[5]  # the epoch


def produce_api_event(stack, name, event, epoch):
    """The api's own event, as if it had reached the log before the api
    died: origin api, the epoch."""
    run(["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_topic,
         "-k", name, "-X", "partitioner=murmur2_random",
         "-H", "origin=api", "-H", f"epoch={epoch}"],
        input=json.dumps(event) + "\n")


def test_pending_writes_are_published_or_finished_once(api, r, pg, kafka, stack):
    now = int(time.time() * 1000)
    lost, logged, keyed = (counter_name("it_resolve") for _ in range(3))
    since = kafka.end_offsets()

    # 1. the api died before Kafka: only Redis has it
    lost_id = uuid.uuid4().hex
    epoch = pending_write(r, lost, 5, lost_id, now)
    # 2. the api died after Kafka confirmed, before it finished the entry
    logged_id = uuid.uuid4().hex
    pending_write(r, logged, 7, logged_id, now)
    produce_api_event(stack, logged, {"v": 1, "id": logged_id, "counter": logged,
                                      "delta": 7, "ts": now}, epoch)
    # 3. a keyed write whose first attempt died before Kafka
    key = "k-" + uuid.uuid4().hex
    pending_write(r, keyed, 11, key, now, key_gen=now - 5)

    for name in (lost, logged, keyed):
        assert r.call("EXISTS", "{c:%s}:p" % name) == 1
    # nothing is settled before resolve_after_ms
    time.sleep(5)
    assert r.call("EXISTS", "{c:%s}:p" % lost) == 1

    wait_until(lambda: all(r.call("EXISTS", "{c:%s}:p" % n) == 0 for n in (lost, logged, keyed)),
               RESOLVE_WAIT_S, 0.5, "the resolver settles every pending write")

    msgs = kafka.messages(since)
    by_name = {n: [m for m in msgs if m["key"] == n] for n in (lost, logged, keyed)}
    # published once, as the api would have
    assert len(by_name[lost]) == 1, by_name[lost]
    m = by_name[lost][0]
    assert m["event"]["id"] == lost_id and m["event"]["delta"] == 5
    assert m["headers_dict"]["origin"] == "api"
    assert m["headers_dict"]["epoch"] == epoch
    # in the log already: not again
    assert len(by_name[logged]) == 1, by_name[logged]
    # keyed: its generation goes with it; the record is done
    assert len(by_name[keyed]) == 1, by_name[keyed]
    assert by_name[keyed][0]["headers_dict"]["dedup"] == str(now - 5)
    assert r.call("GET", "{c:%s}:id:%s" % (keyed, key)).startswith("AD|")

    for name, v in ((lost, 5), (logged, 7), (keyed, 11)):
        assert api.value(name) == v
        wait_pg_total(pg, name, v)


def test_a_write_to_another_counter_flows_while_entries_wait(api, pg):
    name = counter_name("it_resolve_other")
    assert api.incr(name, 3).status == 200
    wait_pg_total(pg, name, 3, timeout=10)
