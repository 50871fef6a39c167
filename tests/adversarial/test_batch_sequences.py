"""Adversarial batches (issue 17): what a client can do with one request of
many writes. A poison item among good ones; the same keyed batch sent from
several clients at once; a bounded gauge hit past its bound within one
batch; one unique counter given the same users over and over; answers of
items to one counter read as if applied one after another.

Each ends as every adversarial test must: a write to another counter still
reaches PostgreSQL within 10 s, and `counterctl verify` exits 0.
"""

import uuid
from concurrent.futures import ThreadPoolExecutor

from conftest import unique_name, wait_pg_total
from test_http_edges import pipeline_still_flows

BATCH = "/api/v1/counters/batch"


def post(api, items, key=None, timeout=60):
    headers = {"Idempotency-Key": key} if key else None
    r = api.request("POST", BATCH, items, headers=headers, timeout=timeout)
    assert r.status == 200, (r.status, r.json)
    return r.json["results"]


def test_a_poison_item_stops_only_itself(api, pg):
    """Items the log could not take (an event past 64 KiB) or of every
    wrong type sit between good ones: only they are refused. Nesting past
    what the parser takes is the whole body's fault: refused whole."""
    name = unique_name("adv.batch.poison")
    deep = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    r = api.request("POST", BATCH, [{"name": name, "op": "increment"},
                                    {"name": name, "op": "increment", "metadata": deep}])
    assert r.status == 400 and "deeper than 31 levels" in r.json["error"]["message"], r.json
    bad = [
        {"name": name, "op": "increment", "metadata": {"pad": "x" * 70000}},
        {"name": name, "op": "increment", "value": "1"},
        {"name": name, "op": "increment", "value": 1.5},
        {"name": name, "op": "increment", "value": None},
        {"name": name, "op": "increment", "user_id": ""},
        {"name": name, "op": "increment", "timestamp": "yesterday"},
        {"name": name, "op": None},
        {"name": 7, "op": "increment"},
        "increment",
        None,
    ]
    items = []
    for b in bad:
        items += [{"name": name, "op": "increment"}, b]
    res = post(api, items)
    good = [x for i, x in enumerate(res) if i % 2 == 0]
    refused = [x for i, x in enumerate(res) if i % 2 == 1]
    assert all(x["status"] == 200 for x in good), good
    assert all(400 <= x["status"] < 500 for x in refused), refused
    assert api.value(name) == len(good)
    wait_pg_total(pg, name, len(good))
    pipeline_still_flows(api, pg)


def test_one_keyed_batch_from_many_clients_applies_once(api, pg):
    names = [unique_name("adv.batch.race") for _ in range(3)]
    items = [{"name": names[i % 3], "op": "increment", "value": i + 1} for i in range(30)]
    key = "race-" + uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=6) as ex:
        answers = list(ex.map(
            lambda _: api.request("POST", BATCH, items, headers={"Idempotency-Key": key},
                                  timeout=60),
            range(6)))
    for r in answers:
        assert r.status == 200, (r.status, r.json)
        for x in r.json["results"]:
            # applied, replayed, or told to come back: never applied twice
            assert x["status"] in (200, 409), x
    # once settled, every client gets the same answers
    final = post(api, items, key=key)
    assert all(x["status"] == 200 for x in final)
    again = post(api, items, key=key)
    assert again == final
    for j, name in enumerate(names):
        want = sum(i + 1 for i in range(30) if i % 3 == j)
        assert api.value(name) == want
        wait_pg_total(pg, name, want)
    pipeline_still_flows(api, pg)


def test_a_bounded_gauge_takes_exactly_what_fits(api, pg):
    """150 increments of a gauge bounded at 100 in one batch: 100 fit,
    50 are refused with out_of_bounds, and every store says 100."""
    g = unique_name("it_gauge_adv_batch")
    res = post(api, [{"name": g, "op": "increment"}] * 150)
    codes = [x["status"] for x in res]
    assert codes.count(200) == 100 and codes.count(409) == 50, codes
    assert {x["error"]["code"] for x in res if x["status"] == 409} == {"out_of_bounds"}
    assert max(x["current_value"] for x in res if x["status"] == 200) == 100
    assert api.value(g) == 100
    wait_pg_total(pg, g, 100)
    pipeline_still_flows(api, pg)


def test_users_repeated_within_and_across_batches_count_once(api, pg):
    u = unique_name("it_unique_adv_batch")
    users = [f"user-{i % 37}" for i in range(300)]
    first = post(api, [{"name": u, "op": "increment", "user_id": x} for x in users])
    assert all(x["status"] == 200 for x in first)
    assert sum(1 for x in first if x.get("counted") is not False) == 37
    # as if one after another: the n-th new user answers n
    news = [x["current_value"] for x in first if x.get("counted") is not False]
    assert news == list(range(1, 38)), news
    assert [x["current_value"] for x in first][-1] == 37
    second = post(api, [{"name": u, "op": "increment", "user_id": x} for x in users[:50]])
    assert all(x.get("counted") is False and x["current_value"] == 37 for x in second)
    assert api.value(u) == 37
    wait_pg_total(pg, u, 37)
    pipeline_still_flows(api, pg)


def test_answers_of_one_counter_read_as_one_after_another(api):
    c = unique_name("adv.batch.seq")
    ops = [("increment", 5), ("decrement", 2), ("increment", 10), ("decrement", 13),
           ("increment", 1)]
    res = post(api, [{"name": c, "op": op, "value": v} for op, v in ops])
    assert [x["current_value"] for x in res] == [5, 3, 13, 0, 1]
    assert api.value(c) == 1
