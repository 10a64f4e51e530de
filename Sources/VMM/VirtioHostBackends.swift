import HostSys
import Virtio

// The host files behind virtio devices. The protocols belong to the device
// layer and the types to HostSys, which cannot see each other; the VMM,
// which sees both, glues them, so Virtio does not depend on HostSys.

/// The host image file is a block backend as it stands: `BlockFile` already
/// has `capacity`, `isReadOnly`, `read(at:into:)`, `write(at:from:)` and
/// `flush()`.
extension BlockFile: BlockBackend {}

/// io_uring on the image is the device's asynchronous I/O as it stands.
extension BlockFileRing: BlockAsyncIO {}

/// A tap interface is a network backend: transmitted frames are written to
/// it whole.
extension TapDevice: NetBackend {
    public func send(frame: [UInt8]) throws {
        try writeFrame(frame)
    }
}
