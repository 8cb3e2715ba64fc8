/* A small WDM-style driver written against ntspin's wdm.h, run on the simulated machine:
 *
 *   - a device extension with an executive spin lock (statistics) and a request list
 *     guarded by the ExInterlocked routines;
 *   - an ISR that takes the device's completions into an inbox at DIRQL;
 *   - a DPC that moves them out through KeSynchronizeExecution and completes the requests;
 *   - an I/O path that runs on every processor at once.
 *
 * Build and run (from the repository root):   make -C examples/c run
 * With a deliberate bug for the verifier:     make -C examples/c run ARGS=--bug
 *
 * Exit status: 0 when every request completed with the right result, 1 on a mismatch,
 * 3 when the verifier bug-checked (its code and parameters are printed). */
#include <ntspin/host.h>
#include <ntspin/wdm.h>

#include <stdio.h>
#include <string.h>

#define PROCESSORS 4
#define PER_PROCESSOR 2000
#define VECTOR 7
#define DIRQL 5

typedef struct {
    LIST_ENTRY Link;
    ULONG Data;
    ULONG Result;
    volatile LONG Done;
} REQUEST;

typedef struct {
    NTSPIN_MACHINE *Machine;
    PKINTERRUPT Interrupt;
    KDPC Dpc;
    KSPIN_LOCK ListLock; /* the request list: ExInterlocked routines only */
    LIST_ENTRY Pending;
    KSPIN_LOCK StatsLock; /* executive spin lock: the statistics below */
    ULONG Completed;
    ULONG DpcRuns;
    ULONG Register; /* device register, shared with the ISR: completions not yet taken */
    ULONG Inbox;    /* taken by the ISR, not yet by the DPC */
    ULONG IsrClaimed;
    BOOLEAN Bug;
    NTSTATUS ConnectStatus;
    REQUEST Requests[PROCESSORS][PER_PROCESSOR];
} DEVICE_EXTENSION;

static ULONG transform(ULONG Data) { return Data * 2654435761u + 1; }

/* ---- interrupt side ---- */

static BOOLEAN Isr(PKINTERRUPT Interrupt, PVOID Context) {
    DEVICE_EXTENSION *ext = (DEVICE_EXTENSION *)Context;
    (void)Interrupt;
    if (ext->Register == 0) {
        return FALSE; /* not ours */
    }
    ext->Inbox += ext->Register;
    ext->Register = 0;
    ext->IsrClaimed++;
    KeInsertQueueDpc(&ext->Dpc, NULL, NULL);
    return TRUE;
}

typedef struct {
    DEVICE_EXTENSION *Ext;
    ULONG Taken;
} TAKE;

static BOOLEAN TakeInbox(PVOID Context) {
    TAKE *t = (TAKE *)Context;
    t->Taken = t->Ext->Inbox;
    t->Ext->Inbox = 0;
    return TRUE;
}

static VOID DpcForIsr(PKDPC Dpc, PVOID Context, PVOID A1, PVOID A2) {
    DEVICE_EXTENSION *ext = (DEVICE_EXTENSION *)Context;
    (void)Dpc;
    (void)A1;
    (void)A2;
    TAKE t = {ext, 0};
    KeSynchronizeExecution(ext->Interrupt, TakeInbox, &t);
    for (ULONG i = 0; i < t.Taken; i++) {
        PLIST_ENTRY e = ExInterlockedRemoveHeadList(&ext->Pending, &ext->ListLock);
        if (e == NULL) {
            break; /* cannot happen: every completion had a request queued first */
        }
        REQUEST *r = (REQUEST *)((char *)e - offsetof(REQUEST, Link));
        r->Result = transform(r->Data);
        r->Done = 1;
    }
    KeAcquireSpinLockAtDpcLevel(&ext->StatsLock);
    ext->Completed += t.Taken;
    ext->DpcRuns++;
    if (ext->Bug) {
        KeAcquireSpinLockAtDpcLevel(&ext->StatsLock); /* the deliberate bug: SL-RECURSE */
    }
    KeReleaseSpinLockFromDpcLevel(&ext->StatsLock);
}

/* ---- driver entry and the I/O path ---- */

