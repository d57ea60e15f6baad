/*
 * shmswap._prim: atomics and the lock over 64-bit words in shared memory
 * (DESIGN §3).
 *
 * The Python model keeps all of its shared state (swap_map, cluster info,
 * swap tables, per-CPU caches, lockstat) in multiprocessing.shared_memory
 * segments that several worker processes map at once.  Python itself has no
 * atomic operation on such memory, and a multiprocessing.Lock cannot live
 * inside a segment, so this module supplies the two primitives the kernel
 * code being modelled relies on:
 *
 *   - atomic_long_t style operations on an aligned int64 word
 *     (load/store/xchg/cmpxchg/fetch_add), with the memory orders the kernel
 *     implies for them;
 *   - a spinlock_t stand-in: an 8-byte lock word (uint32 futex state +
 *     int32 owner) implementing Drepper's "Futexes Are Tricky" mutex, with
 *     lockstat-style counters, self-deadlock detection, an abort word so a
 *     supervisor can break waits on a lock held by a dead process, and a
 *     preemption-point hook used by the deterministic scheduler/tests.
 *
 * Everything is process-global (C statics): one worker per process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Preemption-point kinds passed to the hook. */
#define SP_LOCK 1
#define SP_UNLOCK 2
#define SP_TRYLOCK 3
#define SP_LOCK_WAITED 4 /* after a contended acquire: (cls, wait_ns) */

/* Lock tuning.  The target machine has 2 cores and more worker processes
 * than cores, so a lock holder may well be preempted: spin only briefly
 * (GIL held, it is cheaper than a GIL round trip for the common case of a
 * critical section of a few hundred ns), then yield the CPU a few times,
 * then sleep in the kernel. */
#define SPIN_ITERS 100
#define YIELD_ROUNDS 4
#define FUTEX_TIMEOUT_NS 20000000L /* 20 ms: bounds the abort-word latency */

/* lockstat layout: int64 counters [nclasses][STAT_N] */
enum { ST_ACQ = 0, ST_CONT = 1, ST_TRYFAIL = 2, ST_WAIT_TOTAL = 3, ST_WAIT_MAX = 4, STAT_N = 5 };

/* ------------------------------------------------------------------------ */
/* Region                                                                    */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *base;          /* NULL once released */
    Py_ssize_t nbytes;
    Py_ssize_t blocked;  /* lock() calls waiting with the GIL released */
} RegionObject;

static PyTypeObject RegionType;

/* ------------------------------------------------------------------------ */
/* Process-global state                                                      */

static long worker_id = 0;          /* owner field stores worker_id + 1 */
static PyObject *hook = NULL;       /* preemption-point hook or NULL */
/* Which points reach the hook (set_hook_points): the lock's own points (SP_LOCK, SP_TRYLOCK,
 * SP_UNLOCK) and the model's sched_point calls.  SP_LOCK_WAITED always does.  An observer of lock
 * waits alone then costs nothing on an uncontended lock. */
static int hook_lock_points = 1;
static int hook_model_points = 1;

static RegionObject *stats_region = NULL;
static Py_ssize_t stats_off = 0;
static long stats_nclasses = 0;

static RegionObject *abort_region = NULL;
static Py_ssize_t abort_off = 0;

static PyObject *AbortedError = NULL;

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

static inline int64_t *
word64(RegionObject *r, Py_ssize_t off)
{
    return (int64_t *)(r->base + off);
}

static inline uint32_t *
lock_state(RegionObject *r, Py_ssize_t off)
{
    return (uint32_t *)(r->base + off);
}

static inline int32_t *
lock_owner(RegionObject *r, Py_ssize_t off)
{
    return (int32_t *)(r->base + off + 4);
}

static int
released_error(void)
{
    PyErr_SetString(PyExc_ValueError, "operation on a released Region");
    return -1;
}

/* Convert and validate a 64-bit word offset.  One conversion plus a single
 * combined compare on the fast path. */
