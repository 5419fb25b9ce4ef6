/*
 * NAME
 *	timerwheel - hashed timing wheel, one per worker
 * SUMMARY
 *	See core/timerwheel.h for the interface.
 * DESCRIPTION
 *	Layout.  A timer whose expire_tick is past the wheel's current tick hangs
 *	in slot expire_tick % RM_WHEEL_SLOTS; one added already due hangs on the
 *	separate "due" list, so that it is found by the very next advance even
 *	when that advance passes no slot (same now_tick twice).  Which list a
 *	timer is on follows from its tick alone: expire_tick <= now_tick means
 *	"due", because now_tick only grows and slot timers stay past it.  Lists
 *	are doubly linked through pprev, so delete is O(1) without a search.
 *
 *	Advance.  It visits the slots of the ticks now_tick+1 .. new now_tick,
 *	at most RM_WHEEL_SLOTS of them: past that many ticks every slot has been
 *	seen once, and testing expire_tick <= now_tick in each slot is enough.
 *	The bitmap of non-empty slots lets a long gap cost 64 word tests rather
 *	than 4096 pointer loads.  When expired_max is reached, now_tick stops
 *	just before the slot being visited, so the next call starts there.
 *
 *	Minimum.  min_tick is a lower bound of every armed expire_tick, exact
 *	while min_exact.  Adding keeps it exact (a new smaller tick is the new
 *	minimum even when the old value was only a bound); removing the timer
 *	that held it only clears min_exact.  That makes re-arming an idle timer
 *	(delete + add, the common case) O(1); the search is paid once, in the
 *	next rm_wheel_next_tick, and starts at the bound instead of slot 0.
 * DIAGNOSTICS
 *	Broken invariants (a bug in the caller or here) panic through RM_ASSERT.
 */
#include <string.h>

#include "core/log.h"
#include "core/timerwheel.h"

#define WHEEL_MASK ((uint64_t)RM_WHEEL_SLOTS - 1)
#define WHEEL_WORDS (RM_WHEEL_SLOTS / 64)

_Static_assert((RM_WHEEL_SLOTS & (RM_WHEEL_SLOTS - 1)) == 0, "RM_WHEEL_SLOTS: power of two");
_Static_assert(RM_WHEEL_SLOTS % 64 == 0, "RM_WHEEL_SLOTS: whole bitmap words");

static size_t wheel_slot(uint64_t tick)
{
	return (size_t)(tick & WHEEL_MASK);
}

static void wheel_mark(struct rm_wheel *w, size_t slot)
{
	w->occupied[slot / 64] |= (uint64_t)1 << (slot % 64);
}

static void wheel_unmark_if_empty(struct rm_wheel *w, size_t slot)
{
	if (w->slots[slot] == NULL)
		w->occupied[slot / 64] &= ~((uint64_t)1 << (slot % 64));
}

/*
 * Distance, from slot 'from', of the first non-empty slot at distance d in
 * [d_start, span), going round the wheel; span when there is none.  The loop
 * moves to the next bitmap word each turn, so it runs at most WHEEL_WORDS + 1
 * times for span <= RM_WHEEL_SLOTS.
 */
static size_t wheel_next_occupied(const struct rm_wheel *w, size_t from, size_t d_start,
				  size_t span)
{
	size_t d = d_start;

	RM_ASSERT(span <= RM_WHEEL_SLOTS);
	for (size_t turns = 0; d < span && turns <= WHEEL_WORDS; turns++) {
		size_t slot = (from + d) & WHEEL_MASK;
		size_t bit = slot % 64;
		uint64_t word = w->occupied[slot / 64] >> bit;

		if (word != 0) {
			d += (size_t)__builtin_ctzll(word);
			return d < span ? d : span;
		}
		d += 64 - bit;
	}
	RM_ASSERT(d >= span);
	return span;
}

static void wheel_link(struct rm_timer **head, struct rm_timer *t)
{
	t->next = *head;
	if (t->next != NULL)
		t->next->pprev = &t->next;
	t->pprev = head;
	*head = t;
}

/* Unlinks an armed timer and keeps the bitmap, count and minimum true. */
static void wheel_unlink(struct rm_wheel *w, struct rm_timer *t)
{
	RM_ASSERT(t->pprev != NULL && w->armed_count > 0);
	*t->pprev = t->next;
	if (t->next != NULL)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
	if (t->expire_tick > w->now_tick)
		wheel_unmark_if_empty(w, wheel_slot(t->expire_tick));
	w->armed_count--;
	if (w->armed_count == 0) {
		w->min_tick = UINT64_MAX;
		w->min_exact = true;
	} else if (t->expire_tick == w->min_tick) {
		/* Another timer may share the tick: only the bound is sure now. */
		w->min_exact = false;
	}
}

void rm_wheel_init(struct rm_wheel *w, uint64_t now_tick)
{
	memset(w, 0, sizeof(*w));
	w->now_tick = now_tick;
	w->min_tick = UINT64_MAX;
	w->min_exact = true;
}

