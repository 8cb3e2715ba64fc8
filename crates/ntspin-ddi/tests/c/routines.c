/* C tests of the routines the other files do not call, and one routine per rule a C
   caller can break (each on a fresh machine: a bug check stops it), called from
   tests/c_abi.rs. */
#include <ntspin/host.h>
#include <ntspin/wdf.h>
#include <ntspin/wdm.h>

#include <string.h>

/* ---- KeAcquireSpinLockRaiseToDpc, KeTryToAcquireSpinLockAtDpcLevel, KeTestSpinLock,
        the queued AtDpcLevel pair, KeGetCurrentProcessorNumber ---- */

typedef struct {
    KSPIN_LOCK Lock;
    KSPIN_LOCK Queued;
    volatile LONG Held;    /* processor 0 holds Lock */
    volatile LONG Tried;   /* processor 1 has tried */
    KIRQL RaiseToDpcIrql;  /* inside KeAcquireSpinLockRaiseToDpc */
    KIRQL RaiseToDpcOld;
    BOOLEAN TryWhileHeld;  /* processor 1, while processor 0 holds it: FALSE */
    BOOLEAN TestWhileHeld; /* KeTestSpinLock then: FALSE */
    BOOLEAN TryWhenFree;   /* afterwards: TRUE */
    BOOLEAN TestWhenFree;
    BOOLEAN QueuedTestHeld;
    BOOLEAN QueuedTestFree;
    ULONG Numbers[2];
} TRIES;

static VOID tries(ULONG Processor, PVOID Context) {
    TRIES *t = (TRIES *)Context;
    t->Numbers[Processor] = KeGetCurrentProcessorNumber();
    if (Processor == 0) {
        KIRQL old = KeAcquireSpinLockRaiseToDpc(&t->Lock);
        t->RaiseToDpcOld = old;
        t->RaiseToDpcIrql = KeGetCurrentIrql();
        __atomic_store_n(&t->Held, 1, __ATOMIC_SEQ_CST);
        while (!__atomic_load_n(&t->Tried, __ATOMIC_SEQ_CST)) {
        }
        KeReleaseSpinLock(&t->Lock, old);
    } else {
        while (!__atomic_load_n(&t->Held, __ATOMIC_SEQ_CST)) {
        }
        KIRQL old = KeRaiseIrqlToDpcLevel();
        t->TryWhileHeld = KeTryToAcquireSpinLockAtDpcLevel(&t->Lock);
        t->TestWhileHeld = KeTestSpinLock(&t->Lock);
        __atomic_store_n(&t->Tried, 1, __ATOMIC_SEQ_CST);
        while (!KeTestSpinLock(&t->Lock)) {
        }
        t->TestWhenFree = KeTestSpinLock(&t->Lock);
        t->TryWhenFree = KeTryToAcquireSpinLockAtDpcLevel(&t->Lock);
        if (t->TryWhenFree) {
            KeReleaseSpinLockFromDpcLevel(&t->Lock);
        }
        KLOCK_QUEUE_HANDLE h;
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&t->Queued, &h);
        t->QueuedTestHeld = KeTestSpinLock(&t->Queued);
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&h);
        t->QueuedTestFree = KeTestSpinLock(&t->Queued);
        KeLowerIrql(old);
    }
}

static VOID tries_init(PVOID Context) {
    TRIES *t = (TRIES *)Context;
    KeInitializeSpinLock(&t->Lock);
    KeInitializeSpinLock(&t->Queued);
}

ULONG ctest_tries(TRIES *Out, ULONG Size) {
    if (Size != sizeof(TRIES)) {
        return 0xFFFFFFFFu;
    }
    memset(Out, 0, sizeof *Out);
    NTSPIN_MACHINE *m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, tries_init, Out, NULL);
    if (code == 0) {
        code = NtspinRunOnAllProcessors(m, tries, Out, NULL);
    }
    NtspinMachineDestroy(m);
    return code;
}

