/*
 * migrate.c - see migrate.h.
 */
#include "ctl/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_MIGRATIONS = 512, LOCK_KEY = 727274 };

typedef struct migration {
    int version;
    char up[256];
    char down[256];
} migration;

static int cmp_version(const void *a, const void *b)
{
    return ((const migration *)a)->version - ((const migration *)b)->version;
}

/* Lists sql_dir; returns the count (sorted by version) or -1. */
static int scan(const char *sql_dir, migration *out)
{
    DIR *d = opendir(sql_dir);
    struct dirent *de;
    int n = 0;

    if (d == NULL) {
        fprintf(stderr, "counterctl: could not open %s: %s\n", sql_dir,
                strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        int up = len > 7 && strcmp(name + len - 7, ".up.sql") == 0;
        int down = len > 9 && strcmp(name + len - 9, ".down.sql") == 0;
        char *end;
        if (!up && !down)
            continue;
        long v = strtol(name, &end, 10);
        if (end == name || *end != '_' || v <= 0 || len >= 256)
            continue;
        int i;
        for (i = 0; i < n && out[i].version != v; i++)
            ;
        if (i == n) {
            if (n == MAX_MIGRATIONS)
                break;
            memset(&out[n], 0, sizeof(out[n]));
            out[n++].version = (int)v;
        }
        strcpy(up ? out[i].up : out[i].down, name);
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof(*out), cmp_version);
    for (int i = 0; i < n; i++)
        if (!out[i].up[0] || !out[i].down[0]) {
            fprintf(stderr, "counterctl: migration %04d lacks its %s file\n",
                    out[i].version, out[i].up[0] ? "down" : "up");
            return -1;
        }
    return n;
}

static char *read_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long len;
    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 ||
        fseek(fp, 0, SEEK_SET) != 0 ||
        (buf = malloc((size_t)len + 1)) == NULL ||
        fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        fprintf(stderr, "counterctl: could not read %s\n", path);
        free(buf);
        buf = NULL;
    } else {
        buf[len] = '\0';
    }
    if (fp)
        fclose(fp);
    return buf;
}

static int exec_ok(PGconn *conn, const char *sql, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "counterctl: %s failed: %s", what,
                PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

/* Takes the lock and makes sure the bookkeeping table exists. */
static int prepare(PGconn *conn)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d)", LOCK_KEY);
    if (exec_ok(conn, sql, "taking the migration lock"))
        return -1;
    return exec_ok(conn,
                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                   " version integer PRIMARY KEY,"
                   " applied_at timestamptz NOT NULL DEFAULT now())",
                   "creating schema_migrations");
}

static int applied_versions(PGconn *conn, int *applied, int max)
{
    PGresult *res = PQexec(conn, "SELECT version FROM schema_migrations "
                                 "ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "counterctl: reading schema_migrations failed: %s",
                PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int n = PQntuples(res) < max ? PQntuples(res) : max;
    for (int i = 0; i < n; i++)
        applied[i] = atoi(PQgetvalue(res, i, 0));
    PQclear(res);
    return n;
}

static int is_applied(const int *applied, int n, int version)
{
    for (int i = 0; i < n; i++)
        if (applied[i] == version)
            return 1;
    return 0;
}

/* Runs one migration file and the bookkeeping change in one transaction. */
static int run_one(PGconn *conn, const char *sql_dir, const char *file,
                   int version, int up)
{
    char book[128];
    char *body = read_file(sql_dir, file);
    int rc = -1;

    if (body == NULL)
        return -1;
    if (up)
        snprintf(book, sizeof(book),
                 "INSERT INTO schema_migrations (version) VALUES (%d)",
                 version);
    else
        snprintf(book, sizeof(book),
                 "DELETE FROM schema_migrations WHERE version = %d", version);
    if (exec_ok(conn, "BEGIN", "begin") == 0) {
        if (exec_ok(conn, body, file) == 0 && exec_ok(conn, book, file) == 0 &&
            exec_ok(conn, "COMMIT", "commit") == 0) {
            printf("%s %s\n", up ? "applied" : "reverted", file);
            rc = 0;
        } else {
            PGresult *res = PQexec(conn, "ROLLBACK");
            PQclear(res);
        }
    }
    free(body);
    return rc;
}

/* Scans the directory, takes the lock and reads what is applied.
 * Returns the number of migrations, or -1. */
static int load_state(PGconn *conn, const char *sql_dir, migration *m,
                      int *applied, int *na)
{
    int n = scan(sql_dir, m);
    if (n < 0 || prepare(conn) ||
        (*na = applied_versions(conn, applied, MAX_MIGRATIONS)) < 0)
        return -1;
    return n;
}

int ctl_migrate_up(PGconn *conn, const char *sql_dir)
{
    static migration m[MAX_MIGRATIONS];
    int applied[MAX_MIGRATIONS];
    int na, done = 0;
    int n = load_state(conn, sql_dir, m, applied, &na);

    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (is_applied(applied, na, m[i].version))
            continue;
        if (run_one(conn, sql_dir, m[i].up, m[i].version, 1))
            return -1;
        done++;
    }
    if (done == 0)
        printf("schema is up to date (%d migrations)\n", n);
    return 0;
}

int ctl_migrate_down(PGconn *conn, const char *sql_dir, int steps)
{
    static migration m[MAX_MIGRATIONS];
    int applied[MAX_MIGRATIONS];
    int na;
    int n = load_state(conn, sql_dir, m, applied, &na);

    if (n < 0)
        return -1;
    for (int i = n - 1; i >= 0 && steps > 0; i--) {
        if (!is_applied(applied, na, m[i].version))
            continue;
        if (run_one(conn, sql_dir, m[i].down, m[i].version, 0))
            return -1;
        steps--;
    }
    return 0;
}

int ctl_migrate_status(PGconn *conn, const char *sql_dir)
{
    static migration m[MAX_MIGRATIONS];
    int applied[MAX_MIGRATIONS];
    int na;
    int n = load_state(conn, sql_dir, m, applied, &na);

    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++)
        printf("%04d %-8s %s\n", m[i].version,
               is_applied(applied, na, m[i].version) ? "applied" : "pending",
               m[i].up);
    return 0;
}
