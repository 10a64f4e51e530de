import Bits
import Synchronization

/// Where a function's MSI-X table and PBA live (PCI 3.0 §6.8.2).
public struct MSIXConfiguration: Equatable, Sendable {
    /// Table Size is an 11-bit N-1 field (PCI_MSIX_FLAGS_QSIZE 0x07FF).
    public static let maxVectors = 2048
    /// PCI_MSIX_ENTRY_SIZE: address lo, address hi, data, vector control.
    public static let entrySize: UInt64 = 16

    public let vectors: Int
    /// BAR indicator (BIR) of the table: 0...5.
    public let tableBar: Int
    /// Offset of the table in its BAR; 8-byte aligned (the low three bits of
    /// the register are the BIR; PCI_MSIX_TABLE_OFFSET 0xFFFFFFF8).
    public let tableOffset: UInt32
    public let pbaBar: Int
    public let pbaOffset: UInt32

    public init(vectors: Int, tableBar: Int, tableOffset: UInt32, pbaBar: Int, pbaOffset: UInt32) {
        self.vectors = vectors
        self.tableBar = tableBar
        self.tableOffset = tableOffset
        self.pbaBar = pbaBar
        self.pbaOffset = pbaOffset
    }

    /// 16 bytes per vector.
    public var tableSize: UInt64 { UInt64(max(vectors, 0)) * Self.entrySize }
    /// One bit per vector, in QWORDs (PCI 3.0 §6.8.2.7).
    public var pbaSize: UInt64 { (UInt64(max(vectors, 0)) + 63) / 64 * 8 }

    /// Checks the layout against the BARs `config` declares.
    func validate(against config: PCIConfigSpace) throws {
        guard vectors >= 1, vectors <= Self.maxVectors else {
            throw PCIError.invalidMSIX("\(vectors) vectors; a function has 1...2048")
        }
        guard tableOffset & 7 == 0, pbaOffset & 7 == 0 else {
            throw PCIError.invalidMSIX("table and PBA offsets must be 8-byte aligned (the low 3 bits are the BIR)")
        }
        for (what, bar, offset, size) in [("table", tableBar, tableOffset, tableSize), ("PBA", pbaBar, pbaOffset, pbaSize)] {
            guard let d = config.barDefinition(bar), d.kind.isMemory else {
                throw PCIError.invalidMSIX("the \(what) is in BAR \(bar), which is not a memory BAR of this function")
            }
            let (end, o) = UInt64(offset).addingReportingOverflow(size)
            guard !o, end <= d.size else {
                throw PCIError.invalidMSIX("the \(what) (\(hex(UInt64(offset)))+\(hex(size))) does not fit in BAR \(bar) (\(formatSize(d.size)))")
            }
        }
        if tableBar == pbaBar {
            let t0 = UInt64(tableOffset), p0 = UInt64(pbaOffset)
            if t0 < p0 + pbaSize && p0 < t0 + tableSize {
                throw PCIError.invalidMSIX("the table and the PBA overlap")
            }
        }
    }
}

/// The MSI-X capability structure (PCI 3.0 §6.8.2; pci_regs.h PCI_MSIX_*):
/// ID 0x11, next, Message Control (Table Size N-1 read-only, Function Mask
/// bit 14 and MSI-X Enable bit 15 writable), Table Offset/BIR, PBA Offset/BIR.
public enum MSIXCapability {
    public static let length = 12
    public static let messageControl = 2    // PCI_MSIX_FLAGS
    public static let tableRegister = 4     // PCI_MSIX_TABLE
    public static let pbaRegister = 8       // PCI_MSIX_PBA
    public static let tableSizeMask: UInt16 = 0x07FF // PCI_MSIX_FLAGS_QSIZE
    public static let functionMask: UInt16 = 0x4000  // PCI_MSIX_FLAGS_MASKALL
    public static let enable: UInt16 = 0x8000        // PCI_MSIX_FLAGS_ENABLE

