/* C tests of DPCs and the ExInterlocked routines, called from tests/c_abi.rs. */
#include <ntspin/host.h>
#include <ntspin/wdm.h>

#include <string.h>

_Static_assert(sizeof(KDPC) == 64, "KDPC is 64 bytes");
_Static_assert(sizeof(LIST_ENTRY) == 16, "LIST_ENTRY is 16 bytes");

/* ---- ExInterlocked across processors ---- */

#define PER_CPU 500

typedef struct {
    LIST_ENTRY Link;
    ULONG Owner;
} ITEM;

typedef struct {
    KSPIN_LOCK Lock;
    LIST_ENTRY Head;
    ULONG Count;
    ITEM Items[4][PER_CPU];
    volatile ULONG Removed;
    volatile ULONG EmptyNulls;
} LISTS;

static VOID lists_init(PVOID Context) {
    LISTS *l = (LISTS *)Context;
    KeInitializeSpinLock(&l->Lock);
    InitializeListHead(&l->Head);
    /* EXI-EMPTY: removing from an empty list returns NULL. */
    if (ExInterlockedRemoveHeadList(&l->Head, &l->Lock) == NULL && IsListEmpty(&l->Head)) {
        l->EmptyNulls++;
    }
}

static VOID lists_routine(ULONG Processor, PVOID Context) {
    LISTS *l = (LISTS *)Context;
    for (ULONG i = 0; i < PER_CPU; i++) {
        ITEM *it = &l->Items[Processor][i];
        it->Owner = Processor;
        if (i % 2 == 0) {
            ExInterlockedInsertTailList(&l->Head, &it->Link, &l->Lock);
        } else {
            ExInterlockedInsertHeadList(&l->Head, &it->Link, &l->Lock);
        }
        ExInterlockedAddUlong(&l->Count, 1, &l->Lock);
    }
    for (ULONG i = 0; i < PER_CPU; i++) {
        if (ExInterlockedRemoveHeadList(&l->Head, &l->Lock) != NULL) {
            ExInterlockedAddUlong((PULONG)&l->Removed, 1, &l->Lock);
        }
    }
}

/* Returns the bug check code; *Added, *Removed and *EmptyNulls get the counts. */
ULONG ctest_lists(ULONG *Added, ULONG *Removed, ULONG *EmptyNulls) {
    static LISTS l;
    NTSPIN_MACHINE *m = NtspinMachineCreate(4, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, lists_init, &l, NULL);
    if (code == 0) {
        code = NtspinRunOnAllProcessors(m, lists_routine, &l, NULL);
    }
    *Added = l.Count;
    *Removed = l.Removed;
    *EmptyNulls = l.EmptyNulls;
    NtspinMachineDestroy(m);
    return code;
}

/* ---- DPCs ---- */

typedef struct {
    KDPC Dpc;
    volatile ULONG Runs;
    volatile ULONG_PTR Arg1;
    volatile KIRQL IrqlSeen;
    volatile PVOID ContextSeen;
    volatile BOOLEAN First, Second;
} DPC_TEST;

static VOID deferred(PKDPC Dpc, PVOID DeferredContext, PVOID A1, PVOID A2) {
    DPC_TEST *t = (DPC_TEST *)DeferredContext;
    (void)Dpc;
    (void)A2;
    t->Runs++;
    t->Arg1 = (ULONG_PTR)A1;
    t->IrqlSeen = KeGetCurrentIrql();
    t->ContextSeen = DeferredContext;
}

static VOID dpc_routine(PVOID Context) {
    DPC_TEST *t = (DPC_TEST *)Context;
    KeInitializeDpc(&t->Dpc, deferred, t);
    KIRQL old = KeRaiseIrqlToDpcLevel();
    t->First = KeInsertQueueDpc(&t->Dpc, (PVOID)0x11, NULL);
    t->Second = KeInsertQueueDpc(&t->Dpc, (PVOID)0x22, NULL); /* DPC-ONCE: FALSE */
    KeLowerIrql(old); /* the DPC runs here, with the first call's arguments */
    KeFlushQueuedDpcs();
}

ULONG ctest_dpc(ULONG *Runs, ULONG_PTR *Arg1, KIRQL *Irql, int *ContextOk, BOOLEAN Queued[2]) {
    static DPC_TEST t;
    NTSPIN_MACHINE *m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 1, dpc_routine, &t, NULL);
    *Runs = t.Runs;
    *Arg1 = t.Arg1;
    *Irql = t.IrqlSeen;
    *ContextOk = t.ContextSeen == &t;
    Queued[0] = t.First;
    Queued[1] = t.Second;
    NtspinMachineDestroy(m);
    return code;
}

/* ---- KeRemoveQueueDpc ---- */

typedef struct {
    KDPC Dpc;
    ULONG Runs;
    ULONG_PTR LastArg;
    BOOLEAN Removed[3];
    BOOLEAN Inserted[3];
} REMOVE;

static VOID counted(PKDPC Dpc, PVOID Context, PVOID A1, PVOID A2) {
    (void)Dpc;
    (void)A2;
    REMOVE *r = (REMOVE *)Context;
    r->Runs++;
    r->LastArg = (ULONG_PTR)A1;
}

static VOID remove_routine(PVOID Context) {
    REMOVE *r = (REMOVE *)Context;
    KIRQL old;
    KeInitializeDpc(&r->Dpc, counted, r);
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    r->Inserted[0] = KeInsertQueueDpc(&r->Dpc, (PVOID)1, NULL);
    r->Removed[0] = KeRemoveQueueDpc(&r->Dpc); /* queued: TRUE */
    r->Removed[1] = KeRemoveQueueDpc(&r->Dpc); /* not queued any more: FALSE */
    KeLowerIrql(old);                          /* nothing runs */
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    r->Inserted[1] = KeInsertQueueDpc(&r->Dpc, (PVOID)2, NULL);
    r->Removed[2] = KeRemoveQueueDpc(&r->Dpc);
    /* Inserted again while the removed one is still on the queue: runs once, with 3. */
    r->Inserted[2] = KeInsertQueueDpc(&r->Dpc, (PVOID)3, NULL);
    KeLowerIrql(old);
}

/* Out: runs, last argument; Inserted[3], Removed[3] as seen by the routine. */
ULONG ctest_remove_dpc(ULONG *Runs, ULONG_PTR *LastArg, BOOLEAN Inserted[3],
                       BOOLEAN Removed[3]) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    REMOVE r;
    memset(&r, 0, sizeof r);
    ULONG code = NtspinRunOnProcessor(m, 0, remove_routine, &r, NULL);
    NtspinMachineDestroy(m);
    *Runs = r.Runs;
    *LastArg = r.LastArg;
    for (int i = 0; i < 3; i++) {
        Inserted[i] = r.Inserted[i];
        Removed[i] = r.Removed[i];
    }
    return code;
}
