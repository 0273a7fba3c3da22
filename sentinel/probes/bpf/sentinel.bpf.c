// SPDX-License-Identifier: GPL-2.0
// Sentinel's eBPF memory probe (issue 12): CO-RE, tp_btf and one task iterator.
//
// Built by `make bpf` (clang -target bpf, against kernel_types.h), shipped compiled in
// the wheel (sentinel/probes/bpf/sentinel.bpf.o), loaded by sentinel.probes.ebpf through
// libbpf.so.1. The layout below is that module's: change both together.
//
// Sentinel writes:  cfg (its pid namespace), trees[slot] (threshold, steps), seed
//                   (ns tgid -> slot, resolved by the iter/task program on demand)
// BPF keeps:        watched (host tgid -> {slot, ns tgid, mm}), mms (mm -> {slot, pages,
//                   last counters}), sums[slot] (running sum, crossing state); an mm is
//                   keyed by mm_key() (opaque to Sentinel); in .bss, the fast path's
//                   buckets (followed mms per hash) and per-CPU hints, BPF's alone
// Output:           events ring buffer (struct event), one global sequence number
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";  // bpf_get_ns_current_pid_tgid... are GPL-only

#define MAX_TREES 64
#define MAX_PROCS 16384
#define MAX_NS_LEVELS 8
#define NO_TREE 0xffffffffu

enum ev_type {
	EV_LIMIT = 1,   // the tree's sum reached its threshold (and again per near step)
	EV_FORK = 2,    // a watched process forked a new one (now watched)
	EV_EXIT = 3,    // a watched process exited (its mm's pages left the sum)
	EV_VICTIM = 4,  // the kernel's OOM killer chose a process (watched or not)
	EV_SEEDED = 5,  // a seeded process was found by the iterator
	EV_STEP = 6,    // the sum moved by the step since the last step record
};

struct event {
	u64 seq;        // global sequence: a gap means lost records
	u64 ts_ns;      // bpf_ktime_get_ns(): CLOCK_MONOTONIC
	u32 type;
	u32 tree;
	u32 tgid;       // host tgid
	u32 ns_tgid;    // tgid in Sentinel's pid namespace (0: not visible there)
	u32 ppid;       // the parent (fork), the uid (victim)
	u32 _pad;
	s64 sum_pages;  // the tree's sum after the event
	s64 mm_pages;   // this mm's resident pages after the event
};

struct cfg {
	u64 pidns_ino;  // st_ino of /proc/self/ns/pid: Sentinel's pid namespace
};

struct tree_cfg {
	s64 threshold;  // pages; <= 0: none
	s64 near;       // pages: while at/over the threshold, again per this much growth
	s64 step;       // pages; 0: no step records
	u64 step_ns;    // at most one step record per this many ns
};

struct tree_sum {
	s64 pages;
	u64 armed;      // 1: over the threshold, the crossing reported (64-bit for cmpxchg)
	s64 last_near;  // the sum of the last EV_LIMIT
	s64 last_step;  // the sum of the last EV_STEP
	u64 last_step_ns;
};

struct proc_val { u32 tree; u32 ns_tgid; u64 mm; };
struct mm_val { u32 tree; u32 tgid; s64 pages; u32 ns_tgid; u32 _pad; s64 cnt[4]; };

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, u32); __type(value, struct cfg); } cfg SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MAX_TREES);
	 __type(key, u32); __type(value, struct tree_cfg); } trees SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MAX_TREES);
	 __type(key, u32); __type(value, struct tree_sum); } sums SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
	 __type(key, u32); __type(value, u32); } seed SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, MAX_PROCS);
	 __type(key, u32); __type(value, struct proc_val); } watched SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, MAX_PROCS);
	 __type(key, u64); __type(value, struct mm_val); } mms SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 256 * 1024); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, u32); __type(value, u64); } seqno SEC(".maps");

// The fast path's pre-filter and hints (.bss, read without a helper call). A bucket is
// chosen by the mm pointer's hash; `users` counts the followed mms in it (raised before
// an mm joins mms, lowered after BPF deletes one; an mm Sentinel's forget() removes
// leaves its count: a stale count only costs a lookup, it never hides an mm), `gen`
// moves whenever an mm of the bucket is written, joins or leaves (a hint is valid only
// at the generation it was taken). 4096 buckets: with a few hundred followed mms, an
// unwatched fault finds an empty bucket >90 % of the time.
#define BUCKET_BITS 12
#define MAX_CPUS 1024  // CPUs above this always take the lookup
struct bucket { u32 users; u32 gen; };
struct hint { u64 mm; u32 gen; u32 _pad; s64 cnt[4]; };  // per CPU: the last mm written
struct bucket buckets[1 << BUCKET_BITS];
struct hint hints[MAX_CPUS];

