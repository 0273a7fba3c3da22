/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types sentinel.bpf.c reads, instead of a 2.8 MB vmlinux.h dumped from
 * one machine's BTF: with preserve_access_index every field access below is a CO-RE
 * relocation that libbpf resolves against the running kernel's BTF at load time, so
 * only the field *names* (and the element size of arrays indexed here) must match the
 * kernel; the offsets written here are never used. The build needs no bpftool and no
 * kernel headers, and gives the same object on every build machine.
 */
#ifndef SENTINEL_KERNEL_TYPES_H
#define SENTINEL_KERNEL_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef int pid_t;
typedef unsigned int uid_t;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };

/* include/linux/mm_types_task.h: the rss_stat members; statm's resident is
 * FILEPAGES + ANONPAGES + SHMEMPAGES. */
enum { MM_FILEPAGES = 0, MM_ANONPAGES = 1, MM_SWAPENTS = 2, MM_SHMEMPAGES = 3 };

/* include/linux/percpu_counter.h (SMP): count is the folded, batched value. The
 * real struct's size matters here (rss_stat[] is indexed): lock 4 (+4), count 8,
 * list 16, counters 8 = 40 bytes on x86-64; CO-RE re-derives the offsets anyway. */
struct list_head { struct list_head *next, *prev; };
struct percpu_counter {
	unsigned int lock;
	s64 count;
	struct list_head list;
	s32 *counters;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct pid_namespace { struct ns_common ns; } __attribute__((preserve_access_index));
struct upid { int nr; struct pid_namespace *ns; } __attribute__((preserve_access_index));
struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

typedef struct { int counter; } atomic_t;
struct signal_struct { atomic_t live; } __attribute__((preserve_access_index));

struct task_struct {
	pid_t pid;
	pid_t tgid;
	struct mm_struct *mm;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct signal_struct *signal;
	unsigned int flags;
} __attribute__((preserve_access_index));

#define PF_EXITING 0x00000004  /* include/linux/sched.h: getting shut down */

enum { BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 };

struct linux_binprm;

struct bpf_iter_meta { void *seq; u64 session_id; u64 seq_num; }
	__attribute__((preserve_access_index));
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

#endif
