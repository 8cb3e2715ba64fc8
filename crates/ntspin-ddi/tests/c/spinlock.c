/* C tests of the spin-lock slice of the C ABI, called from tests/c_abi.rs. Compiled as
 * C11 with -Wall -Wextra -Werror -fexceptions against the installed headers. */
#include <ntspin/host.h>
#include <ntspin/wdm.h>

_Static_assert(sizeof(KLOCK_QUEUE_HANDLE) == 24, "KLOCK_QUEUE_HANDLE is 24 bytes");
_Static_assert(offsetof(KLOCK_QUEUE_HANDLE, OldIrql) == 16, "OldIrql at 16");
_Static_assert(sizeof(KSPIN_LOCK) == sizeof(void *), "KSPIN_LOCK is pointer-sized");

/* ---- mutual exclusion across processors ---- */

typedef struct {
    KSPIN_LOCK Executive;
    KSPIN_LOCK Queued;
    volatile uint64_t ExecutiveCount; /* plain read-modify-writes under the locks */
    volatile uint64_t QueuedCount;
    ULONG Iterations;
    volatile ULONG BadIrql;
} EXCLUSION;

static void bump(volatile uint64_t *c) {
    uint64_t v = *c;
    for (int i = 0; i < 16; i++) {
        __asm__ volatile("" ::: "memory");
    }
    *c = v + 1;
}

static VOID exclusion_routine(ULONG Processor, PVOID Context) {
    EXCLUSION *x = (EXCLUSION *)Context;
    (void)Processor;
    for (ULONG i = 0; i < x->Iterations; i++) {
        KIRQL old;
        KeAcquireSpinLock(&x->Executive, &old);
        if (KeGetCurrentIrql() != DISPATCH_LEVEL) {
            x->BadIrql++;
        }
        bump(&x->ExecutiveCount);
        KeReleaseSpinLock(&x->Executive, old);

        KLOCK_QUEUE_HANDLE h;
        KeAcquireInStackQueuedSpinLock(&x->Queued, &h);
        bump(&x->QueuedCount);
        KeReleaseInStackQueuedSpinLock(&h);

        /* The AtDpcLevel pair, at DISPATCH. */
        KIRQL raised = KeRaiseIrqlToDpcLevel();
        KeAcquireSpinLockAtDpcLevel(&x->Executive);
        bump(&x->ExecutiveCount);
        KeReleaseSpinLockFromDpcLevel(&x->Executive);
        KeLowerIrql(raised);
    }
}

static VOID init_routine(PVOID Context) {
    EXCLUSION *x = (EXCLUSION *)Context;
    KeInitializeSpinLock(&x->Executive);
    KeInitializeSpinLock(&x->Queued);
}

/* Returns the bug check code (0: none); *ExecutiveTotal and *QueuedTotal get the counts. */
ULONG ctest_exclusion(ULONG Processors, ULONG Iterations, uint64_t *ExecutiveTotal,
                      uint64_t *QueuedTotal, ULONG *BadIrql) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(Processors, NTSPIN_VERIFIER_STANDARD);
    if (m == NULL) {
        return 0xFFFFFFFF;
    }
    EXCLUSION x = {0};
    x.Iterations = Iterations;
    ULONG code = NtspinRunOnProcessor(m, 0, init_routine, &x, NULL);
    if (code == 0) {
        code = NtspinRunOnAllProcessors(m, exclusion_routine, &x, NULL);
    }
    *ExecutiveTotal = x.ExecutiveCount;
    *QueuedTotal = x.QueuedCount;
    *BadIrql = x.BadIrql;
    NtspinMachineDestroy(m);
    return code;
}

/* ---- a bug check ends the C routine ---- */

typedef struct {
    KSPIN_LOCK Lock;
    volatile int After; /* set only if code after the failing call ran */
} RECURSE;

static VOID recurse_routine(PVOID Context) {
    RECURSE *r = (RECURSE *)Context;
    KIRQL a, b;
    KeInitializeSpinLock(&r->Lock);
    KeAcquireSpinLock(&r->Lock, &a);
    KeAcquireSpinLock(&r->Lock, &b); /* SL-RECURSE: 0x0F (lock, 0, 0, 0) */
    r->After = 1;
    KeReleaseSpinLock(&r->Lock, b);
    KeReleaseSpinLock(&r->Lock, a);
}

