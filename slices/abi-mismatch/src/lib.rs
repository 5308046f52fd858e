//! Test slice: exports the descriptor symbol with an ABI version the host does not speak.
//!
//! Only the first field (the version) is laid out as the host expects; the host must refuse the
//! library after reading it and read nothing else.

/// A descriptor from a future ABI: the version first, then a layout the host does not know.
#[repr(C)]
pub struct FutureDescriptor {
    abi_version: u32,
    unknown: [u32; 7],
}

static DESCRIPTOR: FutureDescriptor = FutureDescriptor { abi_version: sdk::abi::ABI_VERSION + 1, unknown: [0; 7] };

/// The descriptor the host looks up by name.
#[unsafe(no_mangle)]
pub extern "C" fn aether_slice_descriptor() -> *const sdk::abi::SliceDescriptor {
    std::ptr::from_ref(&DESCRIPTOR).cast()
}
