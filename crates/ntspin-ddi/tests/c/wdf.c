/* C tests of the KMDF interrupt routines (wdf.h) and the host's framework devices, called
   from tests/c_abi.rs. */
#include <ntspin/host.h>
#include <ntspin/wdf.h>

#include <stddef.h>

_Static_assert(sizeof(WDF_INTERRUPT_CONFIG) == 104, "WDF_INTERRUPT_CONFIG: x64 layout");
_Static_assert(offsetof(WDF_INTERRUPT_CONFIG, EvtInterruptIsr) == 24, "EvtInterruptIsr at 24");
_Static_assert(offsetof(WDF_INTERRUPT_CONFIG, PassiveHandling) == 88, "PassiveHandling at 88");

#define VECTOR 12
#define DIRQL 7

typedef struct {
    NTSPIN_MACHINE *Machine;
    WDFDEVICE Device;
    WDFINTERRUPT Interrupt;
    NTSTATUS CreateStatus;
    ULONG Pending;   /* device register: shared with the ISR under the interrupt lock */
    ULONG Inbox;     /* the ISR's, taken by the DPC under the lock */
    ULONG Handled;
    ULONG Isrs;
    ULONG Dpcs;
    ULONG Enables;
    ULONG Disables;
    ULONG EnabledAtDirql; /* EvtInterruptEnable ran at DIRQL holding the lock */
    ULONG WrongDevice;
    ULONG Posts;
} WDEV;

/* No object context space is modelled: the callbacks find their device's state through
   WdfInterruptGetDevice (tests run in parallel, each with its own device). */
#define MAX_DEVICES 16
static WDEV *volatile registry[MAX_DEVICES];

