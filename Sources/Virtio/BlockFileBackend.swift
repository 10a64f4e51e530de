import HostSys

/// The host image file is a block backend as it stands: `BlockFile` already
/// has `capacity`, `isReadOnly`, `read(at:into:)`, `write(at:from:)` and
/// `flush()`. The conformance lives here, not in HostSys, because the
/// protocol belongs to the device layer (HostSys cannot see Virtio); this is
/// the only Virtio file that imports HostSys, for the type name alone.
extension BlockFile: BlockBackend {}
