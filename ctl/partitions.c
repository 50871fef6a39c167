/*
 * partitions.c - see partitions.h.
 */
#include "ctl/partitions.h"

#include "common/pgconn.h"
#include "common/strbuf.h"
#include "ctl/cli.h"

#include <stdlib.h>
#include <string.h>

/* One maintenance at a time per database (the migrations use 727274). */
enum { LOCK_KEY = 727275 };

/* How long a table may be waited for (the persister and the history reads
 * hold it only for a transaction); past it, this run fails and the next
 * run (the daily timer) does the work. */
static const char lock_timeout[] = "10s";

static const char help_partitions[] =
    "usage: counterctl partitions [--ahead N] [--retain-days D] [--dry-run] "
    "[--json]\n"
    "\n"
    "Maintains the monthly partitions of the history tables counter_daily,\n"
    "counter_unique_users, counter_hll (by the month of their day) and\n"
    "counter_buckets (of the UTC minute); rows of a month without a\n"
    "partition wait in the table's DEFAULT partition. For each table, in\n"
    "one transaction:\n"
    "  drop    the partitions whose month ends on or before today (UTC) minus\n"
    "          the retention, with their rows; rows of such months in\n"
    "          DEFAULT are deleted too (\"purge\")\n"
    "  create  the partitions of this month and the next N, and of any other\n"
    "          month DEFAULT holds rows of, moving those rows into them\n"
    "Every action is printed; nothing is moved or dropped silently.\n"
    "\n"
    "  --ahead N        months ahead of this one to create (0-120, default 3)\n"
    "  --retain-days D  days to keep in every table (0-36500, 0 = forever),\n"
    "                   instead of the configuration's retention.history_days\n"
    "                   (counter_daily), retention.buckets_days\n"
    "                   (counter_buckets) and retention.unique_days\n"
    "                   (counter_unique_users, counter_hll); default 0\n"
    "  --dry-run        change nothing; print what would be done\n"
    "  --json           one JSON document: {\"ok\", \"dry_run\", \"ahead\",\n"
    "                   \"tables\": [{\"table\", \"retain_days\", \"cutoff\",\n"
    "                   \"partitions\", \"default_rows\", \"actions\": "
    "[{\"action\",\n"
    "                   \"partition\", \"from\", \"to\", \"rows\"}]}], "
    "\"created\",\n"
    "                   \"dropped\", \"rows_moved\", \"rows_dropped\"}\n"
    "\n"
    "A table another transaction holds for more than 10 s fails the run (the\n"
    "next run catches up). Run daily "
    "(deploy/systemd/counter-partitions.timer).\n"
    "\n"
    "Exit status: 0 done; 1 a step failed (the tables before it are done);\n"
    "2 usage or configuration error; 3 PostgreSQL unreachable.\n";

typedef struct history_table {
    const char *name;
    int retain_days; /* from the configuration */
} history_table;

static int table_list(const ctr_config *cfg, history_table out[4])
{
    out[0] = (history_table){"counter_daily", cfg->retention_history_days};
    out[1] = (history_table){"counter_buckets", cfg->retention_buckets_days};
    out[2] =
        (history_table){"counter_unique_users", cfg->retention_unique_days};
    out[3] = (history_table){"counter_hll", cfg->retention_unique_days};
    return 4;
}

static int exec_ok(PGconn *conn, const char *sql, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
             PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(errbuf, errlen, "%s", PQresultErrorMessage(res));
        errbuf[strcspn(errbuf, "\n")] = '\0';
    }
    PQclear(res);
    return ok ? 0 : -1;
}

static const char *plural(long long n)
{
    return n == 1 ? "" : "s";
}

static json_object *json_text_or_null(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return json_object_new_string(PQgetvalue(res, row, col));
}

