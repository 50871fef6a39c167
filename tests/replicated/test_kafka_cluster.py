"""Kafka as a cluster of three KRaft nodes (each broker and controller),
every topic with three replicas and min.insync.replicas 2, under load
(DESIGN.md: "acknowledged by the replicated log").

a. The leader of the busiest partition SIGKILLed, later brought back.
b. A rolling restart: each node SIGTERMed in turn, restarted, and its
   replicas back in sync before the next; no write may be refused as
   kafka_unavailable while two nodes are up.
c. Two of the three SIGKILLed: writes are refused within the delivery
   timeout (503 kafka_unavailable or indeterminate, nothing applied for
   the refused), reads go on; once one node is back, writes are acked
   again within seconds. The outage (about 20 s) is shorter than
   kafka.message_timeout_ms (45 s in tests/replicated/run.sh, 300 s by
   default), so the writes answered "indeterminate" are delivered when the
   node is back, and made whole.
d. The active controller (the KRaft quorum's leader) SIGKILLed.
e. The persister and the applier SIGKILLed and restarted while a node
   is down, with events written straight into Kafka for the applier:
   both resume from their stored or committed offsets, exactly.

Each ends with the checker's I1-I6 over the load client's log, the
stores and the topic.
"""

import time

from loadclient import RetryPolicy, murmur2_partition
from replib import KAFKA_DELIVERY_TIMEOUT_S, ExternalWriter, answers, it, window

# Writes answer within the delivery timeout; the margin is for an ASan
# build on two busy cores.
ANSWER_LIMIT_S = KAFKA_DELIVERY_TIMEOUT_S + 1.5
# "within seconds after one returns": from the node answering to the
# first write acked again.
RECOVERY_LIMIT_S = 20.0


def _kafka_unavailable(client):
    return [(op, a) for op, a in client.attempts() if a.code == "kafka_unavailable"]


def _unanswered(client):
    return [(op, a) for op, a in client.attempts() if a.status == 0]


def _first_ack_after(client, t, counters=None):
    acks = [a.t1 for op, a in client.attempts()
            if a.outcome == "acked" and a.t0 >= t and (counters is None or op.counter in counters)]
    return min(acks) - t if acks else None


def _producer_checks(watch, tag):
    """counter-api's Kafka producer may fail (librdkafka 2.0.2, after a
    leader change), but never for good: a new one takes its place."""
    fatal, replaced = watch.producer_fatal()
    if fatal:
        print(f"{tag}: counter-api's producer failed {len(fatal)} time(s) and was replaced "
              f"{len(replaced)} time(s): {fatal[0][-300:]}")
    if len(replaced) < len(fatal):
        return [f"{tag}: counter-api's Kafka producer failed and was not replaced: the api "
                f"refuses every write until restarted: {fatal[0][-300:]}"]
    return []


# Writes a replaced producer may leave refused: the events it still had
# queued (a handful; it sends at once, linger.ms 0).
REFUSED_BY_A_REPLACEMENT = 50


def _two_nodes_up_checks(client, tag, watch):
    """What holds whenever two of the three nodes are up: no write refused
    as kafka_unavailable, but those the api's producer still had queued
    when librdkafka failed it (they are refused, nothing applied, and a new
    producer takes its place)."""
    out = _producer_checks(watch, tag)
    refused = _kafka_unavailable(client)
    fatal, replaced = watch.producer_fatal()
    if refused and fatal and len(replaced) >= len(fatal) \
            and len(refused) <= REFUSED_BY_A_REPLACEMENT * len(fatal):
        print(f"{tag}: {len(refused)} writes answered 503 kafka_unavailable: the events the "
              f"failed producer had queued")
    elif refused:
        out.append(f"{tag}: {len(refused)} writes answered 503 kafka_unavailable with two "
                   f"nodes up, e.g. at t={refused[0][1].t0:.2f}s")
    lost = _unanswered(client)
    if lost:
        out.append(f"{tag}: {len(lost)} writes got no HTTP answer ({lost[0][1].error})")
    return out


# ------------------------------------------------------------------ a ---


