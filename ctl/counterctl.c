/*
 * counterctl.c - the operator's command: the counters and their history,
 * corrections through the api, schema migrations, Kafka topic set-up, the
 * Redis/PostgreSQL consistency check and the rebuilds. It reads the same
 * config (config.yaml, COUNTER_* variables) as the services.
 *
 * Every command takes --help (stdout, exit 0); a usage error prints the
 * command's usage on stderr and exits 2. The exit codes are those of
 * ctl/cli.h, listed in `counterctl --help`.
 */
#include "common/config.h"
#include "common/pgconn.h"
#include "ctl/cli.h"
#include "ctl/counters.h"
#include "ctl/history.h"
#include "ctl/migrate.h"
#include "ctl/partitions.h"
#include "ctl/rebuild.h"
#include "ctl/topic.h"
#include "ctl/verify.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef COUNTER_SQL_DIR
#define COUNTER_SQL_DIR "sql"
#endif

static const char help_main[] =
    "usage: counterctl COMMAND [ARGS...]     (counterctl COMMAND --help)\n"
    "\n"
    "The counters:\n"
    "  counters list [--prefix P] [--json]  every counter with its kind,\n"
    "                                       reset, zone and current value\n"
    "  counters get NAME [--json]           one counter: value, period, last\n"
    "                                       update, and where it was read\n"
    "  counters set NAME VALUE [--json]     set a gauge, through counter-api\n"
    "  counters reset NAME [--json]         bring a counter to 0 through\n"
    "                                       counter-api: a logged correction\n"
    "                                       (unique counters are refused)\n"
    "  history NAME --from T --to T [--interval minute|hour|day] [--json]\n"
    "                                       per-period sums, through the api\n"
    "Operating the stores:\n"
    "  migrate up | down [N] | status       schema migrations\n"
    "  partitions [--ahead N] [--retain-days D] [--dry-run] [--json]\n"
    "                                       create the history tables' "
    "monthly\n"
    "                                       partitions ahead, drop those past\n"
    "                                       the retention\n"
    "  create-topic                         the event topics and <topic>.dlq\n"
    "  verify [--wait-s N]                  compare Redis with PostgreSQL\n"
    "  rebuild-postgres [--keep]            replay the log into fresh tables\n"
    "                                       and compare them with the live\n"
    "  rebuild-redis                        restore Redis from PostgreSQL and\n"
    "                                       the log\n"
    "\n"
    "Configuration: COUNTER_CONFIG or ./config.yaml, overridden by COUNTER_*\n"
    "variables, as the services read it. counters set|reset and history talk\n"
    "to counter-api at --api URL, else COUNTER_API_URL, else\n"
    "http://127.0.0.1:<server.port>, with COUNTER_API_TOKEN as the bearer\n"
    "token when auth is on. --json prints one JSON document on stdout.\n"
    "\n"
    "Exit status:\n"
    "  0  ok\n"
    "  1  a check found a difference (verify, rebuild-postgres), the api\n"
    "     refused the request (4xx, its message shown), or a step failed\n"
    "     (migrate, partitions, create-topic)\n"
    "  2  usage or configuration error (or another error that stopped the\n"
    "     command)\n"
    "  3  a dependency unreachable: Redis, PostgreSQL, Kafka or counter-api\n"
    "     down, the persister not caught up (verify), or a write's outcome\n"
    "     unknown (retry it with its Idempotency-Key)\n";

static const char help_migrate[] =
    "usage: counterctl migrate up | down [N] | status\n"
    "\n"
    "The numbered migrations of COUNTER_SQL_DIR (default " COUNTER_SQL_DIR
    "),\n"
    "one transaction each, recorded in schema_migrations:\n"
    "  up        applies every pending migration\n"
    "  down [N]  reverts the newest N applied migrations (default 1)\n"
    "  status    lists each migration and whether it is applied\n"
    "\n"
    "Exit status: 0 done; 1 a migration failed; 2 usage or configuration\n"
    "error; 3 PostgreSQL unreachable.\n";

static const char help_create_topic[] =
    "usage: counterctl create-topic\n"
    "\n"
    "Creates kafka.topic (applied events), kafka.input_topic (events to\n"
    "apply) and <topic>.dlq (the events that failed validation) with\n"
    "kafka.partitions partitions each, kafka.replication_factor replicas\n"
    "and min.insync.replicas = kafka.min_insync_replicas, unless they\n"
    "exist, and waits until every partition has a leader. Refuses a\n"
    "replication factor above the brokers of the cluster.\n"
    "\n"
    "Exit status: 0 ready; 1 creation failed or refused; 2 usage or\n"
    "configuration error; 3 Kafka did not answer.\n";

