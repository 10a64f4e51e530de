import Devices

/// What the root bus talks to: one PCI function. Every method is called from
/// vCPU threads with guest-chosen offsets and widths; none may trap.
public protocol PCIDevice: AnyObject, Sendable {
    /// Config read at any width (normally 1, 2 or 4) and any offset; bytes
    /// outside the function's config space read 0xFF.
    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer)
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer)
    /// Current BAR regions as the guest has programmed them (address 0 /
    /// unassigned excluded, a disabled expansion ROM excluded). The bus applies
    /// the Command register's I/O and memory enables on top.
    var barRegions: [PCIBarRegion] { get }
    /// An access at `offset` into BAR `index` (6 = expansion ROM). The bus
    /// only sends accesses that lie wholly inside the BAR.
    func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer)
    func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer)
    /// Called once by `PCIRootBus.attach`, after the BARs are assigned and
    /// before decoding is enabled. Default: nothing.
    func attached(_ context: PCIAttachContext)
}

extension PCIDevice {
    public func attached(_ context: PCIAttachContext) {}
}

/// What a device learns when it is attached.
public struct PCIAttachContext: Sendable {
    public let address: PCIAddress
    /// Where its MSI / MSI-X vectors go (nil when the VMM has none).
    public let msiRouter: MSIRouter?
    /// Its INTx line (already shared with the other functions on the same
    /// GSI), or nil when the function has no interrupt pin or the VMM gave
    /// the bus no lines.
    public let intx: InterruptLine?
    /// The IOAPIC input its pin is routed to (also written to Interrupt Line).
    public let intxGSI: UInt32?

    public init(address: PCIAddress, msiRouter: MSIRouter?, intx: InterruptLine?, intxGSI: UInt32?) {
        self.address = address
        self.msiRouter = msiRouter
        self.intx = intx
        self.intxGSI = intxGSI
    }
}