static inline int
get_off(RegionObject *r, PyObject *o, Py_ssize_t *out)
{
    Py_ssize_t off;
    if (UNLIKELY(r->base == NULL))
        return released_error();
    off = PyLong_AsSsize_t(o);
    if (UNLIKELY(off == -1 && PyErr_Occurred())) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "offset out of range");
        }
        return -1;
    }
    /* (size_t) cast folds off < 0 into the upper-bound test */
    if (UNLIKELY((off & 7) != 0 || r->nbytes < 8 || (size_t)off > (size_t)(r->nbytes - 8))) {
        PyErr_Format(PyExc_ValueError,
                     "bad 64-bit word offset %zd (must be 8-aligned and within 0..%zd)",
                     off, r->nbytes - 8);
        return -1;
    }
    *out = off;
    return 0;
}

static inline int
get_i64(PyObject *o, int64_t *out)
{
    long long v = PyLong_AsLongLong(o);
    if (UNLIKELY(v == -1 && PyErr_Occurred()))
        return -1;
    *out = (int64_t)v;
    return 0;
}

static inline int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (UNLIKELY(nargs != want)) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, want,
                     nargs);
        return -1;
    }
    return 0;
}

/* The stats row of lock class cls, or NULL when counting is disabled.  The
 * checks are repeated at each use (not cached across the hook call or a GIL
 * release): set_stats() may have run meanwhile, or the stats region been
 * released, in which case counting stops rather than writing to unmapped
 * memory. */
static inline int64_t *
stats_row(long cls)
{
    if (stats_region == NULL || stats_region->base == NULL || cls < 0 || cls >= stats_nclasses)
        return NULL;
    return (int64_t *)(stats_region->base + stats_off) + (Py_ssize_t)cls * STAT_N;
}

/* Counters have exactly one writer (this worker), readers are other
 * processes taking snapshots: relaxed atomic load/store is enough, no RMW. */
