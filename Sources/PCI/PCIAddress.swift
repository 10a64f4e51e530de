import Bits

/// A PCI function's location: segment (PCI domain), bus, device (slot) and
/// function, printed as Linux does ("0000:00:03.0").
public struct PCIAddress: Hashable, Sendable, CustomStringConvertible {
    public let segment: UInt16
    public let bus: UInt8
    /// Device number, 0...31 (5 bits; PCI 3.0 §3.2.2.3.2).
    public let device: UInt8
    /// Function number, 0...7 (3 bits; PCI 3.0 §3.2.2.3.2).
    public let function: UInt8

    public init(segment: UInt16 = 0, bus: UInt8 = 0, device: UInt8, function: UInt8 = 0) {
        self.segment = segment
        self.bus = bus
        self.device = device & 0x1F
        self.function = function & 0x07
    }

    public var description: String {
        "\(hexDigits(segment, width: 4)):\(hexDigits(bus, width: 2)):\(hexDigits(device, width: 2)).\(function)"
    }
}

/// The INTx pin a function uses, as the Interrupt Pin register (0x3D) encodes
/// it: 1 = INTA# ... 4 = INTD#; 0 means no pin (PCI 3.0 §6.2.4).
public enum PCIInterruptPin: UInt8, Sendable, CaseIterable {
    case intA = 1, intB, intC, intD
}
