/*
 * scripts.h - the Lua scripts every writer of counter keys runs on Redis,
 * as NUL-terminated texts built from the .lua files of redis/ at build time
 * (redis/embed.cmake). What each takes and returns is written at the top
 * of its file; the key layout is in redis/apply.h.
 *
 *   write   one write, whole: epoch, fence, guards, dedup, escrowed
 *           bounds, the change and its pending entry (write.lua)
 *   writes  the api's writes of one loop turn to one server (one slot in
 *           a cluster), in one call: write on each, in order
 *           (writes_head.lua, write.lua, writes_tail.lua)
 *   fold    consecutive external events of one counter, in one call, as
 *           write decides each (fold.lua)
 *   undo    a pending write the log refused, taken back (undo.lua)
 *   finish  pending writes whose events are in the log (finish.lua)
 *   claim   a resolver takes a pending entry over (claim.lua)
 *   idem    a retry takes an Idempotency-Key record over (idem.lua)
 *   fenced  one restore command, only while the restore holds the slot
 *           (fenced.lua)
 *   lock    a lock only its owner renews and releases (lock.lua)
 *   mark    a restore marks a slot, unless a later one did (mark.lua)
 */
#ifndef COUNTER_REDIS_SCRIPTS_H
#define COUNTER_REDIS_SCRIPTS_H

extern const char ctr_script_write[];
extern const char ctr_script_writes[];
extern const char ctr_script_fold[];
extern const char ctr_script_undo[];
extern const char ctr_script_finish[];
extern const char ctr_script_claim[];
extern const char ctr_script_idem[];
extern const char ctr_script_fenced[];
extern const char ctr_script_lock[];
extern const char ctr_script_mark[];

#endif