static inline void
stat_add(int64_t *row, int idx, int64_t v)
{
    __atomic_store_n(row + idx, __atomic_load_n(row + idx, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline void
stat_max(int64_t *row, int idx, int64_t v)
{
    if (v > __atomic_load_n(row + idx, __ATOMIC_RELAXED))
        __atomic_store_n(row + idx, v, __ATOMIC_RELAXED);
}

/* Parse (off, cls) for lock/trylock/unlock.  cls is range-checked only when
 * stats are enabled (it indexes the stats block; otherwise it is just a
 * label for the hook and error messages). */
static inline int
get_off_cls(RegionObject *r, const char *name, PyObject *const *args, Py_ssize_t nargs,
            Py_ssize_t *off, long *cls)
{
    long c;
    if (check_nargs(name, nargs, 2) < 0 || get_off(r, args[0], off) < 0)
        return -1;
    c = PyLong_AsLong(args[1]);
    if (UNLIKELY(c == -1 && PyErr_Occurred()))
        return -1;
    if (stats_region != NULL && UNLIKELY(c < 0 || c >= stats_nclasses)) {
        PyErr_Format(PyExc_ValueError, "lock class %ld out of range 0..%ld", c,
                     stats_nclasses - 1);
        return -1;
    }
    *cls = c;
    return 0;
}

static int
call_hook3(long kind, PyObject *a, PyObject *b)
{
    PyObject *h = hook, *k, *res;
    PyObject *argv[3];
    if (a == NULL || b == NULL)
        return -1;
    k = PyLong_FromLong(kind);
    if (k == NULL)
        return -1;
    argv[0] = k;
    argv[1] = a;
    argv[2] = b;
    /* the hook may uninstall itself: keep it alive for the call */
    Py_INCREF(h);
    res = PyObject_Vectorcall(h, argv, 3, NULL);
    Py_DECREF(h);
    Py_DECREF(k);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Only called when hook != NULL. */
static int
lock_hook(long kind, long cls, Py_ssize_t off)
{
    PyObject *a = PyLong_FromLong(cls);
    PyObject *b = PyLong_FromSsize_t(off);
    int rc = call_hook3(kind, a, b);
    Py_XDECREF(a);
    Py_XDECREF(b);
    return rc;
}

static inline int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Called with the GIL after every yield round / futex wait: raise Aborted if
 * the supervisor set the abort word, or propagate a pending signal (so ^C
 * interrupts a worker stuck on a lock). */
static int
check_abort(RegionObject *r, Py_ssize_t off, long cls)
{
    if (abort_region != NULL && abort_region->base != NULL &&
        __atomic_load_n(word64(abort_region, abort_off), __ATOMIC_ACQUIRE) != 0) {
        int32_t o = __atomic_load_n(lock_owner(r, off), __ATOMIC_RELAXED);
        PyErr_Format(AbortedError,
                     "lock wait aborted: worker %ld waiting for class %ld off %zd held by worker %ld",
                     worker_id, cls, off, (long)o - 1);
        return -1;
    }
    if (PyErr_CheckSignals() < 0)
        return -1;
    return 0;
}

/* Contended path of lock().  Returns 0 with the lock's state word acquired,
 * -1 with an exception set (nothing acquired). */
static int
lock_slow(RegionObject *r, Py_ssize_t off, long cls)
{
    uint32_t *st = lock_state(r, off);
    uint32_t expected, c;
    int i;

    /* 1. brief spin, GIL held: test (plain load) before test-and-set so the
     * cache line is not bounced while the holder works. */
    for (i = 0; i < SPIN_ITERS; i++) {
        cpu_relax();
        if (__atomic_load_n(st, __ATOMIC_RELAXED) == 0) {
            expected = 0;
            if (__atomic_compare_exchange_n(st, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return 0;
        }
    }

    /* 2. give the CPU away: with more workers than cores the holder is
     * probably preempted, and it needs our core to finish. */
    for (i = 0; i < YIELD_ROUNDS; i++) {
        r->blocked++;
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
        r->blocked--;
        if (check_abort(r, off, cls) < 0)
            return -1;
        expected = 0;
        if (__atomic_compare_exchange_n(st, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    }

    /* 3. sleep in the kernel (Drepper mutex #3).  State 2 = "there may be
     * waiters": whoever acquires via this path leaves it at 2 so its unlock
     * wakes the next sleeper.  Shared (non-PRIVATE) futex: the word lives in
     * memory mapped by several processes. */
    c = __atomic_exchange_n(st, 2, __ATOMIC_ACQUIRE);
    while (c != 0) {
        struct timespec ts = {0, FUTEX_TIMEOUT_NS};
        r->blocked++;
        Py_BEGIN_ALLOW_THREADS
        syscall(SYS_futex, st, FUTEX_WAIT, 2, &ts, NULL, 0);
        Py_END_ALLOW_THREADS
        r->blocked--;
        if (check_abort(r, off, cls) < 0)
            return -1; /* state may be left at 2: only costs a spurious wake */
        c = __atomic_exchange_n(st, 2, __ATOMIC_ACQUIRE);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Region methods                                                            */

static PyObject *
Region_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", NULL};
    PyObject *obj;
    RegionObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Region", kwlist, &obj))
        return NULL;
    self = (RegionObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        Py_DECREF(self);
        return NULL;
    }
    /* misaligned atomics are slow (split locks) on x86 and fault on arm64 */
    if (((uintptr_t)self->view.buf & 7) != 0) {
        PyBuffer_Release(&self->view);
        self->view.obj = NULL;
        Py_DECREF(self);
        PyErr_SetString(PyExc_ValueError, "Region buffer must be 8-byte aligned");
        return NULL;
    }
    self->base = (char *)self->view.buf;
    self->nbytes = self->view.len;
    self->blocked = 0;
    return (PyObject *)self;
}

static void
Region_dealloc(RegionObject *self)
{
    if (self->base != NULL || self->view.obj != NULL) {
        self->base = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Region_release(RegionObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base == NULL)
        Py_RETURN_NONE;
    if (self->blocked > 0) {
        /* another thread of this process sleeps in lock() on this memory
         * with the GIL released: releasing now could unmap it under it */
        PyErr_SetString(PyExc_BufferError, "Region is in use by a blocked lock() call");
        return NULL;
    }
    self->base = NULL;
    PyBuffer_Release(&self->view);
    Py_RETURN_NONE;
}

static PyObject *
Region_load(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    if (check_nargs("load", nargs, 1) < 0 || get_off(self, args[0], &off) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_load_n(word64(self, off), __ATOMIC_ACQUIRE));
}

static PyObject *
Region_store(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t v;
    if (check_nargs("store", nargs, 2) < 0 || get_off(self, args[0], &off) < 0 ||
        get_i64(args[1], &v) < 0)
        return NULL;
    __atomic_store_n(word64(self, off), v, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *
Region_xchg(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t v;
    if (check_nargs("xchg", nargs, 2) < 0 || get_off(self, args[0], &off) < 0 ||
        get_i64(args[1], &v) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_exchange_n(word64(self, off), v, __ATOMIC_ACQ_REL));
}

static PyObject *
Region_cmpxchg(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t expected, newv;
    if (check_nargs("cmpxchg", nargs, 3) < 0 || get_off(self, args[0], &off) < 0 ||
        get_i64(args[1], &expected) < 0 || get_i64(args[2], &newv) < 0)
        return NULL;
    /* like the kernel's cmpxchg(): returns the old value; on failure
     * `expected` is overwritten with the current value, which is the old one */
    __atomic_compare_exchange_n(word64(self, off), &expected, newv, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return PyLong_FromLongLong(expected);
}

static PyObject *
Region_fetch_add(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    int64_t v;
    if (check_nargs("fetch_add", nargs, 2) < 0 || get_off(self, args[0], &off) < 0 ||
        get_i64(args[1], &v) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_fetch_add(word64(self, off), v, __ATOMIC_ACQ_REL));
}

static PyObject *
Region_lock(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    long cls;
    uint32_t expected = 0;
    int32_t me;
    int64_t *row;

    if (get_off_cls(self, "lock", args, nargs, &off, &cls) < 0)
        return NULL;
    if (hook != NULL && hook_lock_points) {
        if (lock_hook(SP_LOCK, cls, off) < 0)
            return NULL;
        if (self->base == NULL) /* the hook released the region */
            return released_error(), NULL;
    }
    me = (int32_t)(worker_id + 1);

    if (LIKELY(__atomic_compare_exchange_n(lock_state(self, off), &expected, 1, 0,
                                           __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))) {
        /* uncontended: no clock reads */
        __atomic_store_n(lock_owner(self, off), me, __ATOMIC_RELAXED);
        if ((row = stats_row(cls)) != NULL)
            stat_add(row, ST_ACQ, 1);
        Py_RETURN_NONE;
    }

    /* The first try failed.  If we hold it ourselves, waiting would hang
     * forever: report the self-deadlock instead (not a contention). */
    if (__atomic_load_n(lock_owner(self, off), __ATOMIC_RELAXED) == me) {
        PyErr_Format(PyExc_RuntimeError,
                     "self-deadlock: worker %ld already holds the lock (class %ld, off %zd)",
                     worker_id, cls, off);
        return NULL;
    }

    row = stats_row(cls);
    if (row != NULL || hook != NULL) {
        int64_t t0 = mono_ns(), dt;
        if (row != NULL)
            stat_add(row, ST_CONT, 1);
        if (lock_slow(self, off, cls) < 0)
            return NULL;
        dt = mono_ns() - t0;
        __atomic_store_n(lock_owner(self, off), me, __ATOMIC_RELAXED);
        /* stats may have been changed/disabled while the GIL was released */
        if ((row = stats_row(cls)) != NULL) {
            stat_add(row, ST_ACQ, 1);
            stat_add(row, ST_WAIT_TOTAL, dt);
            stat_max(row, ST_WAIT_MAX, dt);
        }
        /* the lock is held: an observer may look, but must not take it again */
        if (hook != NULL && lock_hook(SP_LOCK_WAITED, cls, (Py_ssize_t)dt) < 0)
            return NULL;
    }
    else {
        if (lock_slow(self, off, cls) < 0)
            return NULL;
        __atomic_store_n(lock_owner(self, off), me, __ATOMIC_RELAXED);
    }
    Py_RETURN_NONE;
}

static PyObject *
Region_trylock(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    long cls;
    uint32_t expected = 0;
    int64_t *row;

    if (get_off_cls(self, "trylock", args, nargs, &off, &cls) < 0)
        return NULL;
    if (hook != NULL && hook_lock_points) {
        if (lock_hook(SP_TRYLOCK, cls, off) < 0)
            return NULL;
        if (self->base == NULL)
            return released_error(), NULL;
    }
    row = stats_row(cls);
    if (__atomic_compare_exchange_n(lock_state(self, off), &expected, 1, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        __atomic_store_n(lock_owner(self, off), (int32_t)(worker_id + 1), __ATOMIC_RELAXED);
        if (row != NULL)
            stat_add(row, ST_ACQ, 1);
        Py_RETURN_TRUE;
    }
    if (row != NULL)
        stat_add(row, ST_TRYFAIL, 1);
    Py_RETURN_FALSE;
}

static PyObject *
Region_unlock(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    long cls;
    int32_t me, o;
    uint32_t old;

    if (get_off_cls(self, "unlock", args, nargs, &off, &cls) < 0)
        return NULL;
    me = (int32_t)(worker_id + 1);
    o = __atomic_load_n(lock_owner(self, off), __ATOMIC_RELAXED);
    if (UNLIKELY(o != me)) {
        PyErr_Format(PyExc_RuntimeError,
                     "unlock of a lock not held by worker %ld (owner %ld, class %ld, off %zd)",
                     worker_id, (long)o - 1, cls, off);
        return NULL;
    }
    /* clear the owner first: it is ordered before the releasing xchg, so the
     * next acquirer never sees a stale owner overwrite its own */
    __atomic_store_n(lock_owner(self, off), 0, __ATOMIC_RELAXED);
    old = __atomic_exchange_n(lock_state(self, off), 0, __ATOMIC_RELEASE);
    if (old == 2)
        syscall(SYS_futex, lock_state(self, off), FUTEX_WAKE, 1, NULL, NULL, 0);
    if (hook != NULL && hook_lock_points && lock_hook(SP_UNLOCK, cls, off) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Region_owner(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    if (check_nargs("owner", nargs, 1) < 0 || get_off(self, args[0], &off) < 0)
        return NULL;
    return PyLong_FromLong((long)__atomic_load_n(lock_owner(self, off), __ATOMIC_RELAXED) - 1);
}

static PyObject *
Region_held_by_me(RegionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    if (check_nargs("held_by_me", nargs, 1) < 0 || get_off(self, args[0], &off) < 0)
        return NULL;
    return PyBool_FromLong(__atomic_load_n(lock_owner(self, off), __ATOMIC_RELAXED) ==
                           (int32_t)(worker_id + 1));
}

static PyObject *
Region_get_nbytes(RegionObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->nbytes);
}

static PyObject *
Region_get_released(RegionObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->base == NULL);
}

static PyMethodDef Region_methods[] = {
    {"release", (PyCFunction)Region_release, METH_NOARGS,
     "release()\n--\n\nRelease the buffer (idempotent); every later method raises ValueError."},
    {"load", (PyCFunction)(void (*)(void))Region_load, METH_FASTCALL,
     "load(off)\n--\n\nAtomic int64 load (acquire)."},
    {"store", (PyCFunction)(void (*)(void))Region_store, METH_FASTCALL,
     "store(off, v)\n--\n\nAtomic int64 store (release)."},
    {"xchg", (PyCFunction)(void (*)(void))Region_xchg, METH_FASTCALL,
     "xchg(off, v)\n--\n\nAtomic exchange (acq_rel); returns the old value."},
    {"cmpxchg", (PyCFunction)(void (*)(void))Region_cmpxchg, METH_FASTCALL,
     "cmpxchg(off, expected, new)\n--\n\n"
     "Atomic compare-and-exchange (seq_cst); returns the old value (== expected on success)."},
    {"fetch_add", (PyCFunction)(void (*)(void))Region_fetch_add, METH_FASTCALL,
     "fetch_add(off, v)\n--\n\nAtomic add (acq_rel); returns the old value."},
    {"lock", (PyCFunction)(void (*)(void))Region_lock, METH_FASTCALL,
     "lock(off, cls)\n--\n\nAcquire the lock word at off (lock class cls). Raises RuntimeError\n"
     "if this worker already holds it, Aborted if the abort word is set while waiting."},
    {"trylock", (PyCFunction)(void (*)(void))Region_trylock, METH_FASTCALL,
     "trylock(off, cls)\n--\n\nOne acquisition attempt; returns True if acquired."},
    {"unlock", (PyCFunction)(void (*)(void))Region_unlock, METH_FASTCALL,
     "unlock(off, cls)\n--\n\nRelease the lock word at off; RuntimeError (and no change)\n"
     "if the current worker does not hold it."},
    {"owner", (PyCFunction)(void (*)(void))Region_owner, METH_FASTCALL,
     "owner(off)\n--\n\nWorker id holding the lock word at off, or -1 if none."},
    {"held_by_me", (PyCFunction)(void (*)(void))Region_held_by_me, METH_FASTCALL,
     "held_by_me(off)\n--\n\nTrue if the current worker owns the lock word at off."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Region_getset[] = {
    {"nbytes", (getter)Region_get_nbytes, NULL, "length of the buffer in bytes", NULL},
    {"released", (getter)Region_get_released, NULL, "True once release() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RegionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmswap.substrate._prim.Region",
    .tp_basicsize = sizeof(RegionObject),
    .tp_dealloc = (destructor)Region_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Region(buffer)\n--\n\n"
              "Atomic int64 operations and lock words over a writable, C-contiguous,\n"
              "8-byte aligned buffer (typically SharedMemory(...).buf).",
    .tp_methods = Region_methods,
    .tp_getset = Region_getset,
    .tp_new = Region_new,
};

/* ------------------------------------------------------------------------ */
/* module functions                                                          */

static PyObject *
mod_set_worker(PyObject *Py_UNUSED(m), PyObject *arg)
{
    long w = PyLong_AsLong(arg);
    if (w == -1 && PyErr_Occurred())
        return NULL;
    if (w < 0 || w >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "worker id %ld out of range 0..%ld", w,
                     (long)INT32_MAX - 1);
        return NULL;
    }
    worker_id = w;
    Py_RETURN_NONE;
}

static PyObject *
mod_get_worker(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(worker_id);
}

static int
check_region(PyObject *o, const char *fn)
{
    if (!PyObject_TypeCheck(o, &RegionType)) {
        PyErr_Format(PyExc_TypeError, "%s() argument 1 must be Region or None, not %.100s", fn,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (((RegionObject *)o)->base == NULL)
        return released_error();
    return 0;
}

static PyObject *
mod_set_stats(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    RegionObject *r;
    Py_ssize_t off;
    long n;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "set_stats(region_or_None, base_off, nclasses)");
        return NULL;
    }
    if (args[0] == Py_None) {
        Py_CLEAR(stats_region);
        stats_off = 0;
        stats_nclasses = 0;
        Py_RETURN_NONE;
    }
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set_stats(region, base_off, nclasses) takes 3 arguments");
        return NULL;
    }
    if (check_region(args[0], "set_stats") < 0)
        return NULL;
    r = (RegionObject *)args[0];
    off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    n = PyLong_AsLong(args[2]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n <= 0 || n > (PY_SSIZE_T_MAX / (STAT_N * 8)) || off < 0 || (off & 7) != 0 ||
        off > r->nbytes || (Py_ssize_t)n * STAT_N * 8 > r->nbytes - off) {
        PyErr_Format(PyExc_ValueError,
                     "bad stats block: base_off %zd (8-aligned) + %ld classes * %d * 8 bytes "
                     "must fit in %zd bytes",
                     off, n, STAT_N, r->nbytes);
        return NULL;
    }
    Py_INCREF(r);
    Py_XSETREF(stats_region, r);
    stats_off = off;
    stats_nclasses = n;
    Py_RETURN_NONE;
}

static PyObject *
mod_set_abort(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "set_abort(region_or_None, off)");
        return NULL;
    }
    if (args[0] == Py_None) {
        Py_CLEAR(abort_region);
        abort_off = 0;
        Py_RETURN_NONE;
    }
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_abort(region, off) takes 2 arguments");
        return NULL;
    }
    if (check_region(args[0], "set_abort") < 0 ||
        get_off((RegionObject *)args[0], args[1], &off) < 0)
        return NULL;
    Py_INCREF(args[0]);
    Py_XSETREF(abort_region, (RegionObject *)args[0]);
    abort_off = off;
    Py_RETURN_NONE;
}

static PyObject *
mod_set_hook(PyObject *Py_UNUSED(m), PyObject *arg)
{
    if (arg == Py_None) {
        Py_CLEAR(hook);
        Py_RETURN_NONE;
    }
    if (!PyCallable_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "hook must be callable or None");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(hook, arg);
    Py_RETURN_NONE;
}

static PyObject *
mod_set_hook_points(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    int locks, model;
    if (check_nargs("set_hook_points", nargs, 2) < 0)
        return NULL;
    if ((locks = PyObject_IsTrue(args[0])) < 0 || (model = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    hook_lock_points = locks;
    hook_model_points = model;
    Py_RETURN_NONE;
}

static PyObject *
mod_get_hook(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    if (hook == NULL)
        Py_RETURN_NONE;
    Py_INCREF(hook);
    return hook;
}

static PyObject *
mod_sched_point(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    static PyObject *zero = NULL;
    /* the common case: no hook, one pointer test and out */
    if (LIKELY((hook == NULL || !hook_model_points) && nargs >= 1 && nargs <= 3))
        Py_RETURN_NONE;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "sched_point() takes 1 to 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    {
        PyObject *h = hook, *res;
        PyObject *argv[3] = {args[0], nargs > 1 ? args[1] : zero, nargs > 2 ? args[2] : zero};
        Py_INCREF(h);
        res = PyObject_Vectorcall(h, argv, 3, NULL);
        Py_DECREF(h);
        if (res == NULL)
            return NULL;
        Py_DECREF(res);
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_now_ns(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(mono_ns());
}

static PyMethodDef module_methods[] = {
    {"set_worker", (PyCFunction)mod_set_worker, METH_O,
     "set_worker(wid)\n--\n\nSet this process's worker id (>= 0); lock owners are recorded as it."},
    {"get_worker", (PyCFunction)mod_get_worker, METH_NOARGS,
     "get_worker()\n--\n\nThis process's worker id (default 0)."},
    {"set_stats", (PyCFunction)(void (*)(void))mod_set_stats, METH_FASTCALL,
     "set_stats(region, base_off, nclasses)\n--\n\n"
     "Set this worker's lockstat block: int64 [nclasses][5] at base_off (acquisitions,\n"
     "contentions, trylock_failures, wait_ns_total, wait_ns_max). set_stats(None) disables."},
    {"set_abort", (PyCFunction)(void (*)(void))mod_set_abort, METH_FASTCALL,
     "set_abort(region, off)\n--\n\n"
     "Register the abort word: lock() waiters raise Aborted once it is non-zero.\n"
     "set_abort(None) unregisters."},
    {"set_hook", (PyCFunction)mod_set_hook, METH_O,
     "set_hook(hook)\n--\n\nInstall hook(kind, a, b) called at preemption points, or None."},
    {"set_hook_points", (PyCFunction)(void (*)(void))mod_set_hook_points, METH_FASTCALL,
     "set_hook_points(locks, model)\n--\n\nWhich points reach the hook: the lock's SP_LOCK/SP_TRYLOCK/SP_UNLOCK, "
     "the model's sched_point calls (SP_LOCK_WAITED always does)."},
    {"get_hook", (PyCFunction)mod_get_hook, METH_NOARGS,
     "get_hook()\n--\n\nThe installed hook or None."},
    {"sched_point", (PyCFunction)(void (*)(void))mod_sched_point, METH_FASTCALL,
     "sched_point(kind, a=0, b=0)\n--\n\nCall hook(kind, a, b) if a hook is installed."},
    {"now_ns", (PyCFunction)mod_now_ns, METH_NOARGS,
     "now_ns()\n--\n\nCLOCK_MONOTONIC in nanoseconds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef prim_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmswap.substrate._prim",
    .m_doc = "Atomics and the lock over 64-bit words in shared memory (DESIGN §3): models the "
             "kernel's atomic_long_t ops and spinlock_t with lockstat",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__prim(void)
{
    PyObject *m;

    if (PyType_Ready(&RegionType) < 0)
        return NULL;
    m = PyModule_Create(&prim_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RegionType);
    if (PyModule_AddObject(m, "Region", (PyObject *)&RegionType) < 0) {
        Py_DECREF(&RegionType);
        goto fail;
    }
    if (AbortedError == NULL) {
        AbortedError = PyErr_NewExceptionWithDoc(
            "shmswap.substrate._prim.Aborted",
            "A lock() wait was aborted because the abort word (set_abort) became non-zero.",
            PyExc_RuntimeError, NULL);
        if (AbortedError == NULL)
            goto fail;
    }
    Py_INCREF(AbortedError);
    if (PyModule_AddObject(m, "Aborted", AbortedError) < 0) {
        Py_DECREF(AbortedError);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "SP_LOCK", SP_LOCK) < 0 ||
        PyModule_AddIntConstant(m, "SP_UNLOCK", SP_UNLOCK) < 0 ||
        PyModule_AddIntConstant(m, "SP_TRYLOCK", SP_TRYLOCK) < 0 ||
        PyModule_AddIntConstant(m, "SP_LOCK_WAITED", SP_LOCK_WAITED) < 0 ||
        PyModule_AddIntConstant(m, "LOCKSTAT_FIELDS", STAT_N) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