static VOID StartDevice(PVOID Context) {
    DEVICE_EXTENSION *ext = (DEVICE_EXTENSION *)Context;
    PAGED_CODE();
    KeInitializeSpinLock(&ext->ListLock);
    KeInitializeSpinLock(&ext->StatsLock);
    InitializeListHead(&ext->Pending);
    KeInitializeDpc(&ext->Dpc, DpcForIsr, ext);
    IO_CONNECT_INTERRUPT_PARAMETERS p;
    memset(&p, 0, sizeof p);
    p.Version = CONNECT_FULLY_SPECIFIED;
    p.FullySpecified.InterruptObject = &ext->Interrupt;
    p.FullySpecified.ServiceRoutine = Isr;
    p.FullySpecified.ServiceContext = ext;
    p.FullySpecified.Vector = VECTOR;
    p.FullySpecified.Irql = DIRQL;
    p.FullySpecified.SynchronizeIrql = DIRQL;
    p.FullySpecified.InterruptMode = LevelSensitive;
    p.FullySpecified.ProcessorEnableMask = (KAFFINITY)-1;
    ext->ConnectStatus = IoConnectInterruptEx(&p);
}

static BOOLEAN ProgramDevice(PVOID Context) {
    ((DEVICE_EXTENSION *)Context)->Register++; /* the device will complete one request */
    return TRUE;
}

static VOID SubmitRequests(ULONG Processor, PVOID Context) {
    DEVICE_EXTENSION *ext = (DEVICE_EXTENSION *)Context;
    for (ULONG i = 0; i < PER_PROCESSOR; i++) {
        REQUEST *r = &ext->Requests[Processor][i];
        r->Data = Processor * 100000 + i;
        ExInterlockedInsertTailList(&ext->Pending, &r->Link, &ext->ListLock);
        KeSynchronizeExecution(ext->Interrupt, ProgramDevice, ext);
        NtspinAssertInterrupt(ext->Machine, VECTOR); /* the device raises its line */
    }
}

static VOID StopDevice(PVOID Context) {
    DEVICE_EXTENSION *ext = (DEVICE_EXTENSION *)Context;
    IoDisconnectInterrupt(ext->Interrupt);
    KeFlushQueuedDpcs();
}

static int report(const char *step, ULONG code, const ULONG_PTR p[4]) {
    printf("%s: bug check 0x%X (0x%lx, 0x%lx, 0x%lx, 0x%lx)\n", step, (unsigned)code,
           (unsigned long)p[0], (unsigned long)p[1], (unsigned long)p[2], (unsigned long)p[3]);
    return 3;
}

static DEVICE_EXTENSION Extension; /* static: it is large */

int main(int argc, char **argv) {
    DEVICE_EXTENSION *ext = &Extension;
    ext->Bug = argc > 1 && strcmp(argv[1], "--bug") == 0;
    ext->Machine = NtspinMachineCreate(PROCESSORS, NTSPIN_VERIFIER_STANDARD);
    if (ext->Machine == NULL) {
        return 2;
    }
    ULONG_PTR p[4] = {0, 0, 0, 0};
    ULONG code = NtspinRunOnProcessor(ext->Machine, 0, StartDevice, ext, p);
    if (code != 0) {
        return report("start", code, p);
    }
    if (ext->ConnectStatus != STATUS_SUCCESS) {
        printf("IoConnectInterruptEx: 0x%08X\n", (unsigned)ext->ConnectStatus);
        return 1;
    }
    code = NtspinRunOnAllProcessors(ext->Machine, SubmitRequests, ext, p);
    if (code == 0) {
        NtspinDrain(ext->Machine);
        code = NtspinRunOnProcessor(ext->Machine, 0, StopDevice, ext, p);
    }
    NtspinMachineDestroy(ext->Machine);
    if (code != 0) {
        return report("run", code, p);
    }
    ULONG good = 0;
    for (ULONG c = 0; c < PROCESSORS; c++) {
        for (ULONG i = 0; i < PER_PROCESSOR; i++) {
            REQUEST *r = &ext->Requests[c][i];
            good += r->Done && r->Result == transform(r->Data);
        }
    }
    ULONG total = PROCESSORS * PER_PROCESSOR;
    printf("%u requests on %u processors: %u completed, %u verified, %u ISR claims, %u DPC runs; "
           "list empty: %s\n",
           (unsigned)total, (unsigned)PROCESSORS, (unsigned)ext->Completed, (unsigned)good,
           (unsigned)ext->IsrClaimed, (unsigned)ext->DpcRuns,
           IsListEmpty(&ext->Pending) ? "yes" : "no");
    return (ext->Completed == total && good == total && IsListEmpty(&ext->Pending)) ? 0 : 1;
}