ULONG ctest_recurse(ULONG_PTR Parameters[4], ULONG_PTR *LockAddress, int *After) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    RECURSE r = {0, 0};
    ULONG code = NtspinRunOnProcessor(m, 0, recurse_routine, &r, Parameters);
    *LockAddress = (ULONG_PTR)&r.Lock;
    *After = r.After;
    NtspinMachineDestroy(m);
    return code;
}

static VOID null_routine(PVOID Context) {
    KIRQL old;
    (void)Context;
    KeAcquireSpinLock((PKSPIN_LOCK)NULL, &old); /* SL-INIT with lock 0, never a segfault */
}

ULONG ctest_null_lock(ULONG_PTR Parameters[4]) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, null_routine, NULL, Parameters);
    NtspinMachineDestroy(m);
    return code;
}

/* ---- IRQL ---- */

static VOID irql_routine(PVOID Context) {
    KIRQL *seen = (KIRQL *)Context;
    KIRQL old;
    seen[0] = KeGetCurrentIrql();
    KeRaiseIrql(CLOCK_LEVEL, &old);
    seen[1] = KeGetCurrentIrql();
    seen[2] = old;
    KeLowerIrql(old);
    seen[3] = KeGetCurrentIrql();
    KeRaiseIrql(PASSIVE_LEVEL - 0, &old); /* raising to the same level is allowed */
    KeLowerIrql(old);
}

ULONG ctest_irql(KIRQL Seen[4]) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, irql_routine, Seen, NULL);
    NtspinMachineDestroy(m);
    return code;
}

static VOID lower_raises_routine(PVOID Context) {
    (void)Context;
    KeLowerIrql(DISPATCH_LEVEL); /* IRQL-LOWER: 0xC4/0x31 (cur 0, new 2, 0) */
}

ULONG ctest_lower_raises(ULONG_PTR Parameters[4]) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, lower_raises_routine, NULL, Parameters);
    NtspinMachineDestroy(m);
    return code;
}

/* ---- SL-INIT: a zeroed lock never passed to KeInitializeSpinLock ---- */

typedef struct {
    KSPIN_LOCK Initialized;
    KSPIN_LOCK Zeroed; /* 0, like a freshly allocated device extension, never initialized */
    int After;
} INIT;

static VOID uninitialized_routine(PVOID Context) {
    INIT *i = (INIT *)Context;
    KIRQL old;
    KeInitializeSpinLock(&i->Initialized);
    KeAcquireSpinLock(&i->Initialized, &old); /* fine */
    KeReleaseSpinLock(&i->Initialized, old);
    KeAcquireSpinLock(&i->Zeroed, &old); /* SL-INIT: 0xC4/0x1002 (lock, 0, 0) */
    i->After = 1;
}

ULONG ctest_uninitialized(ULONG_PTR Parameters[4], ULONG_PTR *Zeroed, int *After) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    INIT i = {0, 0, 0};
    ULONG code = NtspinRunOnProcessor(m, 0, uninitialized_routine, &i, Parameters);
    NtspinMachineDestroy(m);
    *Zeroed = (ULONG_PTR)&i.Zeroed;
    *After = i.After;
    return code;
}

/* ---- SL-OLDIRQL-SHARED: two held locks saving their OldIrql in one variable ---- */

typedef struct {
    KSPIN_LOCK A;
    KSPIN_LOCK B;
    KIRQL Shared;
    int After;
} SHARED;

static VOID shared_routine(PVOID Context) {
    SHARED *s = (SHARED *)Context;
    KeInitializeSpinLock(&s->A);
    KeInitializeSpinLock(&s->B);
    /* Sequential reuse of one variable is fine: A is released before B is taken. */
    KeAcquireSpinLock(&s->A, &s->Shared);
    KeReleaseSpinLock(&s->A, s->Shared);
    KeAcquireSpinLock(&s->B, &s->Shared);
    KeReleaseSpinLock(&s->B, s->Shared);
    /* Nested, the second acquire overwrites the first's OldIrql while A is held. */
    KeAcquireSpinLock(&s->A, &s->Shared);
    KeAcquireSpinLock(&s->B, &s->Shared); /* SL-OLDIRQL-SHARED */
    s->After = 1;
}

ULONG ctest_oldirql_shared(ULONG_PTR Parameters[4], ULONG_PTR *B, ULONG_PTR *Slot, int *After) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    SHARED s = {0, 0, 0, 0};
    ULONG code = NtspinRunOnProcessor(m, 0, shared_routine, &s, Parameters);
    NtspinMachineDestroy(m);
    *B = (ULONG_PTR)&s.B;
    *Slot = (ULONG_PTR)&s.Shared;
    *After = s.After;
    return code;
}