/* ---- KeSetTargetProcessorDpc; ExInterlockedPush/PopEntryList ---- */

typedef struct {
    KDPC Dpc;
    volatile LONG RanOn;
    KSPIN_LOCK Lock;
    SINGLE_LIST_ENTRY Head;
    SINGLE_LIST_ENTRY Entries[3];
    PSINGLE_LIST_ENTRY Popped[4];
    PSINGLE_LIST_ENTRY FirstPushReturned;
} MISC;

static VOID targeted(PKDPC Dpc, PVOID Context, PVOID A1, PVOID A2) {
    (void)Dpc;
    (void)A1;
    (void)A2;
    ((MISC *)Context)->RanOn = (LONG)KeGetCurrentProcessorNumber();
}

static VOID misc(PVOID Context) {
    MISC *m = (MISC *)Context;
    m->RanOn = -1;
    KeInitializeDpc(&m->Dpc, targeted, m);
    KeSetTargetProcessorDpc(&m->Dpc, 1);
    KeInsertQueueDpc(&m->Dpc, NULL, NULL);
    KeFlushQueuedDpcs();
    KeInitializeSpinLock(&m->Lock);
    m->Head.Next = NULL;
    m->FirstPushReturned = ExInterlockedPushEntryList(&m->Head, &m->Entries[0], &m->Lock);
    ExInterlockedPushEntryList(&m->Head, &m->Entries[1], &m->Lock);
    ExInterlockedPushEntryList(&m->Head, &m->Entries[2], &m->Lock);
    for (int i = 0; i < 4; i++) {
        m->Popped[i] = ExInterlockedPopEntryList(&m->Head, &m->Lock);
    }
}

ULONG ctest_misc(LONG *RanOn, ULONG *LifoOk, ULONG *EmptyNull, ULONG *FirstNull) {
    static MISC m;
    memset(&m, 0, sizeof m);
    NTSPIN_MACHINE *machine = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(machine, 0, misc, &m, NULL);
    NtspinMachineDestroy(machine);
    *RanOn = m.RanOn;
    *LifoOk = m.Popped[0] == &m.Entries[2] && m.Popped[1] == &m.Entries[1] &&
              m.Popped[2] == &m.Entries[0];
    *EmptyNull = m.Popped[3] == NULL;
    *FirstNull = m.FirstPushReturned == NULL;
    return code;
}

/* ---- WdfInterruptEnable / WdfInterruptDisable from driver code ---- */

static volatile LONG enables, disables;

static BOOLEAN quiet_isr(WDFINTERRUPT Interrupt, ULONG MessageID) {
    (void)Interrupt;
    (void)MessageID;
    return FALSE;
}

static NTSTATUS count_enable(WDFINTERRUPT Interrupt, WDFDEVICE Device) {
    (void)Interrupt;
    (void)Device;
    __atomic_add_fetch(&enables, 1, __ATOMIC_SEQ_CST);
    return STATUS_SUCCESS;
}

static NTSTATUS count_disable(WDFINTERRUPT Interrupt, WDFDEVICE Device) {
    (void)Interrupt;
    (void)Device;
    __atomic_add_fetch(&disables, 1, __ATOMIC_SEQ_CST);
    return STATUS_SUCCESS;
}

typedef struct {
    WDFDEVICE Device;
    WDFINTERRUPT Interrupt;
    NTSTATUS Create;
    NTSTATUS Reenable;
} TOGGLE;

static VOID toggle_add(PVOID Context) {
    TOGGLE *t = (TOGGLE *)Context;
    WDF_INTERRUPT_CONFIG c;
    WDF_INTERRUPT_CONFIG_INIT(&c, quiet_isr, NULL);
    c.EvtInterruptEnable = count_enable;
    c.EvtInterruptDisable = count_disable;
    t->Create = WdfInterruptCreate(t->Device, &c, WDF_NO_OBJECT_ATTRIBUTES, &t->Interrupt);
}

