import GuestMemory

/// How a device model signals the driver. The transport implements it (MSI-X
/// vectors or the ISR and an INTx line for virtio-pci); tests record calls.
/// Devices may call it from any thread, with their own lock held: an
/// implementation never calls back into the device.
public protocol VirtioInterrupt: AnyObject, Sendable {
    /// A used buffer notification for queue `index` (§2.3). The device has
    /// already asked the queue's `needsNotification`.
    func signalUsedQueue(_ index: Int)
    /// A configuration change notification (§2.3, §4.1.5.4).
    func signalConfigChange()
    /// The driver broke the protocol: the transport sets DEVICE_NEEDS_RESET,
    /// sends a configuration change notification (§2.1.2) and reports
    /// `error` to the VMM, which logs "guest error: ...". The device has
    /// already stopped using its queues.
    func deviceNeedsReset(_ error: VirtqueueError)
}

extension VirtioInterrupt {
    /// `deviceNeedsReset` for whatever stopped a device's queue processing:
    /// a `VirtqueueError` as it is, anything else as a device error.
    public func deviceNeedsReset(after error: any Error) {
        deviceNeedsReset(error as? VirtqueueError ?? .device("\(error)"))
    }
}

/// What a virtio device model implements; the transport (virtio-pci here)
/// owns status, feature negotiation and queue configuration, and hands the
/// device ready queues at DRIVER_OK.
///
/// Threading: every method may be called from any vCPU thread (config
/// accesses, notifications) or from the VMM (reset). A device locks its own
/// state. The transport never holds its lock while calling a device, so a
/// device may call its `VirtioInterrupt` with its lock held.
public protocol VirtioDevice: AnyObject, Sendable {
    /// The virtio device ID (§5), e.g. 4 for the entropy device.
    var deviceType: UInt16 { get }
    /// Device-type feature bits offered (§2.2: bits 0-23 and 50-127). The
    /// transport adds VIRTIO_F_VERSION_1 and the ring features it implements.
    var deviceFeatures: UInt64 { get }
    /// One entry per queue: the largest size the device supports (a power of
    /// 2, at most 32768, §2.7).
    var queueMaxSizes: [UInt16] { get }
    /// Bytes of device-specific configuration (§2.5); 0 when there is none.
    var configSize: Int { get }
    /// Reads device-specific configuration. `offset + data.count <= configSize`
    /// (the transport checks); any width.
    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer)
    /// Writes device-specific configuration, same bounds as `readConfig`.
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer)
    /// The driver set DRIVER_OK. `queues` has one entry per `queueMaxSizes`
    /// entry (`isEnabled` false for a queue the driver did not enable);
    /// `features` are the negotiated bits. Throwing puts the device in
    /// DEVICE_NEEDS_RESET.
    func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                  interrupt: VirtioInterrupt) throws
    /// The driver wrote 0 to the device status (§2.4): drop the queues and
    /// return to the initial state. Also called when a failed activation is
    /// undone.
    func reset()
    /// The same reset for a device that may have host I/O in flight on the
    /// driver's buffers: the device stops at once (no more requests taken,
    /// nothing answered), and `done` is called, on whichever thread sees the
    /// last transfer end, once nothing will touch guest memory for the old
    /// driver any more; at once when nothing is in flight. The transport
    /// shows device_status 0 only then, so a vCPU never waits for host I/O.
    /// The default resets synchronously, then calls `done`.
    func reset(then done: @escaping @Sendable () -> Void)
    /// An available buffer notification for queue `index` (§2.3), only
    /// delivered between `activate` and `reset`.
    func queueNotified(_ index: Int)
}

extension VirtioDevice {
    public func reset(then done: @escaping @Sendable () -> Void) {
        reset()
        done()
    }

    /// Copies `bytes[offset...]` into `data`, zero-filling past the end: the
    /// usual `readConfig` for a device whose configuration is a byte image.
    public func copyConfig(_ bytes: [UInt8], offset: Int, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count {
            let (o, overflow) = offset.addingReportingOverflow(i)
            data[i] = (!overflow && o >= 0 && o < bytes.count) ? bytes[o] : 0
        }
    }
}
