/*
 * migrate.h - applies the numbered migrations in sql/ (NNNN_name.up.sql,
 * NNNN_name.down.sql), one transaction each, recording the version in
 * schema_migrations. An advisory lock keeps two runs from interleaving.
 */
#ifndef COUNTER_CTL_MIGRATE_H
#define COUNTER_CTL_MIGRATE_H

#include <libpq-fe.h>

/* Applies every pending migration. Returns 0 or -1 (reason printed). */
int ctl_migrate_up(PGconn *conn, const char *sql_dir);

/* Reverts the newest `steps` applied migrations. Returns 0 or -1. */
int ctl_migrate_down(PGconn *conn, const char *sql_dir, int steps);

/* Prints each known migration and whether it is applied. */
int ctl_migrate_status(PGconn *conn, const char *sql_dir);

#endif
