/// Resource data (ACPI 6.5 §6.4), as the byte lists inside a
/// `ResourceTemplate` buffer (_CRS, later _PRS). Small descriptors (§6.4.2)
/// have a one-byte tag: bit 7 clear, bits 6:3 the type, bits 2:0 the length
/// that follows. Large ones (§6.4.3) have bit 7 set, the type in bits 6:0,
/// then a 16-bit little-endian length.
public protocol AMLResourceDescriptor {
    /// Appends this descriptor's bytes to `bytes`.
    func encode(into bytes: inout [UInt8]) throws
}

extension AMLResourceDescriptor {
    /// This descriptor's bytes.
    public func encoded() throws -> [UInt8] {
        var bytes: [UInt8] = []
        try encode(into: &bytes)
        return bytes
    }
}

/// ASL's `ResourceTemplate() { ... }`: a Buffer holding the descriptors and
/// an End Tag (ACPI 6.5 §6.4.2.9: 0x79, then a checksum byte; 0 means "treat
/// the checksum as valid", which is what iasl emits).
public struct AMLResourceTemplate: AMLTerm {
    public let descriptors: [any AMLResourceDescriptor]

    /// End Tag: small type 0x0F, length 1 (§6.4.2.9).
    static let endTag: UInt8 = 0x79

    public init(_ descriptors: [any AMLResourceDescriptor]) { self.descriptors = descriptors }

    /// The descriptors and the End Tag, without the Buffer around them.
    public func resourceBytes() throws -> [UInt8] {
        var bytes: [UInt8] = []
        for d in descriptors { try d.encode(into: &bytes) }
        bytes.append(contentsOf: [Self.endTag, 0x00])
        return bytes
    }

    public func encode(into bytes: inout [UInt8]) throws {
        try AMLBuffer(resourceBytes()).encode(into: &bytes)
    }
}

/// I/O Port Descriptor (ACPI 6.5 §6.4.2.5), ASL `IO(Decode16, min, max,
/// alignment, length)`: tag 0x47 (type 0x08, length 7), information (bit 0:
/// 1 = decodes 16 address bits, 0 = 10 bits), minimum and maximum base
/// (16-bit LE), base alignment, range length.
public struct AMLIOPort: AMLResourceDescriptor, Hashable, Sendable {
    public var decodes16Bit: Bool
    public var minimum: UInt16
    public var maximum: UInt16
    public var alignment: UInt8
    public var length: UInt8

    static let tag: UInt8 = 0x47

    public init(decodes16Bit: Bool = true, minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8) {
        self.decodes16Bit = decodes16Bit
        self.minimum = minimum
        self.maximum = maximum
        self.alignment = alignment
        self.length = length
    }

    /// A device that sits at `base` only: minimum = maximum = base, alignment
    /// 1 (irrelevant when the range cannot move; QEMU's pvpanic uses 1).
    public init(fixed base: UInt16, length: UInt8) {
        self.init(minimum: base, maximum: base, alignment: 1, length: length)
    }

    public func encode(into bytes: inout [UInt8]) throws {
        guard minimum <= maximum else {
            throw ACPIError.invalidResource("IO minimum 0x\(String(minimum, radix: 16)) > maximum 0x\(String(maximum, radix: 16))")
        }
        guard UInt32(maximum) + UInt32(length) <= 0x1_0000 else {
            throw ACPIError.invalidResource("IO range at 0x\(String(maximum, radix: 16)) length \(length) runs past port 0xFFFF")
        }
        bytes.append(Self.tag)
        bytes.append(decodes16Bit ? 0x01 : 0x00)
        bytes.appendLE(minimum)
        bytes.appendLE(maximum)
        bytes.append(alignment)
        bytes.append(length)
    }
}

/// IRQ Descriptor without the information byte (ACPI 6.5 §6.4.2.1), ASL
/// `IRQNoFlags() {n, ...}`: tag 0x22 (type 0x04, length 2) and a 16-bit mask
/// of ISA IRQs 0-15. Without flags the IRQ is edge-triggered, active high.
public struct AMLIRQNoFlags: AMLResourceDescriptor, Hashable, Sendable {
    public var irqs: [UInt8]

