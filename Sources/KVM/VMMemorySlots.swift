/// A VM's memory slots as the VMM glue sees it: host memory placed in guest
/// physical space (guest RAM at boot, an assigned device's BAR pages wherever
/// the guest puts the BAR). `VirtualMachine` implements it with
/// `KVM_SET_USER_MEMORY_REGION`; unit tests hand the glue a recorder.
public protocol VMMemorySlots: AnyObject, Sendable {
    /// Maps `size` bytes of this process's memory at `hostAddress` into the
    /// guest at `guestAddress` as slot `slot`, replacing what the slot held;
    /// size 0 deletes the slot (KVM's convention).
    func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool) throws
}

extension VMMemorySlots {
    /// A read-write slot.
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64) throws {
        try setUserMemoryRegion(slot: slot, guestAddress: guestAddress, size: size, hostAddress: hostAddress, readOnly: false)
    }

    /// Deletes slot `slot` (a region of size 0).
    public func deleteUserMemoryRegion(slot: UInt32) throws {
        try setUserMemoryRegion(slot: slot, guestAddress: 0, size: 0, hostAddress: 0, readOnly: false)
    }
}

extension VirtualMachine: VMMemorySlots {}
