/* C tests of interrupt objects, KeSynchronizeExecution and PAGED_CODE, called from
   tests/c_abi.rs. A small device: its "hardware" posts completions into a register that
   the ISR drains into an inbox; the DPC moves the inbox to the driver's count through
   KeSynchronizeExecution. */
#include <ntspin/host.h>
#include <ntspin/wdm.h>

#include <stddef.h>

_Static_assert(sizeof(IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS) == 72,
               "FULLY_SPECIFIED parameters: x64 layout");
_Static_assert(offsetof(IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS, Vector) == 44,
               "Vector at 44");
_Static_assert(offsetof(IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS, ProcessorEnableMask) ==
                   56,
               "ProcessorEnableMask at 56");
_Static_assert(sizeof(IO_CONNECT_INTERRUPT_PARAMETERS) == 80, "IO_CONNECT_INTERRUPT_PARAMETERS");
_Static_assert(sizeof(IO_DISCONNECT_INTERRUPT_PARAMETERS) == 16,
               "IO_DISCONNECT_INTERRUPT_PARAMETERS");

#define VECTOR 9
#define DIRQL 6

typedef struct {
    NTSPIN_MACHINE *Machine;
    PKINTERRUPT Interrupt;
    KDPC Dpc;
    ULONG Posts;         /* how many completions the routine posts */
    ULONG Register;      /* device register: completions not yet taken by the ISR */
    ULONG Inbox;         /* taken by the ISR, not yet by the DPC */
    ULONG Handled;       /* the driver's count (DPC, under the interrupt lock) */
    ULONG IsrRuns;       /* ISR calls that found work */
    ULONG IsrIdle;       /* ISR calls that found none */
    ULONG DpcRuns;
    ULONG SyncCalls;
    ULONG BadIrql;       /* a routine that ran at the wrong IRQL */
    NTSTATUS ConnectStatus;
} DEVICE;

static BOOLEAN isr(PKINTERRUPT Interrupt, PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    if (KeGetCurrentIrql() != DIRQL || Interrupt != d->Interrupt) {
        d->BadIrql++;
    }
    if (d->Register == 0) {
        d->IsrIdle++;
        return FALSE;
    }
    d->Inbox += d->Register;
    d->Register = 0;
    d->IsrRuns++;
    KeInsertQueueDpc(&d->Dpc, NULL, NULL);
    return TRUE;
}

static BOOLEAN take_inbox(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    if (KeGetCurrentIrql() != DIRQL) {
        d->BadIrql++;
    }
    d->Handled += d->Inbox;
    d->Inbox = 0;
    d->SyncCalls++;
    return TRUE;
}

static BOOLEAN post_one(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    d->Register++;
    d->SyncCalls++;
    return TRUE;
}

static VOID dpc(PKDPC Dpc, PVOID Context, PVOID A1, PVOID A2) {
    (void)Dpc;
    (void)A1;
    (void)A2;
    DEVICE *d = (DEVICE *)Context;
    if (KeGetCurrentIrql() != DISPATCH_LEVEL) {
        d->BadIrql++;
    }
    d->DpcRuns++;
    KeSynchronizeExecution(d->Interrupt, take_inbox, d);
}

static VOID start_device(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    IO_CONNECT_INTERRUPT_PARAMETERS p = {0};
    p.Version = CONNECT_FULLY_SPECIFIED;
    p.FullySpecified.PhysicalDeviceObject = NULL;
    p.FullySpecified.InterruptObject = &d->Interrupt;
    p.FullySpecified.ServiceRoutine = isr;
    p.FullySpecified.ServiceContext = d;
    p.FullySpecified.SpinLock = NULL;
    p.FullySpecified.Vector = VECTOR;
    p.FullySpecified.Irql = DIRQL;
    p.FullySpecified.SynchronizeIrql = DIRQL;
    p.FullySpecified.InterruptMode = LevelSensitive;
    p.FullySpecified.ShareVector = FALSE;
    p.FullySpecified.ProcessorEnableMask = 0x2; /* processor 1 takes the interrupts */
    KeInitializeDpc(&d->Dpc, dpc, d);
    d->ConnectStatus = IoConnectInterruptEx(&p);
}

/* Processor 0: the "device" posts one completion at a time (under the interrupt lock, as
   hardware state shared with the ISR) and asserts the line after each. */