static __always_inline u32 bucket_of(u64 mm)
{
	return (mm * 0x9E3779B97F4A7C15ull) >> (64 - BUCKET_BITS);  // Fibonacci hashing
}

// The key of an mm in mms and buckets: its address as a plain number. The verifier
// allows no arithmetic on a BTF pointer but one: with CAP_PERFMON (which tp_btf needs
// anyway) a pointer minus a pointer is a scalar; so, minus the .bss's address, a
// constant for this load (no helper call). Every program keys mms the same way.
static __always_inline u64 mm_key(struct mm_struct *mm)
{
	return (u64)mm - (u64)(void *)buckets;
}

static __always_inline s64 clamp0(s64 v) { return v < 0 ? 0 : v; }

// Every counter of statm's resident, into mv->cnt; their sum.
static __always_inline s64 mm_rss_fill(struct mm_struct *mm, struct mm_val *mv)
{
	mv->cnt[MM_FILEPAGES] = clamp0(BPF_CORE_READ(mm, rss_stat[MM_FILEPAGES].count));
	mv->cnt[MM_ANONPAGES] = clamp0(BPF_CORE_READ(mm, rss_stat[MM_ANONPAGES].count));
	mv->cnt[MM_SHMEMPAGES] = clamp0(BPF_CORE_READ(mm, rss_stat[MM_SHMEMPAGES].count));
	return mv->cnt[MM_FILEPAGES] + mv->cnt[MM_ANONPAGES] + mv->cnt[MM_SHMEMPAGES];
}

// The tgid of `task` in the pid namespace with inode `ino` (0: not visible there).
static __always_inline u32 ns_tgid_of(struct task_struct *task, u64 ino)
{
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	for (int i = 0; i < MAX_NS_LEVELS; i++) {
		if (i > level)
			break;
		struct upid up;
		if (bpf_core_read(&up, sizeof(up), &pid->numbers[i]))
			break;
		if (BPF_CORE_READ(up.ns, ns.inum) == ino)
			return up.nr;
	}
	return 0;
}

static __always_inline u64 pidns_ino(void)
{
	u32 z = 0;
	struct cfg *c = bpf_map_lookup_elem(&cfg, &z);
	return c ? c->pidns_ino : 0;
}