    static let tag: UInt8 = 0x22

    public init(_ irqs: [UInt8]) { self.irqs = irqs }

    public func encode(into bytes: inout [UInt8]) throws {
        guard !irqs.isEmpty else { throw ACPIError.invalidResource("IRQNoFlags with no IRQ") }
        var mask: UInt16 = 0
        for irq in irqs {
            guard irq < 16 else { throw ACPIError.invalidResource("IRQ \(irq) is outside the ISA IRQs 0-15") }
            mask |= 1 << irq
        }
        bytes.append(Self.tag)
        bytes.appendLE(mask)
    }
}

/// Extended Interrupt Descriptor (ACPI 6.5 §6.4.3.6), ASL
/// `Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive) {gsi, ...}`:
/// tag 0x89, length (16-bit LE, 2 + 4 per interrupt), flags (bit 0
/// consumer, bit 1 edge-triggered, bit 2 active-low, bit 3 shared), count,
/// then each interrupt number (32-bit LE). No resource source.
public struct AMLExtendedInterrupt: AMLResourceDescriptor, Hashable, Sendable {
    public var interrupts: [UInt32]
    public var edgeTriggered: Bool
    public var activeLow: Bool

    static let tag: UInt8 = 0x89

    public init(_ interrupts: [UInt32], edgeTriggered: Bool = true, activeLow: Bool = false) {
        self.interrupts = interrupts
        self.edgeTriggered = edgeTriggered
        self.activeLow = activeLow
    }

    public func encode(into bytes: inout [UInt8]) throws {
        guard !interrupts.isEmpty, interrupts.count <= 255 else {
            throw ACPIError.invalidResource("Interrupt() with \(interrupts.count) interrupts (1...255)")
        }
        bytes.append(Self.tag)
        bytes.appendLE(UInt16(2 + 4 * interrupts.count))
        bytes.append(0x01 | (edgeTriggered ? 0x02 : 0) | (activeLow ? 0x04 : 0))
        bytes.append(UInt8(interrupts.count))
        for i in interrupts { bytes.appendLE(i) }
    }
}

/// 32-Bit Fixed Memory Range Descriptor (ACPI 6.5 §6.4.3.4), ASL
/// `Memory32Fixed(ReadWrite, base, length)`: tag 0x86, length 9 (16-bit LE),
/// information (bit 0: 1 = read/write, 0 = read-only), base and length
/// (32-bit LE).
public struct AMLMemory32Fixed: AMLResourceDescriptor, Hashable, Sendable {
    public var readWrite: Bool
    public var base: UInt32
    public var length: UInt32

    static let tag: UInt8 = 0x86
    static let bodyLength: UInt16 = 9

    public init(readWrite: Bool, base: UInt32, length: UInt32) {
        self.readWrite = readWrite
        self.base = base
        self.length = length
    }

    public func encode(into bytes: inout [UInt8]) throws {
        guard UInt64(base) + UInt64(length) <= 0x1_0000_0000 else {
            throw ACPIError.invalidResource("Memory32Fixed at 0x\(String(base, radix: 16)) length 0x\(String(length, radix: 16)) runs past 4 GiB")
        }
        bytes.append(Self.tag)
        bytes.appendLE(Self.bodyLength)
        bytes.append(readWrite ? 0x01 : 0x00)
        bytes.appendLE(base)
        bytes.appendLE(length)
    }
}

/// Word, DWord and QWord Address Space Descriptors (ACPI 6.5 §6.4.3.5.3,
/// §6.4.3.5.2, §6.4.3.5.1), ASL `WordBusNumber`, `WordIO`, `DWordMemory`,
/// `QWordMemory`: tag (0x88 / 0x87 / 0x8A), 16-bit length of what follows
/// (13 / 23 / 43), resource type (0 memory, 1 I/O, 2 bus number), general
/// flags, type-specific flags (§6.4.3.5.5), then granularity, minimum,
/// maximum, translation offset and length, each 2, 4 or 8 bytes. No
/// resource source. These describe the PCI root bridge's windows.
public struct AMLAddressSpace: AMLResourceDescriptor, Hashable, Sendable {
    public enum Width: Hashable, Sendable {
        case word, dword, qword