static const char help_verify[] =
    "usage: counterctl verify [--wait-s N]\n"
    "\n"
    "Waits for the persister to catch up with the topic, then compares every\n"
    "counter's value in Redis with PostgreSQL (a daily counter: each window\n"
    "Redis holds, and every day a late event could still reach), reads what\n"
    "differs again after a pause, and prints each difference that stays:\n"
    "\"counter NAME[ day DATE]: redis=X postgres=Y\", then \"verify: N\n"
    "counters checked, M differ\". Approximate (HLL) counters are not\n"
    "compared.\n"
    "\n"
    "  --wait-s N  seconds (0-3600, default 30) to wait for the persister\n"
    "\n"
    "Exit status: 0 no difference; 1 differences; 2 usage, configuration or\n"
    "another error; 3 Redis, PostgreSQL or Kafka unreachable, or the\n"
    "persister has not caught up within --wait-s.\n";

static const char help_rebuild_postgres[] =
    "usage: counterctl rebuild-postgres [--keep]\n"
    "\n"
    "Replays the topic from the beginning into a fresh schema\n"
    "counter_rebuild, up to the persister's offsets, and compares it row for\n"
    "row with the live tables, printing the rows that differ.\n"
    "\n"
    "  --keep  leave the schema counter_rebuild in place afterwards\n"
    "\n"
    "Exit status: 0 equal; 1 the tables differ; 2 usage, configuration or\n"
    "another error; 3 PostgreSQL unreachable.\n";

static const char help_rebuild_redis[] =
    "usage: counterctl rebuild-redis\n"
    "\n"
    "After a Redis loss: writes PostgreSQL's values back (totals, daily\n"
    "windows and exact dedup sets within the lateness), applies the logged\n"
    "events after PostgreSQL's stored offsets, and sets the epoch key. Stop\n"
    "counter-api and counter-applier while it runs. HyperLogLog registers\n"
    "are not restored.\n"
    "\n"
    "Exit status: 0 restored; 2 usage, configuration or another error; 3\n"
    "Redis or PostgreSQL unreachable.\n";

static const char *sql_dir(void)
{
    const char *dir = getenv("COUNTER_SQL_DIR");
    return dir ? dir : COUNTER_SQL_DIR;
}

/* Parses a command's options against opts; CTL_EXIT_OK to go on, -1 after
 * --help, or CTL_EXIT_USAGE (printed). */
static int parse(const char *help, int argc, char **argv, const ctl_opt *opts,
                 size_t nopts, const char **pos, size_t min_pos, size_t max_pos,
                 size_t *npos)
{
    char why[200];
    switch (ctl_args_parse(argc, argv, opts, nopts, pos, min_pos, max_pos, npos,
                           why, sizeof(why))) {
    case CTL_ARGS_HELP: ctl_help(help); return -1;
    case CTL_ARGS_BAD: return ctl_usage_error(help, why);
    }
    return CTL_EXIT_OK;
}