void rm_wheel_add(struct rm_wheel *w, struct rm_timer *t, uint64_t expire_tick)
{
	if (rm_timer_armed(t))
		wheel_unlink(w, t);
	RM_ASSERT(w->armed_count < SIZE_MAX);
	t->expire_tick = expire_tick;
	if (expire_tick <= w->now_tick) {
		wheel_link(&w->due, t);
	} else {
		size_t slot = wheel_slot(expire_tick);

		wheel_link(&w->slots[slot], t);
		wheel_mark(w, slot);
	}
	w->armed_count++;
	/* Every other armed tick is >= min_tick, so a tick at or below it is the minimum. */
	if (expire_tick <= w->min_tick) {
		w->min_tick = expire_tick;
		w->min_exact = true;
	}
}

void rm_wheel_del(struct rm_wheel *w, struct rm_timer *t)
{
	if (rm_timer_armed(t))
		wheel_unlink(w, t);
}

/*
 * Moves the timers of one list whose expire_tick <= now_tick into expired[],
 * up to room of them.  Returns how many; *more is set when it stopped with
 * due timers possibly left on the list.
 */
static size_t wheel_drain(struct rm_wheel *w, struct rm_timer **head, uint64_t now_tick,
			  struct rm_timer **expired, size_t room, bool *more)
{
	size_t n = 0;
	size_t seen = 0;
	size_t seen_max = w->armed_count;	/* unlinking lowers armed_count */
	struct rm_timer *t = *head;

	*more = false;
	while (t != NULL) {
		struct rm_timer *next = t->next;

		/* A list never holds more than every armed timer: a cycle is a bug. */
		seen++;
		RM_ASSERT(seen <= seen_max);
		if (t->expire_tick <= now_tick) {
			if (n == room) {
				*more = true;
				break;
			}
			wheel_unlink(w, t);
			expired[n++] = t;
		}
		t = next;
	}
	return n;
}

size_t rm_wheel_advance(struct rm_wheel *w, uint64_t now_tick, struct rm_timer **expired,
			size_t expired_max)
{
	size_t n;
	bool more;

	if (expired_max == 0)
		return 0;
	RM_ASSERT(expired != NULL);

	n = wheel_drain(w, &w->due, now_tick, expired, expired_max, &more);
	if (more || now_tick <= w->now_tick)
		return n;

	/* Ticks w->now_tick+1 .. now_tick; past RM_WHEEL_SLOTS of them every slot was seen. */
	uint64_t gap_ticks = now_tick - w->now_tick;
	size_t span = gap_ticks < RM_WHEEL_SLOTS ? (size_t)gap_ticks : RM_WHEEL_SLOTS;
	size_t from = wheel_slot(w->now_tick + 1);

	for (size_t d = wheel_next_occupied(w, from, 0, span); d < span;
	     d = wheel_next_occupied(w, from, d + 1, span)) {
		size_t slot = (from + d) & WHEEL_MASK;

		n += wheel_drain(w, &w->slots[slot], now_tick, expired + n, expired_max - n,
				 &more);
		if (more) {
			/*
			 * Stop just before this slot's tick.  Every timer left here or
			 * further on expires at or after that tick, so the slot-or-due
			 * rule still holds.
			 */
			w->now_tick += d;
			return n;
		}
	}
	w->now_tick = now_tick;
	return n;
}

/*
 * The exact minimum, for a wheel whose min_tick is only a bound.  Slot
 * timers all expire after now_tick, so let base be the larger of the two
 * bounds: the first slot, walking from base's, that holds a timer of tick
 * base + distance holds the minimum, since any smaller tick would sit in an
 * earlier slot.  Failing that (all timers are rounds ahead) every slot has
 * been seen and the smallest tick met is the answer.  Bounded by the slots
 * (through the bitmap) and the armed timers.
 */
static uint64_t wheel_min_search(const struct rm_wheel *w)
{
	uint64_t best = UINT64_MAX;
	size_t seen = 0;

	for (const struct rm_timer *t = w->due; t != NULL; t = t->next) {
		seen++;
		RM_ASSERT(seen <= w->armed_count);
		if (t->expire_tick < best)
			best = t->expire_tick;
	}
	if (seen == w->armed_count)
		return best;

	/* A slot timer exists, so now_tick < UINT64_MAX and now_tick + 1 is safe. */
	uint64_t base = w->min_tick > w->now_tick ? w->min_tick : w->now_tick + 1;
	size_t from = wheel_slot(base);

	for (size_t d = wheel_next_occupied(w, from, 0, RM_WHEEL_SLOTS); d < RM_WHEEL_SLOTS;
	     d = wheel_next_occupied(w, from, d + 1, RM_WHEEL_SLOTS)) {
		size_t slot = (from + d) & WHEEL_MASK;

		for (const struct rm_timer *t = w->slots[slot]; t != NULL; t = t->next) {
			seen++;
			RM_ASSERT(seen <= w->armed_count);
			if (t->expire_tick < best)
				best = t->expire_tick;
			if (t->expire_tick == base + d)
				return best;
		}
		if (seen == w->armed_count)
			return best;
	}
	RM_ASSERT(seen == w->armed_count);
	return best;
}

uint64_t rm_wheel_next_tick(const struct rm_wheel *w)
{
	if (w->min_exact)
		return w->min_tick;

	uint64_t min_tick = wheel_min_search(w);
	/* Logically const: only the cache changes (a wheel is never a const object). */
	struct rm_wheel *cache = (struct rm_wheel *)w;

	RM_ASSERT(min_tick >= w->min_tick);
	cache->min_tick = min_tick;
	cache->min_exact = true;
	return min_tick;
}
