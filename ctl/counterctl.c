/*
 * counterctl.c - the operator's command: schema migrations, Kafka topic
 * set-up, and the Redis/PostgreSQL consistency check. It reads the same config
 * (config.yaml, COUNTER_* variables) as the services.
 */
#include "common/config.h"
#include "common/pgconn.h"
#include "ctl/migrate.h"
#include "ctl/rebuild.h"
#include "ctl/topic.h"
#include "ctl/verify.h"

#include <errno.h>
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
            "       counterctl verify [--wait-s N]   (exit 0 same, 1 differ, "
            "2 error)\n"
            "       counterctl rebuild-postgres [--keep]  (replay the log into "
            "fresh tables, compare)\n"
            "       counterctl rebuild-redis   (restore redis from postgresql "
            "and the log)\n"
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

/* verify [--wait-s N]: N seconds (0-3600, default 30) for the persister to
 * catch up before each look. */
static int cmd_verify(const ctr_config *cfg, int argc, char **argv)
{
    long wait_s = 30;

    for (int i = 0; i < argc; i++) {
        const char *val = NULL;
        char *end;
        if (strcmp(argv[i], "--wait-s") == 0 && i + 1 < argc)
            val = argv[++i];
        else if (strncmp(argv[i], "--wait-s=", 9) == 0)
            val = argv[i] + 9;
        if (val == NULL) {
            usage();
            return 2;
        }
        errno = 0;
        wait_s = strtol(val, &end, 10);
        if (errno || end == val || *end || wait_s < 0 || wait_s > 3600) {
            fprintf(stderr,
                    "counterctl: --wait-s must be 0 to 3600 seconds, "
                    "not %s\n",
                    val);
            return 2;
        }
    }
    return ctl_verify_run(cfg, (int)wait_s);
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
    } else if (strcmp(argv[1], "rebuild-postgres") == 0) {
        const char *dir = getenv("COUNTER_SQL_DIR");
        rc = ctl_rebuild_postgres(cfg, dir ? dir : COUNTER_SQL_DIR,
                                  argc > 2 && strcmp(argv[2], "--keep") == 0);
    } else if (strcmp(argv[1], "rebuild-redis") == 0) {
        rc = ctl_rebuild_redis(cfg);
    } else if (strcmp(argv[1], "verify") == 0) {
        rc = cmd_verify(cfg, argc - 2, argv + 2);
    } else {
        usage();
        rc = 2;
    }
    ctr_config_free(cfg);
    return rc;
}