static VOID post_all(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    for (ULONG i = 0; i < d->Posts; i++) {
        KeSynchronizeExecution(d->Interrupt, post_one, d);
        NtspinAssertInterrupt(d->Machine, VECTOR);
    }
}

static VOID stop_device(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    IO_DISCONNECT_INTERRUPT_PARAMETERS p = {0};
    p.Version = CONNECT_FULLY_SPECIFIED;
    p.ConnectionContext.InterruptObject = d->Interrupt;
    IoDisconnectInterruptEx(&p);
    KeFlushQueuedDpcs();
}

/* The ISR + DPC + KeSynchronizeExecution scenario. Returns the first bug check code (0 for
   none) and the device's counters in `Out` (Posts, Handled, IsrRuns, IsrIdle, DpcRuns,
   SyncCalls, BadIrql, ConnectStatus). */
ULONG ctest_isr_dpc_sync(ULONG Posts, ULONG Out[8]) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    DEVICE d = {0};
    d.Machine = m;
    d.Posts = Posts;
    ULONG code = NtspinRunOnProcessor(m, 0, start_device, &d, NULL);
    if (code == 0 && d.ConnectStatus == STATUS_SUCCESS) {
        code = NtspinRunOnProcessor(m, 0, post_all, &d, NULL);
        NtspinDrain(m);
    }
    if (code == 0) {
        code = NtspinRunOnProcessor(m, 0, stop_device, &d, NULL);
    }
    NtspinMachineDestroy(m);
    Out[0] = d.Posts;
    Out[1] = d.Handled;
    Out[2] = d.IsrRuns;
    Out[3] = d.IsrIdle;
    Out[4] = d.DpcRuns;
    Out[5] = d.SyncCalls;
    Out[6] = d.BadIrql;
    Out[7] = (ULONG)d.ConnectStatus;
    return code;
}

/* ---- IoConnectInterrupt(Ex) parameter validation ---- */

static BOOLEAN never(PKINTERRUPT Interrupt, PVOID Context) {
    (void)Interrupt;
    (void)Context;
    return FALSE;
}

static BOOLEAN note_irql(PVOID Context) {
    *(KIRQL *)Context = KeGetCurrentIrql();
    return 7; /* any non-zero BOOLEAN comes back unchanged (SYNC-RESULT) */
}

typedef struct {
    NTSTATUS LineBased;
    ULONG VersionAfter;
    NTSTATUS SyncBelowIrql;
    NTSTATUS EmptyMask;
    NTSTATUS PassiveWithLock;
    NTSTATUS NullRoutine;
    NTSTATUS First;
    NTSTATUS SecondUnshared;
    NTSTATUS Passive;
    KIRQL PassiveSyncIrql;
    NTSTATUS Classic;
    KIRQL LockIrql;
    KIRQL OldIrql;
    BOOLEAN SyncResult;
    int Untouched;
} CONNECTS;

