/// Where a virtio network device's transmitted frames go. The VMM uses
/// `TapDevice` (HostSys); tests record frames.
///
/// Frames are bare Ethernet frames: the device has already stripped the
/// virtio-net header (§5.1.6). Receiving goes the other way: the VMM's
/// reader thread calls `VirtioNet.receive(frame:)`.
public protocol NetBackend: AnyObject, Sendable {
    /// Sends one frame. A throw counts as a transmit error and drops the
    /// frame; the device keeps running.
    func send(frame: [UInt8]) throws
}