/* Prints and records the rows counter_partitions_maintain returned. */
static void report_table(const PGresult *res, const history_table *t,
                         int retain_days, int dry_run, long partitions_now,
                         FILE *text, json_object *tables,
                         ctl_partitions_totals *sum)
{
    int n = PQntuples(res);
    long created = 0, dropped = 0;
    long long default_rows = 0;
    const char *cutoff = NULL;
    json_object *actions = json_object_new_array();

    for (int i = 0; i < n; i++) {
        const char *action = PQgetvalue(res, i, 0);
        const char *part = PQgetvalue(res, i, 1);
        const char *from = PQgetvalue(res, i, 2);
        const char *to = PQgetvalue(res, i, 3);
        long long rows = strtoll(PQgetvalue(res, i, 4), NULL, 10);

        if (strcmp(action, "status") == 0) {
            default_rows = rows;
            cutoff = PQgetisnull(res, i, 2) ? NULL : from;
            continue;
        }
        if (strcmp(action, "create") == 0) {
            created++;
            sum->rows_moved += rows;
            if (text)
                fprintf(text,
                        "%s: create %s [%s, %s), %lld row%s moved from "
                        "DEFAULT\n",
                        t->name, part, from, to, rows, plural(rows));
        } else if (strcmp(action, "drop") == 0) {
            dropped++;
            sum->rows_dropped += rows;
            if (text)
                fprintf(text, "%s: drop %s [%s, %s) with %lld row%s\n", t->name,
                        part, from, to, rows, plural(rows));
        } else {
            sum->rows_dropped += rows;
            if (text)
                fprintf(text, "%s: purge %lld row%s before %s from %s\n",
                        t->name, rows, plural(rows), to, part);
        }
        json_object *a = json_object_new_object();
        json_object_object_add(a, "action", json_object_new_string(action));
        json_object_object_add(a, "partition", json_object_new_string(part));
        json_object_object_add(a, "from", json_text_or_null(res, i, 2));
        json_object_object_add(a, "to", json_text_or_null(res, i, 3));
        json_object_object_add(a, "rows", json_object_new_int64(rows));
        json_object_array_add(actions, a);
    }
    /* a dry run changed nothing: count what the run would leave */
    long partitions =
        dry_run ? partitions_now + created - dropped : partitions_now;
    sum->created += created;
    sum->dropped += dropped;
    if (text) {
        fprintf(text, "%s: %ld monthly partition%s, %lld row%s in DEFAULT; ",
                t->name, partitions, plural(partitions), default_rows,
                plural(default_rows));
        if (retain_days > 0)
            fprintf(text, "keeps %d days (from %s)\n", retain_days,
                    cutoff ? cutoff : "?");
        else
            fprintf(text, "keeps everything\n");
    }
    if (tables == NULL) {
        json_object_put(actions);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "table", json_object_new_string(t->name));
    json_object_object_add(o, "retain_days", json_object_new_int(retain_days));
    json_object_object_add(o, "cutoff",
                           cutoff ? json_object_new_string(cutoff) : NULL);
    json_object_object_add(o, "partitions", json_object_new_int64(partitions));
    json_object_object_add(o, "default_rows",
                           json_object_new_int64(default_rows));
    json_object_object_add(o, "actions", actions);
    json_object_array_add(tables, o);
}

/* "schema." quoted for SQL, or "" for the search path. NULL: no memory. */
static char *schema_prefix(PGconn *conn, const char *schema)
{
    if (schema == NULL)
        return strdup("");
    char *quoted = PQescapeIdentifier(conn, schema, strlen(schema));
    if (quoted == NULL)
        return NULL;
    size_t len = strlen(quoted) + 2;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%s.", quoted);
    PQfreemem(quoted);
    return out;
}