        var tag: UInt8 {
            switch self {
            case .word: return 0x88
            case .dword: return 0x87
            case .qword: return 0x8A
            }
        }

        var fieldBytes: Int {
            switch self {
            case .word: return 2
            case .dword: return 4
            case .qword: return 8
            }
        }

        var maxValue: UInt64 {
            switch self {
            case .word: return UInt64(UInt16.max)
            case .dword: return UInt64(UInt32.max)
            case .qword: return UInt64.max
            }
        }
    }

    /// General flags bit 0: 1 = the device consumes the range, 0 = it
    /// produces it for its children (a bridge window). ASL's default, when
    /// the keyword is left out, is ResourceConsumer; QEMU and Cloud
    /// Hypervisor emit producer windows for a PCI root bridge.
    public enum Usage: Hashable, Sendable { case producer, consumer }

    /// Memory type-specific flags bits 2:1, _MEM (§6.4.3.5.5).
    public enum Cacheability: UInt8, Hashable, Sendable {
        case nonCacheable = 0, cacheable = 1, writeCombining = 2, prefetchable = 3
    }

    /// I/O type-specific flags bits 1:0, _RNG (§6.4.3.5.5).
    public enum ISARanges: UInt8, Hashable, Sendable {
        case nonISAOnly = 1, isaOnly = 2, entire = 3
    }

    public enum Kind: Hashable, Sendable {
        /// Type 0; type-specific flags: bit 0 _RW, bits 2:1 _MEM.
        case memory(Cacheability, readWrite: Bool)
        /// Type 1; type-specific flags: bits 1:0 _RNG.
        case io(ISARanges)
        /// Type 2; no type-specific flags.
        case busNumber

        var resourceType: UInt8 {
            switch self {
            case .memory: return 0
            case .io: return 1
            case .busNumber: return 2
            }
        }

        var typeSpecificFlags: UInt8 {
            switch self {
            case let .memory(cache, rw): return cache.rawValue << 1 | (rw ? 1 : 0)
            case let .io(ranges): return ranges.rawValue
            case .busNumber: return 0
            }
        }
    }

    public var width: Width
    public var kind: Kind
    public var usage: Usage
    /// General flags bit 2, _MIF: the minimum address is fixed.
    public var minimumFixed: Bool
    /// General flags bit 3, _MAF: the maximum address is fixed.
    public var maximumFixed: Bool
    /// General flags bit 1, _DEC: 1 = subtractive decode, 0 = positive.
    public var subtractiveDecode: Bool
    public var granularity: UInt64
    public var minimum: UInt64
    public var maximum: UInt64
    public var translation: UInt64
    public var length: UInt64

    public init(width: Width, kind: Kind, usage: Usage, minimumFixed: Bool, maximumFixed: Bool,
                subtractiveDecode: Bool = false, granularity: UInt64, minimum: UInt64, maximum: UInt64,
                translation: UInt64 = 0, length: UInt64) {
        self.width = width
        self.kind = kind
        self.usage = usage
        self.minimumFixed = minimumFixed
        self.maximumFixed = maximumFixed
        self.subtractiveDecode = subtractiveDecode
        self.granularity = granularity
        self.minimum = minimum
        self.maximum = maximum
        self.translation = translation
        self.length = length
    }

    /// A fixed window [lower, upper]: _MIF = _MAF = 1, positive decode,
    /// granularity 0 and length = upper - lower + 1, the one combination
    /// §6.4.3.5 (Table "Valid combination of Address Space Descriptor
    /// fields") allows for a fixed size, fixed location range.
    static func fixed(_ width: Width, _ kind: Kind, usage: Usage, lower: UInt64, upper: UInt64) throws -> AMLAddressSpace {
        guard lower <= upper else {
            throw ACPIError.invalidResource("address range 0x\(String(lower, radix: 16))...0x\(String(upper, radix: 16)) is empty")
        }
        let (length, overflow) = (upper - lower).addingReportingOverflow(1)
        guard !overflow else { throw ACPIError.invalidResource("address range length 2^64 does not fit in 64 bits") }
        return AMLAddressSpace(width: width, kind: kind, usage: usage, minimumFixed: true, maximumFixed: true,
                               granularity: 0, minimum: lower, maximum: upper, length: length)
    }