    /// The capability's bytes and writable mask, for `addCapability`.
    public static func bytes(for c: MSIXConfiguration) -> (bytes: [UInt8], writableMask: [UInt8]) {
        let control = UInt16(truncatingIfNeeded: max(c.vectors - 1, 0)) & tableSizeMask
        let table = c.tableOffset & 0xFFFF_FFF8 | UInt32(c.tableBar & 7)
        let pba = c.pbaOffset & 0xFFFF_FFF8 | UInt32(c.pbaBar & 7)
        let bytes = [PCICapabilityID.msix, 0] + LE.bytes(UInt64(control), count: 2)
            + LE.bytes(UInt64(table), count: 4) + LE.bytes(UInt64(pba), count: 4)
        var mask = [UInt8](repeating: 0, count: length)
        mask[messageControl + 1] = UInt8((functionMask | enable) >> 8)
        return (bytes, mask)
    }
}

/// One MSI-X table entry as the guest programmed it.
public struct MSIXEntry: Equatable, Sendable {
    public let message: MSIMessage
    /// Vector Control bit 0 (PCI_MSIX_ENTRY_CTRL_MASKBIT).
    public let masked: Bool
}

/// The MSI-X table and Pending Bit Array of one function, and the rules for
/// delivering its vectors (PCI 3.0 §6.8.2.8-§6.8.2.10):
/// - A vector is delivered only when MSI-X is enabled, the function is not
///   masked and the vector is not masked.
/// - Otherwise triggering it sets its pending bit; it is delivered (and the
///   bit cleared) as soon as all three conditions hold.
/// - Every entry resets masked (Vector Control bit 0 = 1).
/// - Address and data are stored as written; Vector Control bits 31:1 are
///   reserved and read 0. The PBA is read-only.
/// The router hears about every change of a vector's effective message
/// (`configure`) and about each delivery (`signal`), with the lock held.
public final class MSIXTable: Sendable {
    // Entry layout (pci_regs.h): PCI_MSIX_ENTRY_LOWER_ADDR 0, UPPER_ADDR 4,
    // DATA 8, VECTOR_CTRL 12; PCI_MSIX_ENTRY_CTRL_MASKBIT 1.
    static let lowerAddress = 0, upperAddress = 4, dataOffset = 8, vectorControl = 12
    static let maskBit: UInt8 = 0x01

    private struct State {
        var table: [UInt8]
        var pending: [UInt64]
        var enabled = false
        var functionMasked = false
        var router: MSIRouter?
        var device: PCIAddress?
        var configured: [MSIMessage?]
    }

    public let configuration: MSIXConfiguration
    /// Number of vectors (the configuration's, clamped to 0...2048).
    public var vectorCount: Int { min(max(configuration.vectors, 0), MSIXConfiguration.maxVectors) }
    private let state: Mutex<State>

    public init(configuration: MSIXConfiguration) {
        self.configuration = configuration
        // Clamped so a bad configuration cannot make the arrays overflow;
        // PCIFunction validates it before getting here.
        let n = min(max(configuration.vectors, 0), MSIXConfiguration.maxVectors)
        var table = [UInt8](repeating: 0, count: n * Int(MSIXConfiguration.entrySize))
        for v in 0..<n { table[v * 16 + Self.vectorControl] = Self.maskBit }
        state = Mutex(State(table: table, pending: Array(repeating: 0, count: (n + 63) / 64),
                            configured: Array(repeating: nil, count: n)))
    }

    /// Connects the table to the VMM. Re-reports every vector's state.
    public func attach(router: MSIRouter?, device: PCIAddress) {
        state.withLock { s in
            s.router = router
            s.device = device
            s.configured = Array(repeating: nil, count: s.configured.count)
            for v in 0..<s.configured.count { Self.update(&s, v) }
        }
    }

    // MARK: Queries

    public var isEnabled: Bool { state.withLock { $0.enabled } }
    public var isFunctionMasked: Bool { state.withLock { $0.functionMasked } }

    public func entry(_ vector: Int) -> MSIXEntry? {
        state.withLock { s in
            guard vector >= 0, vector < s.configured.count else { return nil }
            return MSIXEntry(message: Self.message(s, vector), masked: Self.vectorMasked(s, vector))
        }
    }

    public func isPending(_ vector: Int) -> Bool {
        state.withLock { s in
            guard vector >= 0, vector < s.configured.count else { return false }
            return s.pending[vector / 64] & (1 << UInt64(vector % 64)) != 0
        }
    }

    // MARK: Guest access (offsets relative to the table / PBA start)

