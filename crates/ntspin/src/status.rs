//! `NTSTATUS`: the result codes the connect routines return.

use core::fmt;

/// An `NTSTATUS` value. Negative (high bit set) is an error.
///
/// ```
/// use ntspin::NtStatus;
/// assert!(NtStatus::SUCCESS.is_success());
/// assert!(!NtStatus::INVALID_PARAMETER.is_success());
/// assert_eq!(NtStatus::INVALID_PARAMETER.to_string(), "STATUS_INVALID_PARAMETER (0xc000000d)");
/// ```
#[doc(alias = "NTSTATUS")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NtStatus(pub i32);

impl NtStatus {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: NtStatus = NtStatus(0);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: NtStatus = NtStatus(0xC000_000Du32 as i32);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: NtStatus = NtStatus(0xC000_009Au32 as i32);
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: NtStatus = NtStatus(0xC000_00BBu32 as i32);
    /// `STATUS_INVALID_DEVICE_STATE`.
    pub const INVALID_DEVICE_STATE: NtStatus = NtStatus(0xC000_0184u32 as i32);

    /// `NT_SUCCESS`: not an error.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            NtStatus::SUCCESS => "STATUS_SUCCESS",
            NtStatus::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            NtStatus::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            NtStatus::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            NtStatus::INVALID_DEVICE_STATE => "STATUS_INVALID_DEVICE_STATE",
            _ => return None,
        })
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#x})", self.0 as u32),
            None => write!(f, "NTSTATUS({:#x})", self.0 as u32),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
