/*
 * NAME
 *	timerwheel - hashed timing wheel, one per worker
 * SUMMARY
 *	#include "core/timerwheel.h"
 *
 *	void rm_wheel_init(struct rm_wheel *w, uint64_t now_tick);
 *	void rm_wheel_add(struct rm_wheel *w, struct rm_timer *t, uint64_t expire_tick);
 *	void rm_wheel_del(struct rm_wheel *w, struct rm_timer *t);
 *	bool rm_timer_armed(const struct rm_timer *t);
 *	size_t rm_wheel_advance(struct rm_wheel *w, uint64_t now_tick,
 *				struct rm_timer **expired, size_t expired_max);
 *	uint64_t rm_wheel_next_tick(const struct rm_wheel *w);
 * DESCRIPTION
 *	Pure: no clock, no allocation.  The caller owns the rm_timer (embedded in a
 *	connection) and passes the current tick.  One wheel holds every timeout of a
 *	worker (idle, command, DATA, handshake, connect) instead of one kernel timeout
 *	per operation.  A timer sits in slot expire_tick % RM_WHEEL_SLOTS; advancing
 *	visits each slot passed once (at most RM_WHEEL_SLOTS slots per call, however
 *	long the gap) and unlinks timers whose expire_tick <= now_tick.  A timer
 *	must start zeroed (pprev NULL: not armed) before its first rm_wheel_add.
 *
 *	rm_wheel_advance stores at most expired_max expired timers and returns how
 *	many; expired timers are unlinked (rm_timer_armed false) before the caller
 *	runs them, so a callback may re-add or delete any timer.  If more than
 *	expired_max are due, the rest stay armed and the next call returns them
 *	(the wheel remembers the slot it stopped at): call again while the result
 *	equals expired_max.  When now_tick moved by less than RM_WHEEL_SLOTS since
 *	the last complete call, timers come out in expire_tick order (except among
 *	those added already due, see below); over a longer gap, in slot order.
 *	now_tick must not go backwards (an older now_tick expires nothing new).
 *
 *	Adding a timer whose expire_tick is <= the wheel's current tick (w->now_tick)
 *	makes it due on the next advance.  Re-adding an armed timer moves it.
 *	Deleting a timer that is not armed does nothing.
 *	rm_wheel_next_tick returns the earliest expire tick among armed timers, or
 *	UINT64_MAX when none (used to bound the loop's wait); it is O(1) amortised
 *	through a cached minimum that is recomputed lazily: only after the timer
 *	holding the minimum was deleted or expired, by a search that skips empty
 *	slots through a bitmap and stops at the first slot holding a timer of the
 *	current round.  It is logically const: it refreshes that cache, so a wheel
 *	must never be an object defined const (rm_wheel_init writes it anyway).
 */
#ifndef RM_TIMERWHEEL_H
#define RM_TIMERWHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RM_WHEEL_SLOTS 4096	/* power of two, multiple of 64 */

struct rm_timer {
	struct rm_timer *next;
	struct rm_timer **pprev;	/* NULL when not armed */
	uint64_t expire_tick;
};

struct rm_wheel {
	uint64_t now_tick;		/* current tick: every slot up to it has been visited */
	size_t armed_count;
	struct rm_timer *slots[RM_WHEEL_SLOTS];
	/* Private to timerwheel.c. */
	struct rm_timer *due;		/* armed with expire_tick <= now_tick when added */
	uint64_t min_tick;		/* <= every armed expire_tick; exact if min_exact */
	bool min_exact;
	uint64_t occupied[RM_WHEEL_SLOTS / 64];	/* one bit per non-empty slot */
};

void rm_wheel_init(struct rm_wheel *w, uint64_t now_tick);
void rm_wheel_add(struct rm_wheel *w, struct rm_timer *t, uint64_t expire_tick);
void rm_wheel_del(struct rm_wheel *w, struct rm_timer *t);
size_t rm_wheel_advance(struct rm_wheel *w, uint64_t now_tick, struct rm_timer **expired,
			size_t expired_max);
uint64_t rm_wheel_next_tick(const struct rm_wheel *w);

static inline bool rm_timer_armed(const struct rm_timer *t) { return t->pprev != NULL; }

#endif