def test_a_leader_of_the_busiest_partition_killed(scenario, stack, stackctl, kafka, cluster,
                                                  replicated_stack):
    # Unanswered writes are not retried: "indeterminate" stays so, and the
    # checker bounds it (I2) and finds it whole (I3, I4).
    client = scenario.start("ka", rate=200, workers=8, duration_s=200, timeout_s=15,
                            keyed_share=0.5)
    client.run_for(3.0)
    part = cluster.busiest_partition(kafka)
    leader = cluster.leader(part)
    node = cluster.name(leader)
    on_part = {c.name for c in scenario.counters
               if murmur2_partition(c.name, stack.kafka_partitions) == part}
    stackctl.kill(node)
    t_kill = client.mark(f"killed {node} (-9), leader of partition {part}, the busiest")
    new = it.wait_until(lambda: (lambda x: x if x not in (leader, -1) else None)(
        cluster.leader(part)), 60, 0.2, f"a new leader of partition {part}")
    t_elected = client.mark(f"partition {part} led by kafka-{new}")
    client.run_for(3.0)
    t_start = client.mark(f"starting {node}")
    stackctl.start(node)
    t_ready = client.mark(f"{node} answering")
    isr_s = cluster.wait_isr_full()
    client.mark(f"{node} back, every replica in sync {isr_s:.1f}s after it answered")
    client.run_for(3.0)

    def checks():
        out = _two_nodes_up_checks(client, "a", replicated_stack)
        back = _first_ack_after(client, t_kill, on_part)
        after = window(client, t_kill, t_elected + 3.0)
        back_s = "never" if back is None else f"{back:.1f}s"
        print(f"a: partition {part}: new leader after {t_elected - t_kill:.1f}s, writes to it "
              f"acked again {back_s} after the kill; answers meanwhile {answers(after)}; "
              f"restart {t_ready - t_start:.1f}s, replicas in sync {isr_s:.1f}s later")
        if back is None:
            out.append(f"a: no write to partition {part} was acked after its leader died")
        return out

    scenario.finish(checks)


# ------------------------------------------------------------------ b ---


