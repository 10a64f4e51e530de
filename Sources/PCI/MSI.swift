import Synchronization

/// Options of a function's MSI capability. The capability is always the
/// 64-bit-address form with a single vector (Multiple Message Capable = 0).
public struct MSIConfiguration: Equatable, Sendable {
    /// Per-vector masking: adds the Mask Bits and Pending Bits registers.
    public let perVectorMasking: Bool

    public init(perVectorMasking: Bool = true) {
        self.perVectorMasking = perVectorMasking
    }
}

/// MSI capability layout (PCI 3.0 §6.8.1, 64-bit form; pci_regs.h PCI_MSI_*).
public enum MSICapabilityLayout {
    public static let messageControl = 0x02 // PCI_MSI_FLAGS
    public static let addressLow = 0x04     // PCI_MSI_ADDRESS_LO
    public static let addressHigh = 0x08    // PCI_MSI_ADDRESS_HI
    public static let data = 0x0C           // PCI_MSI_DATA_64
    public static let maskBits = 0x10       // PCI_MSI_MASK_64
    public static let pendingBits = 0x14    // PCI_MSI_PENDING_64
    public static let enable: UInt16 = 0x0001            // PCI_MSI_FLAGS_ENABLE
    public static let multipleMessageEnable: UInt16 = 0x0070 // PCI_MSI_FLAGS_QSIZE
    public static let is64Bit: UInt16 = 0x0080           // PCI_MSI_FLAGS_64BIT
    public static let perVectorMaskCapable: UInt16 = 0x0100 // PCI_MSI_FLAGS_MASKBIT
    /// 24 bytes with mask and pending registers; 14 without, rounded up to
    /// 16 (bytes 14-15 are the optional Extended Message Data, PCIe 4.0
    /// §7.7.1.6, not implemented: read-only 0).
    public static func length(perVectorMasking: Bool) -> Int { perVectorMasking ? 24 : 16 }

    /// The capability's bytes and writable mask, for `addCapability`:
    /// Enable and Multiple Message Enable writable; address bits 1:0 read-only
    /// 0 (DWORD aligned, PCI 3.0 §6.8.1.4); 16-bit data; mask bit 0 writable;
    /// pending read-only.
    public static func bytes(for c: MSIConfiguration) -> (bytes: [UInt8], writableMask: [UInt8]) {
        let n = length(perVectorMasking: c.perVectorMasking)
        var control = is64Bit
        if c.perVectorMasking { control |= perVectorMaskCapable }
        var bytes = [UInt8](repeating: 0, count: n)
        bytes[0] = PCICapabilityID.msi
        bytes[messageControl] = UInt8(truncatingIfNeeded: control)
        bytes[messageControl + 1] = UInt8(truncatingIfNeeded: control >> 8)
        var mask = [UInt8](repeating: 0, count: n)
        mask[messageControl] = UInt8(enable | multipleMessageEnable)
        mask[addressLow] = 0xFC
        for i in 1..<4 { mask[addressLow + i] = 0xFF }
        for i in 0..<4 { mask[addressHigh + i] = 0xFF }
        mask[data] = 0xFF
        mask[data + 1] = 0xFF
        if c.perVectorMasking { mask[maskBits] = 0x01 }
        return (bytes, mask)
    }
}

/// The state behind a function's MSI capability (single vector), and its
/// delivery rules (PCI 3.0 §6.8.1.7-§6.8.1.8): with MSI enabled and the
/// vector unmasked, `trigger` delivers; while masked it sets the pending bit
/// and the interrupt is delivered when the vector is unmasked. With MSI
/// disabled nothing is sent and `trigger` returns false (the function uses
/// INTx instead). The router hears vector 0's effective message on change.
public final class MSICapability: Sendable {
    private struct State {
        var enabled = false
        var address: UInt64 = 0
        var data: UInt32 = 0
        var masked = false
        var pending = false
        var router: MSIRouter?
        var device: PCIAddress?
        var configured: MSIMessage?
    }

    public let configuration: MSIConfiguration
    /// Offset of the capability in config space.
    public let offset: Int
    private let state = Mutex(State())

    init(configuration: MSIConfiguration, offset: Int) {
        self.configuration = configuration
        self.offset = offset
    }

    public var isEnabled: Bool { state.withLock { $0.enabled } }
    public var isMasked: Bool { state.withLock { $0.masked } }
    public var isPending: Bool { state.withLock { $0.pending } }
    /// The programmed address and data (whether or not enabled).
    public var message: MSIMessage { state.withLock { MSIMessage(address: $0.address, data: $0.data) } }

    func attach(router: MSIRouter?, device: PCIAddress) {
        state.withLock { s in
            s.router = router
            s.device = device
            s.configured = nil
            Self.update(&s)
        }
    }

    /// Reloads the registers from config space after a guest write.
    func load(from config: PCIConfigSpace) {
        typealias L = MSICapabilityLayout
        let control = config.read16(offset + L.messageControl)
        state.withLock { s in
            s.enabled = control & L.enable != 0
            s.address = UInt64(config.read32(offset + L.addressHigh)) << 32 | UInt64(config.read32(offset + L.addressLow))
            s.data = UInt32(config.read16(offset + L.data))
            s.masked = configuration.perVectorMasking && config.read32(offset + L.maskBits) & 1 != 0
            Self.update(&s)
        }
    }

    /// The Pending Bits register value (bit 0), for config reads.
    var pendingRegister: UInt32 { state.withLock { $0.pending ? 1 : 0 } }

    /// Raises the vector. Returns false when MSI is disabled (nothing sent,
    /// nothing pending), true when it was delivered or left pending.
    @discardableResult
    public func trigger() -> Bool {
        state.withLock { s in
            guard s.enabled else { return false }
            if !s.masked, s.configured != nil, let r = s.router, let d = s.device {
                r.signal(device: d, vector: 0)
            } else {
                s.pending = true
            }
            return true
        }
    }

    private static func update(_ s: inout State) {
        let desired: MSIMessage? = s.enabled && !s.masked ? MSIMessage(address: s.address, data: s.data) : nil
        guard let router = s.router, let device = s.device else { return }
        if desired != s.configured {
            s.configured = desired
            router.configure(device: device, vector: 0, message: desired)
        }
        if desired != nil, s.pending {
            s.pending = false
            router.signal(device: device, vector: 0)
        }
    }
}
