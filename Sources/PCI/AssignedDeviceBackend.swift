/// Interrupt mode the guest selected for an assigned function.
public enum AssignedInterruptMode: Equatable, Sendable {
    /// Nothing enabled (INTx pin 0, no GSI, or everything disabled).
    case none
    /// The level line to the IOAPIC input `gsi` (resampled by the VMM).
    case intx(gsi: UInt32)
    /// MSI enabled with this many vectors (always 1 here).
    case msi(vectors: Int)
    /// MSI-X enabled: all `vectors` of the table get host eventfds.
    case msix(vectors: Int)
}

/// What an assigned function's model needs from the real device. The VMM
/// implements it with a VFIO device cdev: pread/pwrite of the config region
/// and the BAR regions, and VFIO_DEVICE_SET_IRQS. Called from vCPU threads
/// (config accesses with the model's lock held); implementations must not
/// call back into the model.
public protocol AssignedDeviceBackend: AnyObject, Sendable {
    /// The real device's config space. Failed reads fill 0xFF.
    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer)
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer)
    /// A BAR access that is not served by a direct mapping (index 0-5, 6 = ROM).
    func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer)
    func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer)
    /// The guest switched interrupt mode; the VMM reprograms VFIO (MSI/MSI-X
    /// vectors are signalled through the eventfds the MSIRouter holds for
    /// (device, vector)). Errors are the backend's to log.
    func setInterruptMode(_ mode: AssignedInterruptMode)
}

/// A BAR of the real device, from VFIO region info plus its config bits.
public struct AssignedBar: Equatable, Sendable {
    /// 0...5 (a 64-bit BAR has the index of its low register), or
    /// `PCIBarRegion.romIndex` for the expansion ROM.
    public let index: Int
    /// The VFIO region size (VFIO_DEVICE_GET_REGION_INFO `size`, which is
    /// the host's `pci_resource_len`). Accesses at or beyond it read all ones.
    public let size: UInt64
    /// What the guest's sizing sees: `size` rounded up to a power of two and
    /// to the kind's minimum (16 bytes memory, 4 bytes I/O, 2 KiB ROM).
    public let decodeSize: UInt64
    public let kind: PCIBarKind
    public let prefetchable: Bool

    public init(index: Int, size: UInt64, decodeSize: UInt64, kind: PCIBarKind, prefetchable: Bool) {
        self.index = index
        self.size = size
        self.decodeSize = decodeSize
        self.kind = kind
        self.prefetchable = prefetchable
    }
}

/// A capability found in the real device's list (PCI 3.0 §6.7).
public struct AssignedCapability: Equatable, Sendable {
    public let id: UInt8
    /// Offset in config space (the same for the guest when kept).
    public let offset: Int
    /// Bytes it covers: for a kept MSI / MSI-X capability the emulated
    /// bytes, for a hidden one the bytes that read 0, for a kept
    /// passed-through one its structure's size.
    public let length: Int

    public init(id: UInt8, offset: Int, length: Int) {
        self.id = id
        self.offset = offset
        self.length = length
    }
}
