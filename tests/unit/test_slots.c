/* test_slots.c - Redis Cluster key slots, slot maps and redirections:
 * slots checked against what redis-server 7's CLUSTER KEYSLOT answers. */
#include "redis/slots.h"

#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

static void test_key_slots(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        int slot;
    } cases[] = {
        {"foo", 12182},
        {"bar", 5061},
        {"123456789", 12739}, /* CRC16/XMODEM check value 0x31C3 */
        {"{user1000}.following", 3443},
        {"foo{}{bar}", 8363},    /* empty tag: the whole key */
        {"foo{{bar}}zap", 4015}, /* the tag is "{bar" */
        {"foo{bar}{zap}", 5061}, /* the first tag only: "bar" */
        {"{c:online_players}:d:2026-11-26", 6654},
        {"counter:epoch", 6956},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(ctr_key_slot(cases[i].key, strlen(cases[i].key)),
                         cases[i].slot);
    /* every key of one counter shares the slot of its hash tag */
    const char *tag = "{c:online_players}";
    int s = ctr_key_slot(tag, strlen(tag));
    const char *same[] = {"{c:online_players}:d:2026-11-26",
                          "{c:online_players}:g:abc", "{c:online_players}:u:x"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(ctr_key_slot(same[i], strlen(same[i])), s);
}

static redisReply *parse_resp(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;
    assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(rd);
    return reply;
}

static void test_slot_map(void **state)
{
    (void)state;
    /* two shards as redis 7 lists them: the master, then a replica; each
     * node with its id and a map of extra fields; the second master with
     * no host known (empty): the node that answered */
    const char *resp = "*2\r\n"
                       "*4\r\n:0\r\n:5460\r\n"
                       "*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*0\r\n"
                       "*4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n*0\r\n"
                       "*3\r\n:5461\r\n:16383\r\n"
                       "*3\r\n$0\r\n\r\n:7001\r\n$2\r\nid\r\n";
    redisReply *r = parse_resp(resp);
    ctr_slot_range *ranges;
    size_t n;
    assert_int_equal(ctr_slots_parse(r, "10.0.0.9", &ranges, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ranges[0].start, 0);
    assert_int_equal(ranges[0].end, 5460);
    assert_string_equal(ranges[0].host, "127.0.0.1");
    assert_int_equal(ranges[0].port, 7000);
    assert_int_equal(ranges[0].replicas, 1);
    assert_int_equal(ranges[1].start, 5461);
    assert_int_equal(ranges[1].end, 16383);
    assert_string_equal(ranges[1].host, "10.0.0.9");
    assert_int_equal(ranges[1].port, 7001);
    assert_int_equal(ranges[1].replicas, 0);
    free(ranges);
    freeReplyObject(r);

    /* not a slot map: an error, a range past the last slot, start > end */
    const char *bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:9\r\n:3\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:3\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = parse_resp(bad[i]);
        assert_int_equal(ctr_slots_parse(r, "h", &ranges, &n), -1);
        assert_null(ranges);
        freeReplyObject(r);
    }
}

static void test_redirects(void **state)
{
    (void)state;
    char host[CTR_HOST_MAX];
    int slot = -1, port = -1;
    assert_int_equal(ctr_redirect_parse("MOVED 3999 127.0.0.1:6381", &slot,
                                        host, sizeof(host), &port),
                     1);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(ctr_redirect_parse("ASK 16383 ::1:7002", &slot, host,
                                        sizeof(host), &port),
                     2);
    assert_int_equal(slot, 16383);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7002);
    /* the node may not know its own address */
    assert_int_equal(
        ctr_redirect_parse("MOVED 1 :7000", &slot, host, sizeof(host), &port),
        1);
    assert_string_equal(host, "");
    const char *others[] = {"TRYAGAIN Multiple keys request during rehashing",
                            "MOVED 16384 h:1",
                            "MOVED x h:1",
                            "MOVED 1 h",
                            "MOVED 1 h:99999",
                            "ASK 1 h:",
                            "ERR MOVED 1 h:1"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        assert_int_equal(
            ctr_redirect_parse(others[i], &slot, host, sizeof(host), &port), 0);
}

static void test_addr_list(void **state)
{
    (void)state;
    char host[CTR_HOST_MAX];
    int port;
    size_t pos = 0;
    const char *list = "10.0.0.1:7000, redis-b:7001,,127.0.0.1:7002";
    assert_int_equal(ctr_addr_list_next(list, &pos, host, sizeof(host), &port),
                     1);
    assert_string_equal(host, "10.0.0.1");
    assert_int_equal(port, 7000);
    assert_int_equal(ctr_addr_list_next(list, &pos, host, sizeof(host), &port),
                     1);
    assert_string_equal(host, "redis-b");
    assert_int_equal(ctr_addr_list_next(list, &pos, host, sizeof(host), &port),
                     1);
    assert_int_equal(port, 7002);
    assert_int_equal(ctr_addr_list_next(list, &pos, host, sizeof(host), &port),
                     0);
    pos = 0;
    assert_int_equal(
        ctr_addr_list_next("[::1]:7000", &pos, host, sizeof(host), &port), 1);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    pos = 0;
    assert_int_equal(ctr_addr_list_next("h:0", &pos, host, sizeof(host), &port),
                     -1);
    pos = 0;
    assert_int_equal(ctr_addr_list_next(":70", &pos, host, sizeof(host), &port),
                     -1);
    pos = 0;
    assert_int_equal(ctr_addr_list_next("h", &pos, host, sizeof(host), &port),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_slots),
        cmocka_unit_test(test_slot_map),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_addr_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
