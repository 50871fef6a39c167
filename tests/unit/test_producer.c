/* test_producer.c - the producer after a fatal error of the idempotent
 * producer (librdkafka 2.0.2 raises one when its sequence numbers and a
 * broker's part after a leader change): until the owner's next poll it
 * counts as no broker up, so that the api refuses writes before Redis;
 * that poll replaces it with a new one, which delivers again. Against
 * librdkafka's mock broker. */
#include "common/config.h"
#include "ingest/producer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int reports[3]; /* by enum ctr_delivery: 0, -1, -2 */

static void on_delivery(enum ctr_delivery result, void *arg)
{
    (void)arg;
    reports[-result]++;
}

static int delivered_after(ctr_producer *p, int want)
{
    for (int i = 0; i < 100 && reports[0] < want; i++)
        ctr_producer_poll(p, 100);
    return reports[0];
}

static void test_fatal_error_replaces_the_producer(void **state)
{
    char err[512], path[64];
    (void)state;
    snprintf(path, sizeof(path), "/tmp/counter-producer-test-%d.yaml",
             (int)getpid());
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("kafka:\n  producer:\n    test.mock.num.brokers: 1\n", fp);
    fclose(fp);
    ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
    unlink(path);
    if (cfg == NULL)
        fail_msg("%s", err);
    ctr_producer *p =
        ctr_producer_new(cfg, NULL, on_delivery, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(ctr_producer_send(p, "c", 1, "{}", 2, NULL, NULL), 0);
    assert_int_equal(delivered_after(p, 1), 1);
    assert_false(ctr_producer_brokers_down(p));

    rd_kafka_t *first = ctr_producer_kafka(p);
    assert_int_equal(rd_kafka_test_fatal_error(
                         first, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                         "test: sequence desynchronization"),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    /* librdkafka's own poll serves the error: down, and sends fail */
    for (int i = 0; i < 50 && !ctr_producer_brokers_down(p); i++)
        rd_kafka_poll(first, 100);
    assert_true(ctr_producer_brokers_down(p));
    assert_int_not_equal(ctr_producer_send(p, "c", 1, "{}", 2, NULL, NULL), 0);

    /* the owner's poll puts a new producer in its place */
    ctr_producer_poll(p, 0);
    assert_ptr_not_equal(ctr_producer_kafka(p), first);
    assert_false(ctr_producer_brokers_down(p));
    assert_int_equal(ctr_producer_send(p, "c", 1, "{}", 2, NULL, NULL), 0);
    assert_int_equal(delivered_after(p, 2), 2);
    assert_int_equal(reports[1] + reports[2], 0); /* one report each */
    ctr_producer_free(p);
    ctr_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fatal_error_replaces_the_producer),
    };
    unsetenv("COUNTER_CONFIG");
    return cmocka_run_group_tests_name("producer", tests, NULL, NULL);
}