    /// ASL `WordBusNumber(usage, MinFixed, MaxFixed, PosDecode, 0, lower, upper, 0, count)`.
    public static func wordBusNumber(_ range: ClosedRange<UInt16>, usage: Usage) throws -> AMLAddressSpace {
        try fixed(.word, .busNumber, usage: usage, lower: UInt64(range.lowerBound), upper: UInt64(range.upperBound))
    }

    /// ASL `WordIO(usage, MinFixed, MaxFixed, PosDecode, ranges, 0, lower, upper, 0, count)`.
    public static func wordIO(_ range: ClosedRange<UInt16>, usage: Usage,
                              isaRanges: ISARanges = .entire) throws -> AMLAddressSpace {
        try fixed(.word, .io(isaRanges), usage: usage, lower: UInt64(range.lowerBound), upper: UInt64(range.upperBound))
    }

    /// ASL `DWordMemory(usage, PosDecode, MinFixed, MaxFixed, cacheability, rw, 0, lower, upper, 0, count)`.
    public static func dwordMemory(_ range: ClosedRange<UInt32>, usage: Usage, cacheability: Cacheability,
                                   readWrite: Bool) throws -> AMLAddressSpace {
        try fixed(.dword, .memory(cacheability, readWrite: readWrite), usage: usage,
                  lower: UInt64(range.lowerBound), upper: UInt64(range.upperBound))
    }

    /// ASL `QWordMemory(usage, PosDecode, MinFixed, MaxFixed, cacheability, rw, 0, lower, upper, 0, count)`.
    public static func qwordMemory(_ range: ClosedRange<UInt64>, usage: Usage, cacheability: Cacheability,
                                   readWrite: Bool) throws -> AMLAddressSpace {
        try fixed(.qword, .memory(cacheability, readWrite: readWrite), usage: usage,
                  lower: range.lowerBound, upper: range.upperBound)
    }

    public func encode(into bytes: inout [UInt8]) throws {
        let fields: [(String, UInt64)] = [("granularity", granularity), ("minimum", minimum), ("maximum", maximum),
                                          ("translation", translation), ("length", length)]
        for (what, value) in fields where value > width.maxValue {
            throw ACPIError.invalidResource("\(what) 0x\(String(value, radix: 16)) does not fit a \(width) address space descriptor")
        }
        guard minimum <= maximum else {
            throw ACPIError.invalidResource("address space minimum 0x\(String(minimum, radix: 16)) > maximum 0x\(String(maximum, radix: 16))")
        }
        if minimumFixed && maximumFixed && length != (maximum - minimum) &+ 1 {
            throw ACPIError.invalidResource("fixed address range 0x\(String(minimum, radix: 16))...0x\(String(maximum, radix: 16)) with length 0x\(String(length, radix: 16))")
        }
        let generalFlags: UInt8 = (maximumFixed ? 0x08 : 0) | (minimumFixed ? 0x04 : 0)
            | (subtractiveDecode ? 0x02 : 0) | (usage == .consumer ? 0x01 : 0)
        bytes.append(width.tag)
        bytes.appendLE(UInt16(3 + 5 * width.fieldBytes))  // type, flags, specific flags, 5 fields
        bytes.append(kind.resourceType)
        bytes.append(generalFlags)
        bytes.append(kind.typeSpecificFlags)
        for (_, value) in fields {
            switch width {
            case .word: bytes.appendLE(UInt16(truncatingIfNeeded: value))
            case .dword: bytes.appendLE(UInt32(truncatingIfNeeded: value))
            case .qword: bytes.appendLE(value)
            }
        }
    }
}