static VOID toggle(PVOID Context) {
    TOGGLE *t = (TOGGLE *)Context;
    WdfInterruptDisable(t->Interrupt);
    t->Reenable = WdfInterruptEnable(t->Interrupt);
}

/* Out: enables, disables (start + re-enable = 2; disable + stop = 2), statuses. */
ULONG ctest_wdf_toggle(LONG Out[2], NTSTATUS Status[2]) {
    enables = disables = 0;
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    TOGGLE t;
    memset(&t, 0, sizeof t);
    t.Device = NtspinWdfDeviceCreate(m, 30, 9);
    ULONG code = NtspinRunOnProcessor(m, 0, toggle_add, &t, NULL);
    if (code == 0 && NtspinWdfDeviceStart(t.Device) == STATUS_SUCCESS) {
        code = NtspinRunOnProcessor(m, 0, toggle, &t, NULL);
        NtspinWdfDeviceStop(t.Device);
    }
    NtspinMachineDestroy(m);
    Out[0] = enables;
    Out[1] = disables;
    Status[0] = t.Create;
    Status[1] = t.Reenable;
    return code;
}

/* ---- one violation per rule ---- */

typedef struct {
    int Which;
    KSPIN_LOCK A;
    KSPIN_LOCK B;
    KLOCK_QUEUE_HANDLE H1;
    KLOCK_QUEUE_HANDLE H2;
    PKINTERRUPT Interrupt;
    int After;
} VIOLATION;

static BOOLEAN no_isr(PKINTERRUPT Interrupt, PVOID Context) {
    (void)Interrupt;
    (void)Context;
    return FALSE;
}

