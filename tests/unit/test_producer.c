/* test_producer.c - what the producer tells its owner: a fatal error of
 * the idempotent producer (librdkafka 2.0.2 raises one when its sequence
 * numbers and a broker's part after a leader change) counts as no broker
 * up, so that the api refuses writes before Redis and says so in health. */
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

static void on_delivery(enum ctr_delivery result, void *arg)
{
    (void)result;
    (void)arg;
}

static void test_fatal_error_counts_as_no_broker(void **state)
{
    char err[512];
    (void)state;
    /* librdkafka's mock broker: connected, so that no "all brokers down"
     * says down before the fatal error does */
    char path[64];
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
    for (int i = 0; i < 5; i++)
        ctr_producer_poll(p, 100);
    assert_false(ctr_producer_brokers_down(p));

    assert_int_equal(rd_kafka_test_fatal_error(
                         ctr_producer_kafka(p),
                         RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                         "test: sequence desynchronization"),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < 50 && !ctr_producer_brokers_down(p); i++)
        ctr_producer_poll(p, 100); /* serves the error event */
    assert_true(ctr_producer_brokers_down(p));
    ctr_producer_free(p);
    ctr_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fatal_error_counts_as_no_broker),
    };
    unsetenv("COUNTER_CONFIG");
    return cmocka_run_group_tests_name("producer", tests, NULL, NULL);
}
