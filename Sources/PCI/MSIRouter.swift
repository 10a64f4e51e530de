import Bits

/// A message-signalled interrupt: a DWORD write of `data` to `address`
/// (PCI 3.0 §6.8). On x86 the address is in the 0xFEExxxxx window and encodes
/// the destination APIC; the data encodes vector and delivery mode.
public struct MSIMessage: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let address: UInt64
    public let data: UInt32

    public init(address: UInt64, data: UInt32) {
        self.address = address
        self.data = data
    }

    public var description: String { "MSI(\(hex(address)), \(hex(UInt64(data))))" }
}

/// Where MSI and MSI-X interrupts leave the PCI layer. The VMM implements it
/// with KVM GSI routing (KVM_SET_GSI_ROUTING) and one irqfd per vector; tests
/// implement it with a recorder.
///
/// Calls are made with the device's MSI/MSI-X lock held, so a `configure`
/// always reaches the router before the `signal` that depends on it.
/// Implementations must not call back into the device.
public protocol MSIRouter: AnyObject, Sendable {
    /// The guest changed vector `vector` of `device` (address/data/mask); the
    /// VMM updates its KVM GSI route. `nil`: the vector is disabled or
    /// masked (MSI-X disabled, function masked or vector masked), so nothing
    /// will be signalled until it is configured again. Only changes are
    /// reported. MSI uses vector 0 (a function never has MSI and MSI-X
    /// enabled at once, PCI 3.0 §6.8.2).
    func configure(device: PCIAddress, vector: Int, message: MSIMessage?)
    /// Deliver vector `vector` now (the VMM writes its irqfd). Only sent for
    /// a vector whose last `configure` carried a message.
    func signal(device: PCIAddress, vector: Int)
}
