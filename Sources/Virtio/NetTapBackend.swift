import HostSys

/// A tap interface is a network backend: transmitted frames are written to
/// it whole. The conformance lives here because the protocol belongs to the
/// device layer (HostSys cannot see Virtio); this file imports HostSys for
/// the type name alone.
extension TapDevice: NetBackend {
    public func send(frame: [UInt8]) throws {
        try writeFrame(frame)
    }
}