static void register_device(WDEV *d) {
    for (int i = 0; i < MAX_DEVICES; i++) {
        if (__atomic_compare_exchange_n(&registry[i], &(WDEV *){NULL}, d, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            return;
        }
    }
}

static void unregister_device(WDEV *d) {
    for (int i = 0; i < MAX_DEVICES; i++) {
        if (registry[i] == d) {
            registry[i] = NULL;
        }
    }
}

static WDEV *dev_of(WDFDEVICE Device) {
    for (int i = 0; i < MAX_DEVICES; i++) {
        WDEV *d = registry[i];
        if (d != NULL && d->Device == Device) {
            return d;
        }
    }
    return NULL;
}

static BOOLEAN evt_isr(WDFINTERRUPT Interrupt, ULONG MessageID) {
    (void)MessageID;
    WDEV *d = dev_of(WdfInterruptGetDevice(Interrupt));
    if (d->Pending == 0) {
        return FALSE;
    }
    d->Inbox += d->Pending;
    d->Pending = 0;
    d->Isrs++;
    WdfInterruptQueueDpcForIsr(Interrupt);
    return TRUE;
}

static VOID evt_dpc(WDFINTERRUPT Interrupt, WDFOBJECT Associated) {
    WDEV *d = dev_of((WDFDEVICE)Associated);
    if (WdfInterruptGetDevice(Interrupt) != d->Device) {
        d->WrongDevice++;
    }
    WdfInterruptAcquireLock(Interrupt);
    d->Handled += d->Inbox;
    d->Inbox = 0;
    WdfInterruptReleaseLock(Interrupt);
    d->Dpcs++;
}

static NTSTATUS evt_enable(WDFINTERRUPT Interrupt, WDFDEVICE Device) {
    WDEV *d = dev_of(Device);
    if (WdfInterruptGetDevice(Interrupt) != Device) {
        d->WrongDevice++;
    }
    d->Enables++;
    d->EnabledAtDirql += KeGetCurrentIrql() == DIRQL && Device == d->Device;
    return STATUS_SUCCESS;
}

static NTSTATUS evt_disable(WDFINTERRUPT Interrupt, WDFDEVICE Device) {
    (void)Interrupt;
    dev_of(Device)->Disables++;
    return STATUS_SUCCESS;
}

static VOID device_add(PVOID Context) {
    WDEV *d = (WDEV *)Context;
    WDF_INTERRUPT_CONFIG config;
    WDF_INTERRUPT_CONFIG_INIT(&config, evt_isr, evt_dpc);
    config.EvtInterruptEnable = evt_enable;
    config.EvtInterruptDisable = evt_disable;
    d->CreateStatus = WdfInterruptCreate(d->Device, &config, WDF_NO_OBJECT_ATTRIBUTES,
                                         &d->Interrupt);
}

static BOOLEAN post(WDFINTERRUPT Interrupt, WDFCONTEXT Context) {
    (void)Interrupt;
    ((WDEV *)Context)->Pending++;
    return TRUE;
}

static VOID io(PVOID Context) {
    WDEV *d = (WDEV *)Context;
    for (ULONG i = 0; i < d->Posts; i++) {
        WdfInterruptSynchronize(d->Interrupt, post, d);
        NtspinAssertInterrupt(d->Machine, VECTOR);
    }
}

/* The DIRQL scenario: EvtDriverDeviceAdd creates the interrupt, the host starts the
   device, I/O posts and asserts, the DPC completes under WdfInterruptAcquireLock, the host
   stops the device. Out: Handled, Isrs, Dpcs, Enables, Disables, EnabledAtDirql,
   WrongDevice, CreateStatus, StartStatus, StopStatus, SecondStart. */
ULONG ctest_wdf_dirql(ULONG Posts, ULONG Out[11]) {
    static WDEV d;
    WDEV zero = {0};
    d = zero;
    d.Machine = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    d.Device = NtspinWdfDeviceCreate(d.Machine, VECTOR, DIRQL);
    register_device(&d);
    d.Posts = Posts;
    ULONG code = NtspinRunOnProcessor(d.Machine, 1, device_add, &d, NULL);
    NTSTATUS start = NtspinWdfDeviceStart(d.Device);
    NTSTATUS second = NtspinWdfDeviceStart(d.Device);
    if (code == 0 && start == STATUS_SUCCESS) {
        code = NtspinRunOnProcessor(d.Machine, 0, io, &d, NULL);
        NtspinDrain(d.Machine);
    }
    NTSTATUS stop = NtspinWdfDeviceStop(d.Device);
    NtspinMachineDestroy(d.Machine);
    unregister_device(&d);
    Out[0] = d.Handled;
    Out[1] = d.Isrs;
    Out[2] = d.Dpcs;
    Out[3] = d.Enables;
    Out[4] = d.Disables;
    Out[5] = d.EnabledAtDirql;
    Out[6] = d.WrongDevice;
    Out[7] = (ULONG)d.CreateStatus;
    Out[8] = (ULONG)start;
    Out[9] = (ULONG)stop;
    Out[10] = (ULONG)second;
    return code;
}

/* ---- WDF-HANDLE: a forged WDFINTERRUPT ---- */

static VOID forged_handle(PVOID Context) {
    int *after = (int *)Context;
    WdfInterruptAcquireLock((WDFINTERRUPT)(ULONG_PTR)0xBAD0);
    *after = 1;
}

ULONG ctest_wdf_forged(ULONG_PTR Params[4], int *After) {
    NTSPIN_MACHINE *m = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    ULONG code = NtspinRunOnProcessor(m, 0, forged_handle, After, Params);
    NtspinMachineDestroy(m);
    return code;
}

/* ---- WDF-STATE: WdfInterruptAcquireLock after WdfInterruptDisable ---- */

static VOID disabled_then_lock(PVOID Context) {
    WDEV *d = (WDEV *)Context;
    WdfInterruptDisable(d->Interrupt);
    WdfInterruptAcquireLock(d->Interrupt);
    d->Posts = 99; /* never reached */
}

ULONG ctest_wdf_state(ULONG_PTR Params[4], ULONG_PTR *Interrupt) {
    static WDEV d;
    WDEV zero = {0};
    d = zero;
    d.Machine = NtspinMachineCreate(1, NTSPIN_VERIFIER_STANDARD);
    d.Device = NtspinWdfDeviceCreate(d.Machine, VECTOR, DIRQL);
    register_device(&d);
    ULONG code = NtspinRunOnProcessor(d.Machine, 0, device_add, &d, NULL);
    if (code == 0 && NtspinWdfDeviceStart(d.Device) == STATUS_SUCCESS) {
        code = NtspinRunOnProcessor(d.Machine, 0, disabled_then_lock, &d, Params);
    }
    *Interrupt = (ULONG_PTR)d.Interrupt;
    NtspinMachineDestroy(d.Machine); /* the device is still "started": destroy stops it */
    unregister_device(&d);
    return code;
}

/* ---- passive-level handling with a work item; TryToAcquireLock ---- */

static ULONG passive_runs, passive_irql_bad, work_items, tried, busy;
static WDFINTERRUPT passive_interrupt;

static BOOLEAN passive_isr(WDFINTERRUPT Interrupt, ULONG MessageID) {
    (void)MessageID;
    passive_runs++;
    passive_irql_bad += KeGetCurrentIrql() != PASSIVE_LEVEL;
    WdfInterruptQueueWorkItemForIsr(Interrupt);
    return TRUE;
}

static VOID passive_work(WDFINTERRUPT Interrupt, WDFOBJECT Associated) {
    (void)Interrupt;
    (void)Associated;
    passive_irql_bad += KeGetCurrentIrql() != PASSIVE_LEVEL;
    work_items++;
}

static VOID passive_add(PVOID Context) {
    WDFDEVICE device = (WDFDEVICE)Context;
    WDF_INTERRUPT_CONFIG config;
    WDF_INTERRUPT_CONFIG_INIT(&config, passive_isr, NULL);
    config.PassiveHandling = TRUE;
    config.EvtInterruptWorkItem = passive_work;
    if (WdfInterruptCreate(device, &config, WDF_NO_OBJECT_ATTRIBUTES, &passive_interrupt) !=
        STATUS_SUCCESS) {
        passive_interrupt = NULL;
    }
}

static VOID passive_try(PVOID Context) {
    (void)Context;
    if (WdfInterruptTryToAcquireLock(passive_interrupt)) {
        tried++;
        WdfInterruptReleaseLock(passive_interrupt);
    } else {
        busy++;
    }
}

/* Out: ISR runs, work items, bad IRQLs, successful tries. */
ULONG ctest_wdf_passive(ULONG Asserts, ULONG Out[4]) {
    passive_runs = passive_irql_bad = work_items = tried = busy = 0;
    NTSPIN_MACHINE *m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
    WDFDEVICE device = NtspinWdfDeviceCreate(m, 13, 5);
    ULONG code = NtspinRunOnProcessor(m, 0, passive_add, device, NULL);
    if (code == 0 && passive_interrupt != NULL && NtspinWdfDeviceStart(device) == 0) {
        for (ULONG i = 0; i < Asserts; i++) {
            NtspinAssertInterrupt(m, 13);
            NtspinDrain(m);
        }
        code = NtspinRunOnProcessor(m, 1, passive_try, NULL, NULL);
        NtspinWdfDeviceStop(device);
    }
    NtspinMachineDestroy(m);
    Out[0] = passive_runs;
    Out[1] = work_items;
    Out[2] = passive_irql_bad;
    Out[3] = tried;
    return code;
}
