/*
 * history.h - `counterctl history NAME --from T --to T [--interval I]`:
 * a counter's history through counter-api
 * (GET /api/v1/counter/NAME/history), as a table or as the api's JSON.
 */
#ifndef COUNTER_CTL_HISTORY_H
#define COUNTER_CTL_HISTORY_H

/* Runs `counterctl history ARGS...`; returns the exit status. */
int ctl_history_main(int argc, char **argv);

#endif