// One record; 0 when the ring buffer was full (its number is taken all the same, so
// Sentinel sees the gap). Tree changes (fork, exit, seeded) do not wake Sentinel:
// they are read with the next record or sample (BPF_RB_NO_WAKEUP).
static __always_inline int emit(u32 type, u32 tree, u32 tgid, u32 ns_tgid, u32 ppid,
				s64 sum, s64 mmp)
{
	u32 z = 0;
	u64 *sq = bpf_map_lookup_elem(&seqno, &z);
	u64 s = sq ? __sync_fetch_and_add(sq, 1) : 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->seq = s;
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type; e->tree = tree; e->tgid = tgid; e->ns_tgid = ns_tgid;
	e->ppid = ppid; e->_pad = 0; e->sum_pages = sum; e->mm_pages = mmp;
	// The others force one: the default wakes only a reader that had read everything,
	// and one that left quiet records unread would then sleep through a crossing.
	bpf_ringbuf_submit(e, (type == EV_FORK || type == EV_EXIT || type == EV_SEEDED)
			   ? BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
	return 1;
}

// mv's resident pages moved by `delta`: move the tree's sum and report what it
// crossed. Atomic: threads of one process fault on several CPUs at once.
static __always_inline void account(struct mm_val *mv, s64 delta)
{
	if (!delta)
		return;
	s64 now = __sync_fetch_and_add(&mv->pages, delta) + delta;
	u32 tree = mv->tree;
	struct tree_sum *ts = bpf_map_lookup_elem(&sums, &tree);
	struct tree_cfg *tc = bpf_map_lookup_elem(&trees, &tree);
	if (!ts || !tc)
		return;
	s64 sum = __sync_fetch_and_add(&ts->pages, delta) + delta;
	if (tc->threshold > 0 && sum >= tc->threshold) {
		if (ts->armed == 0) {
			if (__sync_val_compare_and_swap(&ts->armed, 0, 1) == 0) {
				ts->last_near = sum;
				if (!emit(EV_LIMIT, tree, mv->tgid, mv->ns_tgid, 0, sum, now))
					ts->armed = 0;  // lost: the next fold tries again
			}
		} else if (tc->near > 0 && sum - ts->last_near >= tc->near) {
			// again at each new high (not on churn below the last one)
			ts->last_near = sum;
			emit(EV_LIMIT, tree, mv->tgid, mv->ns_tgid, 0, sum, now);
		}
		return;
	}
	// Disarmed only 1/64 below the threshold: churn across it is not a record a fold.
	if (ts->armed && sum < tc->threshold - (tc->threshold >> 6))
		ts->armed = 0;
	if (tc->step > 0) {
		s64 moved = sum - ts->last_step;
		if (moved < 0)
			moved = -moved;
		u64 t = bpf_ktime_get_ns();
		u64 last = ts->last_step_ns;
		if (moved >= tc->step && t - last >= tc->step_ns &&
		    __sync_val_compare_and_swap(&ts->last_step_ns, last, t) == last) {
			ts->last_step = sum;
			emit(EV_STEP, tree, mv->tgid, mv->ns_tgid, 0, sum, now);
		}
	}
}

// BPF deleted `mm` from mms: one follower less in its bucket.
static __always_inline void forgot(u64 mm)
{
	struct bucket *b = &buckets[bucket_of(mm)];
	__sync_fetch_and_add(&b->gen, 1);
	if (b->users)
		__sync_fetch_and_add(&b->users, -1);
}

// Start following `tgid` (its mm `mm`) in `tree`; its current pages join the sum.
static __always_inline s64 adopt(struct mm_struct *mm, u32 tree, u32 tgid, u32 nst)
{
	u64 key = mm_key(mm);
	struct proc_val pv = { .tree = tree, .ns_tgid = nst, .mm = key };
	if (bpf_map_update_elem(&watched, &tgid, &pv, BPF_ANY))
		return 0;  // the map is full: not followed (Sentinel seeds it again later)
	if (!mm)
		return 0;
	struct mm_val nv = { .tree = tree, .tgid = tgid, .pages = 0, .ns_tgid = nst };
	struct bucket *b = &buckets[bucket_of(key)];
	__sync_fetch_and_add(&b->users, 1);  // before the mm can be found: no fault missed
	__sync_fetch_and_add(&b->gen, 1);    // a reused mm address: old hints are stale
	if (bpf_map_update_elem(&mms, &key, &nv, BPF_NOEXIST)) {
		__sync_fetch_and_add(&b->users, -1);
		return 0;  // already followed (a CLONE_VM child shares its parent's mm)
	}
	struct mm_val *mv = bpf_map_lookup_elem(&mms, &key);
	if (!mv)
		return 0;
	s64 now = mm_rss_fill(mm, mv);
	__sync_fetch_and_add(&b->gen, 1);  // cnt written: a hint taken meanwhile is stale
	account(mv, now);
	return now;
}

static __always_inline s64 tree_pages(u32 tree)
{
	struct tree_sum *ts = bpf_map_lookup_elem(&sums, &tree);
	return ts ? ts->pages : 0;
}

// Every page fault of every process on the node comes here: keep it short (bench/faults.py
// measures it; README "The eBPF probe's cost"). Three steps, cheapest first:
// 1. the mm's bucket counts no followed mm: return (no helper call: most faults);
// 2. this CPU's hint says the counter that changed still has the value last recorded
//    for this mm and nobody wrote the bucket since: return (no helper call: the faults
//    of a watched process between two folds of its per-CPU batch, ~31 in 32);
// 3. the mms lookup (a hash: jhash and a bucket walk), the counter, the tree's sum.
SEC("tp_btf/rss_stat")
int BPF_PROG(on_rss_stat, struct mm_struct *mm, int member)
{
	u64 key = mm_key(mm);
	struct bucket *b = &buckets[bucket_of(key)];
	if (!b->users)
		return 0;
	s64 c;
	switch (member) {
	case MM_FILEPAGES: c = mm->rss_stat[MM_FILEPAGES].count; break;
	case MM_ANONPAGES: c = mm->rss_stat[MM_ANONPAGES].count; break;
	case MM_SHMEMPAGES: c = mm->rss_stat[MM_SHMEMPAGES].count; break;
	default: return 0;  // swap entries are not resident
	}
	c = clamp0(c);
	u32 cpu = bpf_get_smp_processor_id();  // inlined by the verifier (x86-64, arm64)
	struct hint *hn = cpu < MAX_CPUS ? &hints[cpu & (MAX_CPUS - 1)] : 0;
	if (hn && hn->mm == key && hn->gen == b->gen && hn->cnt[member & 3] == c)
		return 0;
	struct mm_val *mv = bpf_map_lookup_elem(&mms, &key);
#ifdef FORCE_VERIFIER_FAIL
	mv->pages = 0;  // no NULL check: the verifier must refuse this (tests/ebpf)
#endif
	if (!mv)
		return 0;
	if (c == mv->cnt[member & 3])
		return 0;  // the per-CPU batch did not fold (or another CPU recorded it)
	// Seqlock-like: the bucket's generation moves before and after the write; a hint
	// is kept only when nobody else wrote between (then it equals mv->cnt exactly).
	u32 g = __sync_fetch_and_add(&b->gen, 1) + 1;
	// Exchanged, so two CPUs folding at once each account their own delta.
	s64 old = __sync_lock_test_and_set(&mv->cnt[member & 3], c);
	account(mv, c - old);
	if (hn) {
		hn->mm = key;
		hn->cnt[0] = mv->cnt[0]; hn->cnt[1] = mv->cnt[1];
		hn->cnt[2] = mv->cnt[2]; hn->cnt[3] = mv->cnt[3];
	}
	u32 g2 = __sync_fetch_and_add(&b->gen, 1) + 1;
	if (hn)
		hn->gen = g2 == g + 1 ? g2 : g2 - 1;  // g2 - 1: already stale, never matches
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = parent->tgid;
	u32 ctgid = child->tgid;
	if (ptgid == ctgid)  // a new thread: same process, same mm
		return 0;
	struct proc_val *pp = bpf_map_lookup_elem(&watched, &ptgid);
	if (!pp)
		return 0;
	u32 tree = pp->tree;
	u32 nst = ns_tgid_of(child, pidns_ino());
	// copy_page_range() charged the child's new mm before this tracepoint: read it now.
	s64 now = adopt(child->mm, tree, ctgid, nst);
	emit(EV_FORK, tree, ctgid, nst, ptgid, tree_pages(tree), now);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 tgid = p->tgid;
	struct proc_val *pv = bpf_map_lookup_elem(&watched, &tgid);
	if (!pv)
		return 0;
	u64 old = pv->mm;
	u32 tree = pv->tree, nst = pv->ns_tgid;
	if (old == mm_key(p->mm))
		return 0;
	struct mm_val *mv = bpf_map_lookup_elem(&mms, &old);
	if (mv && mv->tgid == tgid) {  // execve() replaced the mm: the old one leaves
		account(mv, -__sync_lock_test_and_set(&mv->pages, 0));
		if (!bpf_map_delete_elem(&mms, &old))
			forgot(old);
	}
	adopt(p->mm, tree, tgid, nst);
	return 0;
}

// The last thread of a process: its signal_struct's live count reached 0 before this
// tracepoint (kernel/exit.c do_exit), whichever the kernel's version (the tracepoint's
// group_dead argument exists only since Linux 6.16).
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	u32 tgid = task->tgid;
	struct proc_val *pv = bpf_map_lookup_elem(&watched, &tgid);
	if (!pv)
		return 0;
	u32 tree = pv->tree, nst = pv->ns_tgid;
	u64 key = pv->mm;
	struct mm_val *mv = bpf_map_lookup_elem(&mms, &key);
	if (mv && mv->tgid == tgid) {  // whatever is left goes with the mm
		account(mv, -__sync_lock_test_and_set(&mv->pages, 0));
		if (!bpf_map_delete_elem(&mms, &key))
			forgot(key);
	}
	bpf_map_delete_elem(&watched, &tgid);
	emit(EV_EXIT, tree, tgid, nst, 0, tree_pages(tree), 0);
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task, uid_t uid)
{
	u32 tgid = task->tgid;
	struct proc_val *pv = bpf_map_lookup_elem(&watched, &tgid);
	u32 nst = pv ? pv->ns_tgid : ns_tgid_of(task, pidns_ino());
	struct mm_struct *mm = task->mm;
	struct mm_val tmp = {};
	s64 pages = mm ? mm_rss_fill(mm, &tmp) : 0;
	// Reported even when not watched (tree NO_TREE): Sentinel tells its own apart.
	emit(EV_VICTIM, pv ? pv->tree : NO_TREE, tgid, nst, uid, 0, pages);
	return 0;
}

// Run by Sentinel (a read of the iterator) after it filled `seed`: every process of
// the node whose tgid in Sentinel's namespace is seeded starts being followed now,
// idle or not. Only group leaders: a thread shares its leader's mm.
SEC("iter/task")
int seed_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task || task->pid != task->tgid || (task->flags & PF_EXITING))
		return 0;  // a thread, or a process on its way out (a zombie): never adopted
	u32 nst = ns_tgid_of(task, pidns_ino());
	if (!nst)
		return 0;
	u32 *tree = bpf_map_lookup_elem(&seed, &nst);
	if (!tree)
		return 0;
	u32 t = *tree, tgid = task->tgid;
	bpf_map_delete_elem(&seed, &nst);
	if (bpf_map_lookup_elem(&watched, &tgid))
		return 0;  // already followed (a fork record was first)
	s64 now = adopt(task->mm, t, tgid, nst);
	emit(EV_SEEDED, t, tgid, nst, 0, tree_pages(t), now);
	return 0;
}
