/*
 * partitions.h - `counterctl partitions`: the monthly partitions of the
 * history tables (sql/0004_partition_history.up.sql). Creates the months
 * ahead, moves rows that fell into a DEFAULT partition into their own
 * month, and drops the months wholly older than the retention
 * (retention.history_days, .buckets_days, .unique_days). The work is done
 * by the SQL function counter_partitions_maintain, one table per
 * transaction.
 */
#ifndef COUNTER_CTL_PARTITIONS_H
#define COUNTER_CTL_PARTITIONS_H

#include "common/config.h"

#include <json-c/json.h>
#include <libpq-fe.h>
#include <stdio.h>

/* Months created ahead of the current one unless --ahead says otherwise. */
enum { CTL_PARTITIONS_AHEAD = 3 };

/* What a run did (or, dry, would do), over all tables. */
typedef struct ctl_partitions_totals {
    long created, dropped;
    long long rows_moved;   /* out of DEFAULT into a new partition */
    long long rows_dropped; /* with a dropped partition, or purged */
} ctl_partitions_totals;

/*
 * Maintains every partitioned history table of schema (NULL: those the
 * search path finds, as the services do) over conn, which must be idle
 * (no transaction open). retain_days_override >= 0 replaces the
 * configured retention of every table (0: keep forever). With dry_run
 * nothing is changed and the report says what would be. Each action is
 * printed on text (when not NULL) and appended to tables (a JSON array,
 * when not NULL) as one object per table, and counted in *sum (zeroed
 * first). Returns 0, or -1 with a one-line reason in errbuf; the tables
 * done before the failure stay done (and counted).
 */
int ctl_partitions_apply(PGconn *conn, const ctr_config *cfg,
                         const char *schema, int ahead,
                         int retain_days_override, int dry_run, FILE *text,
                         json_object *tables, ctl_partitions_totals *sum,
                         char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Runs `counterctl partitions ARGS...`; returns the exit status. */
int ctl_partitions_main(int argc, char **argv);

#endif
