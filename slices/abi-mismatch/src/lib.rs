//! Test slice: exports the descriptor symbol with an ABI version the host does not speak: the one
//! before the current, as a library built against an older SDK would.
//!
//! Only the first field (the version) is laid out as the host expects; the host must refuse the
//! library after reading it, read nothing else, and say which SDK to rebuild against.

/// A descriptor from an older ABI: the version first, then a layout the host no longer knows.
#[repr(C)]
pub struct OldDescriptor {
    abi_version: u32,
    unknown: [u32; 7],
}

static DESCRIPTOR: OldDescriptor = OldDescriptor { abi_version: aether_sdk::abi::ABI_VERSION - 1, unknown: [0; 7] };

/// The descriptor the host looks up by name.
#[unsafe(no_mangle)]
pub extern "C" fn aether_slice_descriptor() -> *const aether_sdk::abi::SliceDescriptor {
    std::ptr::from_ref(&DESCRIPTOR).cast()
}
