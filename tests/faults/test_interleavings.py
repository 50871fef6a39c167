"""Two faults at once, or a fault between the two steps of a write
(issue 15): the write is applied in Redis, its event not yet known to be in
the log, when the second thing happens. Whatever the client was told, the
write must end whole or absent (G3), and the checker's I1-I6 hold once the
applier's resolver has settled what the api could not (pending writes
older than applier.resolve_after_ms, 35 s in tests/config.test.yaml).

i. Redis SIGSTOPped, the Kafka broker SIGKILLed while it is; Redis
   resumed (the writes queued on it run late, and their events cannot be
   delivered), the broker restarted.
j. Two `counterctl rebuild-redis` at once under load: one restores, the
   other waits its turn or says one is running; writes meanwhile go
   through Kafka (202) and the restore's tail applies what the lost data
   set had not logged yet.
k. counter-api SIGKILLed between its Redis script and Kafka: the broker
   SIGSTOPped so that events wait in the api's queue, the api killed, the
   broker resumed, the api restarted; what the dead api applied is only in
   Redis, and the resolver publishes it.
l. counter-api SIGTERMed while the broker is down: it drains, its final
   flush fails, the undos it queues may not reach Redis; restarted with the
   broker; the resolver settles the rest.

All writes are keyed and unanswered ones retried with their key until they
are acked or refused, so none is left without a verdict (the checker
counts them exactly).
"""

import os
import signal
import subprocess
import time

from faultlib import api_healthy, it
from loadclient import RetryPolicy


def _retrying(scenario, tag, duration_s):
    return scenario.start(
        tag, rate=200, workers=8, duration_s=duration_s,
        retry=RetryPolicy(retry_indeterminate=True, deadline_s=90),
    )


def _all_acked(client, tag):
    def checks():
        unresolved = [op for op in client.ops if op.final == "indeterminate"]
        if unresolved:
            last = [(a.status, a.code or a.error) for a in unresolved[0].attempts][-3:]
            return [f"{tag}: {len(unresolved)} writes left without a verdict despite "
                    f"retries with their key, e.g. last attempts {last}"]
        return []
    return checks


def test_i_redis_stalled_then_kafka_fails(scenario, stack, stackctl, healthy_stack):
    client = _retrying(scenario, "i", 120)
    client.run_for(3.0)
    redis_pid = stack.pid("redis")
    it.freeze(redis_pid)
    client.mark(f"SIGSTOP redis (pid {redis_pid})")
    try:
        client.run_for(2.0)
        client.mark("kill -9 kafka")
        stackctl.kill("kafka")
        client.run_for(1.0)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    client.mark("SIGCONT redis: queued writes run, their events cannot go out")
    client.run_for(4.0)
    client.mark("starting kafka")
    stackctl.start("kafka")
    it.wait_until(lambda: api_healthy(scenario.api), 60, 0.5, "api healthy with kafka back")
    client.mark("kafka answering")
    client.run_for(5.0)
    scenario.finish(_all_acked(client, "i"))


def test_j_two_restores_race_under_load(scenario, stack, healthy_stack):
    client = _retrying(scenario, "j", 120)
    client.run_for(3.0)
    ctl = os.path.join(stack.env["BIN_DIR"], "counterctl")
    procs = [subprocess.Popen([ctl, "rebuild-redis"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=stack.env)
             for _ in range(2)]
    client.mark("two counterctl rebuild-redis started")
    while any(p.poll() is None for p in procs):
        client.run_for(0.5)
    outs = [p.communicate() for p in procs]
    codes = sorted(p.returncode for p in procs)
    client.mark(f"restores ended with {codes}")
    it.wait_until(lambda: api_healthy(scenario.api), 60, 0.5, "api healthy after the restores")
    client.run_for(5.0)

    def checks():
        out = _all_acked(client, "j")()
        if codes not in ([0, 0], [0, 3]):
            out.append(f"j: restores exited {codes}: {outs}")
        return out

    scenario.finish(checks)


def test_k_api_killed_between_redis_and_kafka(scenario, stack, stackctl, healthy_stack):
    client = _retrying(scenario, "k", 120)
    client.run_for(3.0)
    kafka_pid = stack.pid("kafka")
    it.freeze(kafka_pid)
    client.mark(f"SIGSTOP kafka (pid {kafka_pid}): events wait in the api's queue")
    try:
        client.run_for(1.5)
        api_pid = stack.pid("counter-api")
        client.mark(f"kill -9 counter-api (pid {api_pid})")
        stackctl.kill("counter-api")
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
    client.mark("SIGCONT kafka")
    stackctl.start("counter-api")
    client.mark("counter-api answering")
    client.run_for(5.0)
    scenario.finish(_all_acked(client, "k"))


def test_l_api_sigterm_during_a_kafka_outage(scenario, stack, stackctl, healthy_stack):
    client = _retrying(scenario, "l", 120)
    client.run_for(3.0)
    client.mark("kill -9 kafka")
    stackctl.kill("kafka")
    client.run_for(1.5)
    client.mark("SIGTERM counter-api")
    stackctl.stop("counter-api")  # SIGTERM, then SIGKILL 10 s later
    client.mark("counter-api stopped")
    stackctl.start("kafka")
    stackctl.start("counter-api")
    it.wait_until(lambda: api_healthy(scenario.api), 60, 0.5, "api healthy again")
    client.mark("counter-api and kafka answering")
    client.run_for(5.0)
    scenario.finish(_all_acked(client, "l"))
