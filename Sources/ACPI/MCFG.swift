/// PCI Express memory mapped configuration space base address Description
/// Table, signature "MCFG" (PCI Firmware 3.2 §4.1.2): the
/// SDT header (revision 1), 8 reserved bytes, then one 16-byte allocation
/// per ECAM range.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 36 | Header, revision 1 |
/// | 36 | 8 | Reserved |
/// | 44 + 16n | 8 | Base address of the ECAM space of bus 0 of the segment |
/// | 52 + 16n | 2 | PCI segment group number |
/// | 54 + 16n | 1 | Start bus number |
/// | 55 + 16n | 1 | End bus number |
/// | 56 + 16n | 4 | Reserved |
///
/// The base address is where bus 0 would be even when the start bus is
/// higher (Linux: bus N at `base + N << 20`, `pci_mmconfig_alloc`).
public enum MCFG {
    public static let signature = "MCFG"
    public static let revision: UInt8 = 1
    static let reservedLength = 8
    public static let allocationLength = 16

    public struct Allocation: Hashable, Sendable {
        public var base: UInt64
        public var segment: UInt16
        public var buses: ClosedRange<UInt8>

        public init(base: UInt64, segment: UInt16 = 0, buses: ClosedRange<UInt8>) {
            self.base = base
            self.segment = segment
            self.buses = buses
        }
    }

    public static func length(allocations: Int) -> Int {
        SDTHeader.length + reservedLength + allocationLength * allocations
    }

    public static func build(allocations: [Allocation]) throws -> [UInt8] {
        var body = [UInt8](repeating: 0, count: reservedLength)
        for a in allocations {
            body.appendLE(a.base)
            body.appendLE(a.segment)
            body.append(a.buses.lowerBound)
            body.append(a.buses.upperBound)
            body.appendLE(UInt32(0))
        }
        return try SDTHeader.table(signature: signature, revision: revision, body: body)
    }

    /// The MCFG for `bridge`: segment 0, its buses.
    static func build(bridge: ACPIMachine.PCIHostBridge) throws -> [UInt8] {
        try build(allocations: [Allocation(base: bridge.ecamBase, segment: 0, buses: bridge.buses)])
    }
}
