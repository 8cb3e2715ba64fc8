/* ntspin/host.h: drive the simulated machine from C. */
#ifndef NTSPIN_HOST_H
#define NTSPIN_HOST_H

#include "wdf.h"
#include "wdm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NTSPIN_MACHINE NTSPIN_MACHINE;

#define NTSPIN_VERIFIER_STANDARD 0x0 /* every rule, stop at the first bug check */
#define NTSPIN_VERIFIER_OFF 0x1      /* like a retail kernel */

/* A machine with ProcessorCount (1..=4096) virtual processors; NULL if the count or the
   flags are invalid. */
NTSPIN_MACHINE *NtspinMachineCreate(ULONG ProcessorCount, ULONG Flags);
/* Safe with interrupts still connected: they are disconnected first. */
VOID NtspinMachineDestroy(NTSPIN_MACHINE *Machine);
/* Runs Routine(Context) at PASSIVE_LEVEL on processor Processor, waits for it.
   Returns 0 if it returned normally, else the bug check code that stopped the machine,
   with P1..P4 stored in Parameters when it is not NULL. */
ULONG NtspinRunOnProcessor(NTSPIN_MACHINE *Machine, ULONG Processor,
                           VOID (*Routine)(PVOID Context), PVOID Context,
                           ULONG_PTR Parameters[4]);
/* Runs Routine(ProcessorNumber, Context) on every processor at once; same return. */
ULONG NtspinRunOnAllProcessors(NTSPIN_MACHINE *Machine,
                               VOID (*Routine)(ULONG Processor, PVOID Context), PVOID Context,
                               ULONG_PTR Parameters[4]);
/* A device asserts interrupt line Vector; delivery is asynchronous. Any thread, any time;
   each call is one request, never lost. A vector outside 0..63 is ignored. */
VOID NtspinAssertInterrupt(NTSPIN_MACHINE *Machine, ULONG Vector);
/* Returns when every asserted interrupt, queued DPC and passive ISR has been handled (or
   the machine bug-checked; it gives up after 60 s and says so on stderr). */
VOID NtspinDrain(NTSPIN_MACHINE *Machine);
/* A device with one interrupt resource (line Vector at Irql, above DISPATCH_LEVEL; for a
   passive-level interrupt, the level its line is acknowledged at), for WdfInterruptCreate;
   NULL for an invalid vector or level. Started and stopped as a PnP manager would (start:
   connect + EvtInterruptEnable; stop: EvtInterruptDisable + disconnect), on a processor of
   the machine in a PASSIVE system-thread context. Start/Stop are called from the host
   thread; they return STATUS_INVALID_DEVICE_STATE when already started / not started.
   NtspinMachineDestroy stops and frees the machine's devices. */
WDFDEVICE NtspinWdfDeviceCreate(NTSPIN_MACHINE *Machine, ULONG Vector, KIRQL Irql);
NTSTATUS NtspinWdfDeviceStart(WDFDEVICE Device);
NTSTATUS NtspinWdfDeviceStop(WDFDEVICE Device);

#ifdef __cplusplus
}
#endif

#endif /* NTSPIN_HOST_H */
