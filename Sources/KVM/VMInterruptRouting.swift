import HostSys

/// A VM's interrupt plumbing as the VMM glue sees it: lines of the in-kernel
/// irqchip, the GSI routing table, irqfds (an eventfd write raises a GSI)
/// and ioeventfds (a guest write signals an eventfd, the doorbell the other
/// way). `VirtualMachine` implements it with KVM's ioctls; unit tests hand the
/// glue (`KVMMSIRouter`, `VirtioNotifier`, the passthrough device) a recorder
/// instead, so they run without `/dev/kvm`.
///
/// Implementations throw their own errors (`KVMError` for the real VM).
public protocol VMInterruptRouting: AnyObject, Sendable {
    /// Drives `irq` of the in-kernel irqchip to `level` (`KVM_IRQ_LINE`).
    func setIRQLine(_ irq: UInt32, level: Bool) throws
    /// Replaces the whole GSI routing table (`KVM_SET_GSI_ROUTING`).
    func setGSIRouting(_ routes: [GSIRoute]) throws
    /// Makes a write to `event` raise `gsi`; with `resample`, a level line
    /// whose EOI signals `resample` (`KVM_IRQFD`).
    func registerIRQFD(_ event: EventFD, gsi: UInt32, resample: EventFD?) throws
    /// Undoes `registerIRQFD` for `event` on `gsi` (`KVM_IRQFD` deassign).
    func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws
    /// Makes guest writes of `length` bytes at `address` (MMIO, or port I/O
    /// with `pio`) signal `event` without a userspace exit; with `datamatch`,
    /// only writes of that value (`KVM_IOEVENTFD`).
    func registerIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws
    /// Undoes `registerIOEventFD`; the arguments must match the registration
    /// (`KVM_IOEVENTFD` deassign).
    func unregisterIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws
}

extension VMInterruptRouting {
    /// An edge-triggered irqfd (MSI routes, no resample).
    public func registerIRQFD(_ event: EventFD, gsi: UInt32) throws {
        try registerIRQFD(event, gsi: gsi, resample: nil)
    }

    /// An MMIO ioeventfd that fires on any value.
    public func registerIOEventFD(_ event: EventFD, address: UInt64, length: UInt32) throws {
        try registerIOEventFD(event, address: address, length: length, pio: false, datamatch: nil)
    }

    /// Removes an MMIO ioeventfd registered without a datamatch.
    public func unregisterIOEventFD(_ event: EventFD, address: UInt64, length: UInt32) throws {
        try unregisterIOEventFD(event, address: address, length: length, pio: false, datamatch: nil)
    }
}

extension VirtualMachine: VMInterruptRouting {}
