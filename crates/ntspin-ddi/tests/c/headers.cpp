// The headers compile as C++17 with -Wall -Wextra -Werror, and pin the WDK x64 layouts.
#include <ntspin/wdm.h>
#include <ntspin/host.h>
#include <ntspin/wdf.h>

static_assert(sizeof(KSPIN_LOCK) == 8, "KSPIN_LOCK is pointer-sized");
static_assert(sizeof(KLOCK_QUEUE_HANDLE) == 24, "KLOCK_QUEUE_HANDLE is 24 bytes");
static_assert(offsetof(KLOCK_QUEUE_HANDLE, OldIrql) == 16, "OldIrql at 16");
static_assert(sizeof(KDPC) == 64, "KDPC is 64 bytes");
static_assert(sizeof(LIST_ENTRY) == 16, "LIST_ENTRY is 16 bytes");
static_assert(sizeof(ULONG) == 4 && sizeof(LONG) == 4, "LLP64 ULONG/LONG");
static_assert(sizeof(ULONG_PTR) == sizeof(void *), "ULONG_PTR");
static_assert(sizeof(IO_CONNECT_INTERRUPT_PARAMETERS) == 80, "IO_CONNECT_INTERRUPT_PARAMETERS");
static_assert(offsetof(IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS, Vector) == 44, "Vector");
static_assert(sizeof(KINTERRUPT_MODE) == 4, "KINTERRUPT_MODE is an int");
static_assert(sizeof(WDF_INTERRUPT_CONFIG) == 104, "WDF_INTERRUPT_CONFIG");
static_assert(offsetof(WDF_INTERRUPT_CONFIG, PassiveHandling) == 88, "PassiveHandling");

extern "C" int ntspin_ddi_cxx_headers_ok(void) { return HIGH_LEVEL; }
