/*
 * counterctl.c - the operator's command: schema migrations and Kafka topic
 * set-up. It reads the same config (config.yaml, COUNTER_* variables) as
 * the services.
 */
#include "common/config.h"
#include "common/pgconn.h"
#include "ctl/migrate.h"
#include "ctl/topic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef COUNTER_SQL_DIR
#define COUNTER_SQL_DIR "sql"
#endif

static void usage(void)
{
    fprintf(stderr,
            "usage: counterctl migrate up|down [steps]|status\n"
            "       counterctl create-topic\n"
            "config: COUNTER_CONFIG or ./config.yaml, COUNTER_* overrides;\n"
            "migrations from COUNTER_SQL_DIR (default %s)\n",
            COUNTER_SQL_DIR);
}

static int cmd_migrate(const ctr_config *cfg, int argc, char **argv)
{
    const char *dir = getenv("COUNTER_SQL_DIR");
    char err[512];
    int rc;

    if (dir == NULL)
        dir = COUNTER_SQL_DIR;
    if (argc < 1) {
        usage();
        return 2;
    }
    PGconn *conn = ctr_pg_connect(cfg, "counterctl", err, sizeof(err));
    if (conn == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        return 1;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (strcmp(argv[0], "up") == 0) {
        rc = ctl_migrate_up(conn, dir);
    } else if (strcmp(argv[0], "down") == 0) {
        int steps = argc > 1 ? atoi(argv[1]) : 1;
        if (steps < 1) {
            fprintf(stderr, "counterctl: steps must be a positive integer\n");
            PQfinish(conn);
            return 2;
        }
        rc = ctl_migrate_down(conn, dir, steps);
    } else if (strcmp(argv[0], "status") == 0) {
        rc = ctl_migrate_status(conn, dir);
    } else {
        usage();
        PQfinish(conn);
        return 2;
    }
    PQfinish(conn);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    char err[512];
    int rc;

    if (argc < 2) {
        usage();
        return 2;
    }
    ctr_config *cfg = ctr_config_load(NULL, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        return 2;
    }
    if (strcmp(argv[1], "migrate") == 0) {
        rc = cmd_migrate(cfg, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "create-topic") == 0) {
        rc = ctl_topic_create(cfg, 20000) == 0 ? 0 : 1;
    } else {
        usage();
        rc = 2;
    }
    ctr_config_free(cfg);
    return rc;
}