/* One table in one transaction. 0, or -1 with errbuf set. */
static int maintain_table(PGconn *conn, const char *prefix,
                          const history_table *t, int ahead, int retain_days,
                          int dry_run, FILE *text, json_object *tables,
                          ctl_partitions_totals *sum, char *errbuf,
                          size_t errlen)
{
    char sql[512], table[300], ahead_s[16], retain_s[16];
    PGresult *res = NULL, *count = NULL;
    int rc = -1;

    snprintf(table, sizeof(table), "%s%s", prefix, t->name);
    snprintf(ahead_s, sizeof(ahead_s), "%d", ahead);
    snprintf(retain_s, sizeof(retain_s), "%d", retain_days);
    const char *params[4] = {table, ahead_s, retain_s,
                             dry_run ? "true" : "false"};

    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL lock_timeout = '%s'; "
             "SELECT pg_advisory_xact_lock(%d)",
             lock_timeout, LOCK_KEY);
    if (exec_ok(conn, sql, errbuf, errlen)) {
        PQclear(PQexec(conn, "ROLLBACK"));
        goto out;
    }
    snprintf(sql, sizeof(sql),
             "SELECT action, partition_name, range_from, range_to, row_count "
             "FROM %scounter_partitions_maintain($1::regclass, $2::int, "
             "$3::int, $4::boolean)",
             prefix);
    res = PQexecParams(conn, sql, 4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    count = PQexecParams(conn,
                         "SELECT count(*) FROM pg_inherits i "
                         "JOIN pg_partitioned_table p "
                         "ON p.partrelid = i.inhparent "
                         "WHERE i.inhparent = $1::regclass "
                         "AND i.inhrelid <> p.partdefid",
                         1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(count) != PGRES_TUPLES_OK) {
        PQclear(res);
        res = count;
        count = NULL;
        goto failed;
    }
    /* a dry run must leave no trace, whatever the function did */
    if (exec_ok(conn, dry_run ? "ROLLBACK" : "COMMIT", errbuf, errlen))
        goto out;
    report_table(res, t, retain_days, dry_run,
                 strtol(PQgetvalue(count, 0, 0), NULL, 10), text, tables, sum);
    rc = 0;
    goto out;
failed:
    snprintf(errbuf, errlen, "%s: %s", t->name, PQresultErrorMessage(res));
    errbuf[strcspn(errbuf, "\n")] = '\0';
    if (strstr(errbuf, "counter_partitions_maintain") &&
        strstr(errbuf, "does not exist"))
        snprintf(errbuf + strlen(errbuf), errlen - strlen(errbuf),
                 " (is migration 0004 applied? counterctl migrate up)");
    PQclear(PQexec(conn, "ROLLBACK"));
out:
    PQclear(count);
    PQclear(res);
    return rc;
}

int ctl_partitions_apply(PGconn *conn, const ctr_config *cfg,
                         const char *schema, int ahead,
                         int retain_days_override, int dry_run, FILE *text,
                         json_object *tables, ctl_partitions_totals *sum,
                         char *errbuf, size_t errlen)
{
    history_table list[4];
    int n = table_list(cfg, list), rc = 0;
    char *prefix = schema_prefix(conn, schema);

    memset(sum, 0, sizeof(*sum));
    if (prefix == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        int retain = retain_days_override >= 0 ? retain_days_override
                                               : list[i].retain_days;
        rc = maintain_table(conn, prefix, &list[i], ahead, retain, dry_run,
                            text, tables, sum, errbuf, errlen);
    }
    if (rc == 0 && text)
        fprintf(text,
                "partitions: %s%ld created, %ld dropped; %lld row%s moved "
                "out of DEFAULT, %lld row%s dropped\n",
                dry_run ? "dry run, nothing changed; would have " : "",
                sum->created, sum->dropped, sum->rows_moved,
                plural(sum->rows_moved), sum->rows_dropped,
                plural(sum->rows_dropped));
    free(prefix);
    return rc;
}

/*
 * A counter whose own retention_days is longer than the table-wide
 * retention loses its rows earlier than its definition says: say so, once
 * per setting, naming the longest.
 */
static void warn_shorter_retention(const ctr_config *cfg, int override)
{
    const struct {
        const char *key;
        int days;
    } table_wide[2] = {
        {"retention.buckets_days", cfg->retention_buckets_days},
        {"retention.unique_days", cfg->retention_unique_days},
    };
    for (int k = 0; k < (override >= 0 ? 1 : 2); k++) {
        int days = override >= 0 ? override : table_wide[k].days, longer = 0;
        const ctr_counter_def *longest = NULL;
        for (size_t i = 0; i <= cfg->n_counters; i++) {
            const ctr_counter_def *d =
                i < cfg->n_counters ? &cfg->counters[i] : &cfg->default_counter;
            /* a declared "*" replaces the built-in default */
            if (i == cfg->n_counters && ctr_config_counter(cfg, "") != d)
                continue;
            if (days > 0 && d->retention_days > days) {
                longer++;
                if (!longest || d->retention_days > longest->retention_days)
                    longest = d;
            }
        }
        if (longest)
            ctl_err("warning: %s keeps %d days, less than the retention_days "
                    "of %d counter definition%s (counters.%s: %d); their "
                    "buckets and unique rows go after %d days",
                    override >= 0 ? "--retain-days" : table_wide[k].key, days,
                    longer, longer == 1 ? "" : "s", longest->pattern,
                    longest->retention_days, days);
    }
}