    // SAFETY (these four): `data` is indexed over 0..<data.count; table and
    // PBA indices are checked against their arrays before use.
    public func readTable(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            for i in 0..<data.count {
                let (o, overflow) = offset.addingReportingOverflow(UInt64(i))
                if !overflow, o < UInt64(s.table.count) { data[i] = s.table[Int(o)] } else { data[i] = 0 }
            }
        }
    }

    public func writeTable(offset: UInt64, data: UnsafeRawBufferPointer) {
        state.withLock { s in
            var touched: [Int] = []
            for i in 0..<data.count {
                let (o, overflow) = offset.addingReportingOverflow(UInt64(i))
                guard !overflow, o < UInt64(s.table.count) else { continue }
                let index = Int(o)
                let field = index % 16
                if field >= Self.vectorControl {
                    // Only the mask bit is implemented; bits 31:1 are reserved.
                    s.table[index] = field == Self.vectorControl ? data[i] & Self.maskBit : 0
                } else {
                    s.table[index] = data[i]
                }
                let v = index / 16
                if touched.last != v { touched.append(v) }
            }
            for v in touched { Self.update(&s, v) }
        }
    }

    public func readPBA(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            for i in 0..<data.count {
                let (o, overflow) = offset.addingReportingOverflow(UInt64(i))
                guard !overflow, o < UInt64(s.pending.count * 8) else { data[i] = 0; continue }
                let word = s.pending[Int(o / 8)]
                data[i] = UInt8(truncatingIfNeeded: word >> (8 * (o % 8)))
            }
        }
    }

    /// The PBA is read-only (PCI 3.0 §6.8.2.10); writes are ignored.
    public func writePBA(offset: UInt64, data: UnsafeRawBufferPointer) {}

    // MARK: Device side

    /// Applies the Message Control register's Enable and Function Mask bits.
    public func setControl(enabled: Bool, functionMasked: Bool) {
        state.withLock { s in
            guard s.enabled != enabled || s.functionMasked != functionMasked else { return }
            s.enabled = enabled
            s.functionMasked = functionMasked
            for v in 0..<s.configured.count { Self.update(&s, v) }
        }
    }

    /// Raises `vector`: delivered now if deliverable, else left pending.
    /// Out-of-range vectors are ignored.
    public func trigger(vector: Int) {
        state.withLock { s in
            guard vector >= 0, vector < s.configured.count else { return }
            if Self.deliverable(s, vector), s.configured[vector] != nil, let r = s.router, let d = s.device {
                r.signal(device: d, vector: vector)
            } else {
                s.pending[vector / 64] |= 1 << UInt64(vector % 64)
            }
        }
    }

    // MARK: Internals (called with the lock held)

    private static func word(_ s: State, _ v: Int, _ field: Int) -> UInt32 {
        let base = v * 16 + field
        return UInt32(s.table[base]) | UInt32(s.table[base + 1]) << 8
            | UInt32(s.table[base + 2]) << 16 | UInt32(s.table[base + 3]) << 24
    }

    private static func message(_ s: State, _ v: Int) -> MSIMessage {
        MSIMessage(address: UInt64(word(s, v, upperAddress)) << 32 | UInt64(word(s, v, lowerAddress)),
                   data: word(s, v, dataOffset))
    }

    private static func vectorMasked(_ s: State, _ v: Int) -> Bool {
        s.table[v * 16 + vectorControl] & maskBit != 0
    }

    private static func deliverable(_ s: State, _ v: Int) -> Bool {
        s.enabled && !s.functionMasked && !vectorMasked(s, v)
    }

    /// Reports a change of the vector's effective message, then delivers a
    /// pending interrupt if the vector has become deliverable.
    private static func update(_ s: inout State, _ v: Int) {
        let desired: MSIMessage? = deliverable(s, v) ? message(s, v) : nil
        guard let router = s.router, let device = s.device else { return }
        if desired != s.configured[v] {
            s.configured[v] = desired
            router.configure(device: device, vector: v, message: desired)
        }
        let bit: UInt64 = 1 << UInt64(v % 64)
        if desired != nil, s.pending[v / 64] & bit != 0 {
            s.pending[v / 64] &= ~bit
            router.signal(device: device, vector: v)
        }
    }
}