static VOID violate(PVOID Context) {
    VIOLATION *v = (VIOLATION *)Context;
    KIRQL old, old2;
    KeInitializeSpinLock(&v->A);
    KeInitializeSpinLock(&v->B);
    switch (v->Which) {
    case 0: /* SL-NOT-OWNED: release a free lock (at DISPATCH, so the IRQL rule passes) */
        old = KeRaiseIrqlToDpcLevel();
        KeReleaseSpinLock(&v->A, old);
        break;
    case 1: /* SL-ACQ-IRQL: KeAcquireSpinLock at DIRQL */
        KeRaiseIrql(5, &old);
        KeAcquireSpinLock(&v->A, &old2);
        break;
    case 2: /* SL-ATDPC-IRQL: AtDpcLevel at PASSIVE */
        KeAcquireSpinLockAtDpcLevel(&v->A);
        break;
    case 3: /* SL-FROMDPC-IRQL: FromDpcLevel at PASSIVE */
        KeReleaseSpinLockFromDpcLevel(&v->A);
        break;
    case 4: /* SL-REL-IRQL: KeReleaseSpinLock above DISPATCH */
        KeAcquireSpinLock(&v->A, &old);
        KeRaiseIrql(6, &old2);
        KeReleaseSpinLock(&v->A, old);
        break;
    case 5: /* SL-OLDIRQL: NewIrql differs from what the acquire saved */
        KeAcquireSpinLock(&v->A, &old);
        KeReleaseSpinLock(&v->A, APC_LEVEL);
        break;
    case 6: /* SL-MIX: a queued acquire of a lock held in ordinary mode */
        KeAcquireSpinLock(&v->A, &old);
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&v->A, &v->H1);
        break;
    case 7: /* QSL-HANDLE: a handle still holding A passed to acquire B */
        KeAcquireInStackQueuedSpinLock(&v->A, &v->H1);
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&v->B, &v->H1);
        break;
    case 8: /* QSL-RECURSE */
        KeAcquireInStackQueuedSpinLock(&v->A, &v->H1);
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&v->A, &v->H2);
        break;
    case 9: /* ISL-IRQL: KeAcquireInterruptSpinLock above the object's SynchronizeIrql */
        IoConnectInterrupt(&v->Interrupt, no_isr, NULL, NULL, 3, 5, 5, LevelSensitive, FALSE,
                           1, FALSE);
        KeRaiseIrql(8, &old);
        KeAcquireInterruptSpinLock(v->Interrupt);
        break;
    case 10: { /* ISL-PASSIVE: the interrupt spin lock of a passive-level object */
        IO_CONNECT_INTERRUPT_PARAMETERS p;
        memset(&p, 0, sizeof p);
        p.Version = CONNECT_FULLY_SPECIFIED;
        p.FullySpecified.InterruptObject = &v->Interrupt;
        p.FullySpecified.ServiceRoutine = no_isr;
        p.FullySpecified.Vector = 4;
        p.FullySpecified.ProcessorEnableMask = 1;
        IoConnectInterruptEx(&p);
        KeAcquireInterruptSpinLock(v->Interrupt);
        break;
    }
    case 11: /* IRQL-RAISE: KeRaiseIrql to a lower level */
        KeRaiseIrql(DISPATCH_LEVEL, &old);
        KeRaiseIrql(APC_LEVEL, &old2);
        break;
    case 12: /* CONN-PARAMS: IoConnectInterrupt above PASSIVE */
        KeRaiseIrql(DISPATCH_LEVEL, &old);
        IoConnectInterrupt(&v->Interrupt, no_isr, NULL, NULL, 3, 5, 5, LevelSensitive, FALSE,
                           1, FALSE);
        break;
    case 13: /* QSL-ACQ-IRQL */
        KeRaiseIrql(5, &old);
        KeAcquireInStackQueuedSpinLock(&v->A, &v->H1);
        break;
    case 14: /* QSL-ATDPC-IRQL */
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&v->A, &v->H1);
        break;
    case 15: /* QSL-REL-IRQL: KeReleaseInStackQueuedSpinLock above DISPATCH */
        KeAcquireInStackQueuedSpinLock(&v->A, &v->H1);
        KeRaiseIrql(6, &old);
        KeReleaseInStackQueuedSpinLock(&v->H1);
        break;
    case 16: /* IRQL-LOWER-HELD: lower to PASSIVE with a spin lock held */
        KeAcquireSpinLock(&v->A, &old);
        KeLowerIrql(PASSIVE_LEVEL);
        break;
    case 17: /* ISL-RECURSE: the interrupt spin lock twice */
        IoConnectInterrupt(&v->Interrupt, no_isr, NULL, NULL, 3, 5, 5, LevelSensitive, FALSE,
                           1, FALSE);
        KeAcquireInterruptSpinLock(v->Interrupt);
        KeAcquireInterruptSpinLock(v->Interrupt);
        break;
    case 18: /* ISL-OLDIRQL: released with another IRQL than the acquire returned */
        IoConnectInterrupt(&v->Interrupt, no_isr, NULL, NULL, 3, 5, 5, LevelSensitive, FALSE,
                           1, FALSE);
        old = KeAcquireInterruptSpinLock(v->Interrupt);
        KeReleaseInterruptSpinLock(v->Interrupt, APC_LEVEL);
        break;
    case 19: /* SL-ORDER: A then B, later B then A (one processor: no deadlock happens) */
        KeAcquireSpinLock(&v->A, &old);
        KeAcquireSpinLockAtDpcLevel(&v->B);
        KeReleaseSpinLockFromDpcLevel(&v->B);
        KeReleaseSpinLock(&v->A, old);
        KeAcquireSpinLock(&v->B, &old);
        KeAcquireSpinLockAtDpcLevel(&v->A);
        break;
    case 20: { /* LD-IRQ: ExInterlocked at DIRQL, then KeAcquireSpinLock on the same lock */
        LIST_ENTRY head, entry;
        InitializeListHead(&head);
        KeRaiseIrql(7, &old);
        ExInterlockedInsertTailList(&head, &entry, &v->A);
        KeLowerIrql(old);
        KeAcquireSpinLock(&v->A, &old2);
        break;
    }
    default:
        return;
    }
    v->After = 1;
}