def test_b_rolling_restart(scenario, stackctl, cluster, replicated_stack):
    client = scenario.start("kb", rate=200, workers=8, duration_s=400, timeout_s=15,
                            retry=RetryPolicy(retry_indeterminate=True, deadline_s=60))
    client.run_for(3.0)
    took = []
    for i in range(1, cluster.nodes + 1):
        node = cluster.name(i)
        client.mark(f"SIGTERM {node}")
        t0 = time.monotonic()
        stackctl.stop(node)
        stop_s = time.monotonic() - t0
        client.run_for(2.0)
        t0 = time.monotonic()
        stackctl.start(node)
        start_s = time.monotonic() - t0
        isr_s = cluster.wait_isr_full()
        client.mark(f"{node} back (stop {stop_s:.1f}s, start {start_s:.1f}s, in sync {isr_s:.1f}s)")
        took.append((node, round(stop_s, 1), round(start_s, 1), round(isr_s, 1)))
        client.run_for(2.0)

    def checks():
        out = _two_nodes_up_checks(client, "b", replicated_stack)
        unresolved = [op for op in client.ops if op.final != "acked"]
        if unresolved:
            out.append(f"b: {len(unresolved)} writes never acked although retried with their key")
        slow = sorted(a.t1 - a.t0 for _, a in client.attempts() if a.outcome == "acked")
        p50, p99 = slow[len(slow) // 2], slow[int(len(slow) * 0.99)]
        print(f"b: (node, stop s, start s, in sync s) {took}; "
              f"answers {answers(client.attempts())}; acked latency p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms, max {slow[-1] * 1000:.0f} ms")
        return out

    scenario.finish(checks)


# ------------------------------------------------------------------ c ---


def test_c_two_of_three_down(scenario, stack, stackctl, cluster, replicated_stack):
    client = scenario.start("kc", rate=150, workers=8, duration_s=300, timeout_s=15,
                            keyed_share=0.5)
    client.run_for(3.0)
    first, second = cluster.name(2), cluster.name(3)
    t_kill = client.mark(f"kill -9 {first} and {second}")
    stackctl.kill(first)
    stackctl.kill(second)
    client.run_for(5.0)
    t_start = client.mark(f"starting {second}")
    stackctl.start(second)
    t_ready = client.mark(f"{second} answering")
    recovered = None
    try:
        it.wait_until(lambda: _first_ack_after(client, t_ready) is not None, 60, 0.2,
                      "a write acked after a second node returned")
        recovered = _first_ack_after(client, t_ready)
        client.mark(f"writes acked again {recovered:.1f}s after {second} answered")
    except AssertionError:
        client.mark("no write acked within 60 s of a second node's return")
    client.run_for(3.0)
    client.mark(f"starting {first}")
    stackctl.start(first)
    cluster.wait_isr_full()
    client.run_for(2.0)

    def checks():
        out = _producer_checks(replicated_stack, "c")
        during = [(op, a) for op, a in client.attempts() if t_kill + 1.5 <= a.t0 < t_start]
        print(f"c: writes with one node up: {answers(during)}; acked again {recovered}s after "
              f"{second} answered ({t_ready - t_start:.1f}s to start it)")
        if not during:
            out.append("c: no write while two nodes were down: nothing was tested")
        acked = [a for _, a in during if a.outcome == "acked"]
        if acked:
            out.append(f"c: {len(acked)} writes acked with one node of three up")
        unanswered = [a for _, a in during if a.status == 0]
        if unanswered:
            out.append(f"c: {len(unanswered)} writes got no HTTP answer ({unanswered[0].error})")
        wrong = [(op, a) for op, a in during if a.status and not (
            a.status == 503 and a.code in ("kafka_unavailable", "indeterminate"))]
        if wrong:
            out.append(f"c: unexpected answers with one node up: {answers(wrong)}")
        slow = sorted(a.t1 - a.t0 for _, a in during if a.status == 503)
        if slow and slow[-1] > ANSWER_LIMIT_S:
            out.append(f"c: refusals took up to {slow[-1]:.2f}s (limit {ANSWER_LIMIT_S:.1f}s); "
                       f"{sum(s > ANSWER_LIMIT_S for s in slow)} over")
        reads = [r for r in client.reads if t_kill <= r.t0 and r.t1 <= t_start]
        bad = [r for r in reads if not (r.status == 200 and r.source == "redis")]
        if not reads or bad:
            out.append(f"c: {len(bad)} of {len(reads)} reads with one node up were not answered "
                       f"from Redis")
        if recovered is None or recovered > RECOVERY_LIMIT_S:
            out.append(f"c: writes acked again {recovered}s after a second node answered "
                       f"(limit {RECOVERY_LIMIT_S:.0f}s)")
        return out

    scenario.finish(checks)


# ------------------------------------------------------------------ d ---


def test_d_active_controller_killed(scenario, stackctl, cluster, replicated_stack):
    client = scenario.start("kd", rate=200, workers=8, duration_s=200, timeout_s=15,
                            keyed_share=0.5)
    client.run_for(3.0)
    ctl = cluster.active_controller()
    node = cluster.name(ctl)
    t_kill = client.mark(f"kill -9 {node}, the active controller")
    stackctl.kill(node)
    new = it.wait_until(lambda: (lambda x: x if x != ctl else None)(cluster.active_controller()),
                        90, 0.5, "a new active controller")
    t_new = client.mark(f"kafka-{new} is the active controller")
    client.run_for(3.0)
    client.mark(f"starting {node}")
    stackctl.start(node)
    isr_s = cluster.wait_isr_full()
    client.mark(f"{node} back, in sync {isr_s:.1f}s after it answered")
    client.run_for(2.0)

    def checks():
        out = _two_nodes_up_checks(client, "d", replicated_stack)
        print(f"d: new controller known {t_new - t_kill:.1f}s after the kill (polling the quorum "
              f"tool); answers meanwhile {answers(window(client, t_kill, t_new))}")
        return out

    scenario.finish(checks)


# ------------------------------------------------------------------ e ---


def test_e_persister_and_applier_killed_while_a_node_is_down(scenario, stack, stackctl, cluster,
                                                              replicated_stack):
    client = scenario.start("ke", rate=200, workers=6, duration_s=200, timeout_s=15,
                            keyed_share=0.5)
    ext = ExternalWriter(stack, "ke").start(time.monotonic() - client.now())
    try:
        client.run_for(3.0)
        # The node that leads the external events' partition: the applier
        # loses its leader too.
        part = murmur2_partition(ext.counter.name, stack.kafka_partitions)
        node = cluster.name(cluster.leader(part, stack.kafka_input_topic))
        client.mark(f"kill -9 {node} (leader of partition {part} of the input topic, the external events')")
        stackctl.kill(node)
        client.run_for(2.0)
        client.mark("kill -9 counter-persister and counter-applier")
        stackctl.kill("counter-persister")
        stackctl.kill("counter-applier")
        client.run_for(2.0)
        stackctl.start("counter-persister")
        stackctl.start("counter-applier")
        client.mark(f"persister and applier restarted, {node} still down")
        client.run_for(5.0)
        client.mark(f"starting {node}")
        stackctl.start(node)
        cluster.wait_isr_full()
        client.mark(f"{node} back, in sync")
        client.run_for(3.0)
    finally:
        ext.stop()

    def checks():
        client.external_ops += ext.ops
        out = _two_nodes_up_checks(client, "e", replicated_stack)
        print(f"e: {len(ext.ops)} external events, "
              f"{sum(op.final == 'acked' for op in ext.ops)} delivered for sure")
        if not ext.ops:
            out.append("e: no external event was written: the applier was not tested")
        return out

    scenario.finish(checks, extra_counters=[ext.counter])