static int parse_range(const char *arg, long lo, long hi, int *out)
{
    int64_t v;
    if (ctl_parse_i64(arg, &v) != 0 || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int ctl_partitions_main(int argc, char **argv)
{
    const char *ahead_arg = NULL, *retain_arg = NULL, *pos[1];
    int dry_run = 0, json = 0, ahead = CTL_PARTITIONS_AHEAD, retain = -1;
    int rc = CTL_EXIT_OK;
    size_t npos;
    char why[512];
    ctl_opt opts[] = {{"--ahead", &ahead_arg, NULL},
                      {"--retain-days", &retain_arg, NULL},
                      {"--dry-run", NULL, &dry_run},
                      {"--json", NULL, &json}};
    ctr_config *cfg = NULL;
    PGconn *conn = NULL;
    json_object *tables = NULL;
    ctl_partitions_totals sum = {0};

    switch (ctl_args_parse(argc, argv, opts, 4, pos, 0, 0, &npos, why,
                           sizeof(why))) {
    case CTL_ARGS_HELP: return ctl_help(help_partitions);
    case CTL_ARGS_BAD: return ctl_usage_error(help_partitions, why);
    }
    if (ahead_arg && parse_range(ahead_arg, 0, 120, &ahead) != 0)
        return ctl_usage_error(help_partitions,
                               "--ahead must be 0 to 120 months");
    if (retain_arg && parse_range(retain_arg, 0, 36500, &retain) != 0)
        return ctl_usage_error(help_partitions,
                               "--retain-days must be 0 to 36500 days");
    cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    warn_shorter_retention(cfg, retain);
    conn = ctr_pg_connect(cfg, "counterctl", why, sizeof(why));
    if (conn == NULL) {
        ctl_err("%s", why);
        if (json)
            ctl_json_print(ctl_json_failure("postgres_unreachable", why));
        rc = CTL_EXIT_UNREACHABLE;
        goto out;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    tables = json ? json_object_new_array() : NULL;
    if (ctl_partitions_apply(conn, cfg, NULL, ahead, retain, dry_run,
                             json ? NULL : stdout, tables, &sum, why,
                             sizeof(why))) {
        ctl_err("partitions: %s", why);
        rc = PQstatus(conn) == CONNECTION_BAD ? CTL_EXIT_UNREACHABLE
                                              : CTL_EXIT_FAILED;
    }
    if (json) {
        json_object *doc = rc == CTL_EXIT_OK
                               ? json_object_new_object()
                               : ctl_json_failure(rc == CTL_EXIT_UNREACHABLE
                                                      ? "postgres_unreachable"
                                                      : "maintenance_failed",
                                                  why);
        if (rc == CTL_EXIT_OK)
            json_object_object_add(doc, "ok", json_object_new_boolean(1));
        json_object_object_add(doc, "dry_run",
                               json_object_new_boolean(dry_run));
        json_object_object_add(doc, "ahead", json_object_new_int(ahead));
        json_object_object_add(doc, "tables", tables);
        tables = NULL; /* doc owns it */
        json_object_object_add(doc, "created",
                               json_object_new_int64(sum.created));
        json_object_object_add(doc, "dropped",
                               json_object_new_int64(sum.dropped));
        json_object_object_add(doc, "rows_moved",
                               json_object_new_int64(sum.rows_moved));
        json_object_object_add(doc, "rows_dropped",
                               json_object_new_int64(sum.rows_dropped));
        ctl_json_print(doc);
    }
out:
    json_object_put(tables);
    PQfinish(conn);
    ctr_config_free(cfg);
    return rc;
}