/* Runs violation Which on a fresh machine: the code, parameters, and the addresses the
   Rust side compares against (A, B, H1, the interrupt object). */
ULONG ctest_violation(int Which, ULONG_PTR Params[4], ULONG_PTR Addrs[4], int *After) {
    static VIOLATION v; /* static: the machine may keep a frozen processor's view of it */
    memset(&v, 0, sizeof v);
    v.Which = Which;
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, violate, &v, Params);
    Addrs[0] = (ULONG_PTR)&v.A;
    Addrs[1] = (ULONG_PTR)&v.B;
    Addrs[2] = (ULONG_PTR)&v.H1;
    Addrs[3] = (ULONG_PTR)v.Interrupt;
    *After = v.After;
    NtspinMachineDestroy(m);
    return code;
}

/* ---- one violation per KMDF rule a C driver can break ---- */

typedef struct {
    int Which;
    WDFDEVICE Device;
    WDFINTERRUPT Interrupt;
    NTSTATUS Create;
    BOOLEAN TryResult;
    int After;
} WDF_VIOLATION;

static VOID wdf_violation_add(PVOID Context) {
    WDF_VIOLATION *v = (WDF_VIOLATION *)Context;
    WDF_INTERRUPT_CONFIG c;
    WDF_INTERRUPT_CONFIG_INIT(&c, quiet_isr, NULL);
    c.PassiveHandling = v->Which == 4;
    v->Create = WdfInterruptCreate(v->Device, &c, WDF_NO_OBJECT_ATTRIBUTES, &v->Interrupt);
}

static VOID wdf_violate(PVOID Context) {
    WDF_VIOLATION *v = (WDF_VIOLATION *)Context;
    KIRQL old;
    switch (v->Which) {
    case 0: /* WDF-NULL: WdfInterruptSynchronize with no callback */
        WdfInterruptSynchronize(v->Interrupt, NULL, NULL);
        break;
    case 1: /* WDF-RECURSE */
        WdfInterruptAcquireLock(v->Interrupt);
        WdfInterruptAcquireLock(v->Interrupt);
        break;
    case 2: /* WDF-RELEASE: release without acquire */
        WdfInterruptReleaseLock(v->Interrupt);
        break;
    case 3: /* WDF-DIRQL-IRQL: above the interrupt's SynchronizeIrql (6) */
        KeRaiseIrql(10, &old);
        WdfInterruptAcquireLock(v->Interrupt);
        break;
    case 4: /* WDF-PASSIVE-IRQL: a passive interrupt's lock at DISPATCH */
        KeRaiseIrql(DISPATCH_LEVEL, &old);
        WdfInterruptAcquireLock(v->Interrupt);
        break;
    case 5: /* WDF-TRY: TryToAcquireLock on a DIRQL interrupt fails (a warning, no stop) */
        v->TryResult = WdfInterruptTryToAcquireLock(v->Interrupt);
        return;
    default:
        return;
    }
    v->After = 1;
}

ULONG ctest_wdf_violation(int Which, ULONG_PTR Params[4], ULONG_PTR *Interrupt, int *After,
                          BOOLEAN *TryResult) {
    static WDF_VIOLATION v;
    memset(&v, 0, sizeof v);
    v.Which = Which;
    v.TryResult = 0xFF;
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    v.Device = NtspinWdfDeviceCreate(m, 14, 6);
    ULONG code = NtspinRunOnProcessor(m, 0, wdf_violation_add, &v, NULL);
    if (code == 0 && v.Create == STATUS_SUCCESS && NtspinWdfDeviceStart(v.Device) == 0) {
        code = NtspinRunOnProcessor(m, 0, wdf_violate, &v, Params);
    }
    *Interrupt = (ULONG_PTR)v.Interrupt;
    *After = v.After;
    *TryResult = v.TryResult;
    NtspinMachineDestroy(m);
    return code;
}