static VOID connects(PVOID Context) {
    CONNECTS *c = (CONNECTS *)Context;
    PKINTERRUPT obj = NULL, passive = NULL, classic = NULL, untouched = (PKINTERRUPT)0;
    KSPIN_LOCK lock;
    KeInitializeSpinLock(&lock);
    IO_CONNECT_INTERRUPT_PARAMETERS p = {0};

    p.Version = CONNECT_LINE_BASED;
    p.LineBased.InterruptObject = &untouched;
    p.LineBased.ServiceRoutine = never;
    c->LineBased = IoConnectInterruptEx(&p);
    c->VersionAfter = p.Version;

    IO_CONNECT_INTERRUPT_PARAMETERS base = {0};
    base.Version = CONNECT_FULLY_SPECIFIED;
    base.FullySpecified.InterruptObject = &untouched;
    base.FullySpecified.ServiceRoutine = never;
    base.FullySpecified.Vector = 20;
    base.FullySpecified.Irql = 7;
    base.FullySpecified.SynchronizeIrql = 7;
    base.FullySpecified.InterruptMode = Latched;
    base.FullySpecified.ProcessorEnableMask = 1;

    p = base;
    p.FullySpecified.SynchronizeIrql = 6;
    c->SyncBelowIrql = IoConnectInterruptEx(&p);
    p = base;
    p.FullySpecified.ProcessorEnableMask = 0;
    c->EmptyMask = IoConnectInterruptEx(&p);
    p = base;
    p.FullySpecified.Irql = PASSIVE_LEVEL;
    p.FullySpecified.SynchronizeIrql = PASSIVE_LEVEL;
    p.FullySpecified.SpinLock = &lock;
    c->PassiveWithLock = IoConnectInterruptEx(&p);
    p = base;
    p.FullySpecified.ServiceRoutine = NULL;
    c->NullRoutine = IoConnectInterruptEx(&p);
    c->Untouched = untouched == NULL;

    p = base;
    p.FullySpecified.InterruptObject = &obj;
    c->First = IoConnectInterruptEx(&p);
    PKINTERRUPT second = NULL;
    p.FullySpecified.InterruptObject = &second;
    c->SecondUnshared = IoConnectInterruptEx(&p);

    /* KeAcquireInterruptSpinLock raises to SynchronizeIrql. */
    c->OldIrql = KeAcquireInterruptSpinLock(obj);
    c->LockIrql = KeGetCurrentIrql();
    KeReleaseInterruptSpinLock(obj, c->OldIrql);

    /* A passive-level interrupt: KeSynchronizeExecution runs the routine at PASSIVE. */
    p = base;
    p.FullySpecified.Vector = 21;
    p.FullySpecified.Irql = PASSIVE_LEVEL;
    p.FullySpecified.SynchronizeIrql = PASSIVE_LEVEL;
    p.FullySpecified.InterruptObject = &passive;
    c->Passive = IoConnectInterruptEx(&p);
    c->PassiveSyncIrql = 0xFF;
    c->SyncResult = KeSynchronizeExecution(passive, note_irql, &c->PassiveSyncIrql);

    /* IoConnectInterrupt, the classic form, with a caller's spin lock. */
    c->Classic = IoConnectInterrupt(&classic, never, NULL, &lock, 22, 5, 5, LevelSensitive,
                                    FALSE, 1, FALSE);

    IoDisconnectInterrupt(obj);
    IoDisconnectInterrupt(passive);
    IoDisconnectInterrupt(classic);
}

ULONG ctest_connects(CONNECTS *Out, ULONG OutSize) {
    if (OutSize != sizeof(CONNECTS)) {
        return 0xFFFFFFFFu;
    }
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, connects, Out, NULL);
    NtspinMachineDestroy(m);
    return code;
}

ULONG ctest_connects_size(void) { return sizeof(CONNECTS); }

/* ---- ISL-OBJ: a forged PKINTERRUPT ---- */

static VOID forged(PVOID Context) {
    int *after = (int *)Context;
    KeSynchronizeExecution((PKINTERRUPT)(ULONG_PTR)0x1234560, note_irql, NULL);
    *after = 1;
}

ULONG ctest_forged_interrupt(ULONG_PTR Params[4], int *After) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, forged, After, Params);
    NtspinMachineDestroy(m);
    return code;
}

/* ---- PAGED_CODE ---- */

static const char *paged_site;

static VOID pageable_routine(void) {
    paged_site = __func__;
    PAGED_CODE();
}

static VOID paged(PVOID Context) {
    int *reached = (int *)Context;
    pageable_routine(); /* PASSIVE: fine */
    KIRQL old;
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    pageable_routine(); /* DISPATCH: 0xD1 */
    *reached = 1;
    KeLowerIrql(old);
}

ULONG ctest_paged_code(ULONG_PTR Params[4], ULONG_PTR *Site, int *Reached) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, paged, Reached, Params);
    NtspinMachineDestroy(m);
    *Site = (ULONG_PTR)paged_site;
    return code;
}

/* ---- NtspinMachineDestroy with an interrupt still connected ---- */

static VOID connect_and_leave(PVOID Context) {
    DEVICE *d = (DEVICE *)Context;
    start_device(d);
}

ULONG ctest_destroy_connected(NTSTATUS *Status) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    DEVICE d = {0};
    d.Machine = m;
    ULONG code = NtspinRunOnProcessor(m, 0, connect_and_leave, &d, NULL);
    NtspinAssertInterrupt(m, VECTOR);
    NtspinMachineDestroy(m); /* disconnects, then ends the processors */
    *Status = d.ConnectStatus;
    return code;
}