static int cmd_migrate(int argc, char **argv)
{
    const char *pos[2];
    size_t npos;
    int64_t steps = 1;
    char err[512];
    int rc = parse(help_migrate, argc, argv, NULL, 0, pos, 1, 2, &npos);

    if (rc != CTL_EXIT_OK)
        return rc < 0 ? CTL_EXIT_OK : rc;
    int up = strcmp(pos[0], "up") == 0, down = strcmp(pos[0], "down") == 0;
    if (!up && !down && strcmp(pos[0], "status") != 0)
        return ctl_usage_error(help_migrate, "migrate: expected up, down or "
                                             "status");
    if (npos == 2 && !down)
        return ctl_usage_error(help_migrate, "migrate: only down takes N");
    if (npos == 2 &&
        (ctl_parse_i64(pos[1], &steps) != 0 || steps < 1 || steps > 100000))
        return ctl_usage_error(help_migrate,
                               "migrate down: N must be a positive integer");
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    PGconn *conn = ctr_pg_connect(cfg, "counterctl", err, sizeof(err));
    if (conn == NULL) {
        ctl_err("%s", err);
        ctr_config_free(cfg);
        return CTL_EXIT_UNREACHABLE;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (up)
        rc = ctl_migrate_up(conn, sql_dir());
    else if (down)
        rc = ctl_migrate_down(conn, sql_dir(), (int)steps);
    else
        rc = ctl_migrate_status(conn, sql_dir());
    /* a connection lost on the way is the server's absence, not a
     * migration that failed */
    if (rc != 0 && PQstatus(conn) == CONNECTION_BAD)
        rc = CTL_EXIT_UNREACHABLE;
    else
        rc = rc == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
    PQfinish(conn);
    ctr_config_free(cfg);
    return rc;
}

static int cmd_create_topic(int argc, char **argv)
{
    const char *pos[1];
    size_t npos;
    int rc = parse(help_create_topic, argc, argv, NULL, 0, pos, 0, 0, &npos);

    if (rc != CTL_EXIT_OK)
        return rc < 0 ? CTL_EXIT_OK : rc;
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    rc = ctl_topic_create(cfg, 20000);
    ctr_config_free(cfg);
    return rc == 0                       ? CTL_EXIT_OK
           : rc == CTL_TOPIC_UNREACHABLE ? CTL_EXIT_UNREACHABLE
                                         : CTL_EXIT_FAILED;
}

/* verify [--wait-s N]: N seconds (0-3600, default 30) for the persister to
 * catch up before each look. */
static int cmd_verify(int argc, char **argv)
{
    const char *wait_arg = NULL, *pos[1];
    size_t npos;
    int64_t wait_s = 30;
    ctl_opt opts[] = {{"--wait-s", &wait_arg, NULL}};
    int rc = parse(help_verify, argc, argv, opts, 1, pos, 0, 0, &npos);

    if (rc != CTL_EXIT_OK)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (wait_arg && (ctl_parse_i64(wait_arg, &wait_s) != 0 || wait_s < 0 ||
                     wait_s > 3600)) {
        char why[200];
        snprintf(why, sizeof(why),
                 "--wait-s must be 0 to 3600 seconds, not %.60s", wait_arg);
        return ctl_usage_error(help_verify, why);
    }
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    rc = ctl_verify_run(cfg, (int)wait_s);
    ctr_config_free(cfg);
    return rc;
}

static int cmd_rebuild_postgres(int argc, char **argv)
{
    const char *pos[1];
    size_t npos;
    int keep = 0;
    ctl_opt opts[] = {{"--keep", NULL, &keep}};
    int rc =
        parse(help_rebuild_postgres, argc, argv, opts, 1, pos, 0, 0, &npos);

    if (rc != CTL_EXIT_OK)
        return rc < 0 ? CTL_EXIT_OK : rc;
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    rc = ctl_rebuild_postgres(cfg, sql_dir(), keep);
    ctr_config_free(cfg);
    return rc;
}

static int cmd_rebuild_redis(int argc, char **argv)
{
    const char *pos[1];
    size_t npos;
    int rc = parse(help_rebuild_redis, argc, argv, NULL, 0, pos, 0, 0, &npos);

    if (rc != CTL_EXIT_OK)
        return rc < 0 ? CTL_EXIT_OK : rc;
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    rc = ctl_rebuild_redis(cfg);
    ctr_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    char why[200];

    /* a peer that closes early must fail a send, not kill the process */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2)
        return ctl_usage_error(help_main, "missing command");
    const char *cmd = argv[1];
    int sub_argc = argc - 2;
    char **sub_argv = argv + 2;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0)
        return ctl_help(help_main);
    if (strcmp(argv[1], "counters") == 0)
        return ctl_counters_main(sub_argc, sub_argv);
    if (strcmp(argv[1], "history") == 0)
        return ctl_history_main(sub_argc, sub_argv);
    if (strcmp(argv[1], "migrate") == 0)
        return cmd_migrate(sub_argc, sub_argv);
    if (strcmp(argv[1], "partitions") == 0)
        return ctl_partitions_main(sub_argc, sub_argv);
    if (strcmp(argv[1], "create-topic") == 0)
        return cmd_create_topic(sub_argc, sub_argv);
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(sub_argc, sub_argv);
    if (strcmp(argv[1], "rebuild-postgres") == 0)
        return cmd_rebuild_postgres(sub_argc, sub_argv);
    if (strcmp(argv[1], "rebuild-redis") == 0)
        return cmd_rebuild_redis(sub_argc, sub_argv);
    snprintf(why, sizeof(why), "unknown command %.60s", cmd);
    return ctl_usage_error(help_main, why);
}
