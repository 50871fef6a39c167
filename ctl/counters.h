/*
 * counters.h - `counterctl counters list|get|set|reset`: what an operator
 * looks at and corrects. list and get read the stores (Redis, else
 * PostgreSQL, saying which); set and reset go through counter-api's HTTP
 * endpoints, so that a correction is an event in Redis and in the Kafka
 * log like every write, and PostgreSQL follows it.
 */
#ifndef COUNTER_CTL_COUNTERS_H
#define COUNTER_CTL_COUNTERS_H

/* Runs `counterctl counters ARGS...` (argv[0] is the subcommand, if any).
 * Returns the exit status (CTL_EXIT_*). */
int ctl_counters_main(int argc, char **argv);

#endif
