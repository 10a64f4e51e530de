/// An AML (ACPI Machine Language) encoder: a small tree of terms, each of
/// which appends its bytes. Grammar and opcodes: ACPI 6.5 chapter 20 (§20.2
/// "AML Grammar Definition", §20.3 "AML Byte Stream Byte Values").
///
/// Only what the DSDT needs is here: names, data objects, Name, Scope,
/// Device, Method with Return and resource templates in this file; the
/// statements the PCI root's _OSC uses (If/Else, LEqual, LNot, And, Or,
/// Store, CreateDWordField, ArgN, LocalN, ToUUID) in AMLStatements.swift.
/// New opcodes are new `AMLTerm` types.
public protocol AMLTerm {
    /// Appends this term's AML encoding to `bytes`.
    func encode(into bytes: inout [UInt8]) throws
}

extension AMLTerm {
    /// This term's AML encoding.
    public func encoded() throws -> [UInt8] {
        var bytes: [UInt8] = []
        try encode(into: &bytes)
        return bytes
    }
}

/// Opcodes and prefixes (ACPI 6.5 §20.2 grammar, byte values from §20.3).
enum AMLOpcode {
    /// §20.2.2 Name Objects Encoding.
    static let nullName: UInt8 = 0x00
    static let dualNamePrefix: UInt8 = 0x2E
    static let multiNamePrefix: UInt8 = 0x2F
    static let rootChar: UInt8 = 0x5C        // '\'
    static let parentPrefixChar: UInt8 = 0x5E // '^'

    /// §20.2.3 Data Objects Encoding.
    static let zero: UInt8 = 0x00
    static let one: UInt8 = 0x01
    static let ones: UInt8 = 0xFF
    static let bytePrefix: UInt8 = 0x0A
    static let wordPrefix: UInt8 = 0x0B
    static let dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D
    static let qwordPrefix: UInt8 = 0x0E

    /// §20.2.5.1 Namespace Modifier Objects Encoding.
    static let name: UInt8 = 0x08
    static let scope: UInt8 = 0x10

    /// §20.2.5.2 Named Objects Encoding: DeviceOp is ExtOpPrefix 0x82.
    static let method: UInt8 = 0x14
    static let extOpPrefix: UInt8 = 0x5B
    static let device: [UInt8] = [extOpPrefix, 0x82]

    /// §20.2.5.3 Statement Opcodes Encoding.
    static let `return`: UInt8 = 0xA4
    static let notify: UInt8 = 0x86

    /// §20.2.5.4 Expression Opcodes Encoding.
    static let buffer: UInt8 = 0x11
    static let package: UInt8 = 0x12
}

/// PkgLength (ACPI 6.5 §20.2.4): one lead byte whose bits 7:6 count the
/// bytes that follow (0-3). With none, bits 5:0 are the length (0-63).
/// Otherwise bits 3:0 are the low nibble and each following byte the next 8
/// bits, so the largest length is 2^28 - 1. The encoded length counts the
/// PkgLength's own bytes and everything up to the end of the package.
public enum AMLPkgLength {
    /// The largest encodable length: 4 + 3 x 8 bits.
    public static let maximum = 0x0FFF_FFFF

    /// The largest length each form holds, by number of bytes (1...4).
    static let formLimits = [0x3F, 0xFFF, 0xF_FFFF, 0x0FFF_FFFF]

    /// `value` in the shortest form that holds it.
    public static func encode(_ value: Int) throws -> [UInt8] {
        guard value >= 0, value <= maximum else { throw ACPIError.pkgLengthOutOfRange(value) }
        guard let size = formLimits.firstIndex(where: { value <= $0 }) else {
            throw ACPIError.pkgLengthOutOfRange(value)
        }
        return encode(value, size: size + 1)
    }

    /// The PkgLength for `contentLength` bytes that follow it: the shortest
    /// form `n` such that `contentLength + n` fits in `n` bytes, holding
    /// `contentLength + n`.
    public static func encode(enclosing contentLength: Int) throws -> [UInt8] {
        guard contentLength >= 0 else { throw ACPIError.pkgLengthOutOfRange(contentLength) }
        for (index, limit) in formLimits.enumerated() {
            let size = index + 1
            let (total, overflow) = contentLength.addingReportingOverflow(size)
            if !overflow && total <= limit {
                return encode(total, size: size)
            }
        }
        throw ACPIError.pkgLengthOutOfRange(contentLength)
    }

    /// `value` (which fits) in exactly `size` bytes.
    private static func encode(_ value: Int, size: Int) -> [UInt8] {
        if size == 1 { return [UInt8(truncatingIfNeeded: value)] }
        let following = size - 1
        var out = [UInt8(truncatingIfNeeded: following << 6 | value & 0x0F)]
        var rest = value >> 4
        for _ in 0..<following {
            out.append(UInt8(truncatingIfNeeded: rest))
            rest >>= 8
        }
        return out
    }

    /// `prefix`, the PkgLength enclosing `body`, then `body`: the shape of
    /// every package-like term (Scope, Device, Method, Buffer, Package).
    static func wrap(_ prefix: [UInt8], _ body: [UInt8], into bytes: inout [UInt8]) throws {
        bytes.append(contentsOf: prefix)
        bytes.append(contentsOf: try encode(enclosing: body.count))
        bytes.append(contentsOf: body)
    }
}

// MARK: - Names

/// A NameSeg (ACPI 6.5 §20.2.2): a lead character 'A'-'Z' or '_', then up
/// to three of 'A'-'Z', '0'-'9', '_'; shorter names are padded with '_' to
/// four bytes ("RTC" is "RTC_"). Lower case is rejected, not folded.
public struct AMLNameSeg: Hashable, Sendable, CustomStringConvertible {
    /// Exactly four bytes.
    public let bytes: [UInt8]

    public init(_ text: String) throws {
        let chars = Array(text.utf8)
        guard (1...4).contains(chars.count) else {
            throw ACPIError.invalidName(text, reason: "a name segment has 1 to 4 characters")
        }
        guard Self.isLeadChar(chars[0]) else {
            throw ACPIError.invalidName(text, reason: "a name segment starts with A-Z or _")
        }
        guard chars.dropFirst().allSatisfy({ Self.isLeadChar($0) || Self.isDigitChar($0) }) else {
            throw ACPIError.invalidName(text, reason: "a name segment holds only A-Z, 0-9 and _")
        }
        bytes = chars + [UInt8](repeating: UInt8(ascii: "_"), count: 4 - chars.count)
    }

    /// LeadNameChar := 'A'-'Z' | '_' (§20.2.2).
    static func isLeadChar(_ c: UInt8) -> Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || c == UInt8(ascii: "_")
    }

    /// DigitChar := '0'-'9' (§20.2.2).
    static func isDigitChar(_ c: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// A NameString (ACPI 6.5 §20.2.2), written as in ASL: an optional root
/// prefix `\` or any number of parent prefixes `^`, then dot-separated
/// segments ("\_SB.COM1", "^^FOO", "_HID", "\" for the root itself).
/// Encoded as the prefixes, then NullName (no segment), the NameSeg (one),
/// DualNamePrefix + 2 segments, or MultiNamePrefix + count + segments.
public struct AMLNameString: AMLTerm, Hashable, Sendable, CustomStringConvertible {
    /// True for a path that starts at the namespace root (`\`).
    public let isRooted: Bool
    /// Number of `^` prefixes (0 when rooted).
    public let parentLevels: Int
    public let segments: [AMLNameSeg]

    /// MultiNamePrefix's SegCount is one byte (§20.2.2).
    public static let maxSegments = 255

    public init(_ path: String) throws {
        var rest = Substring(path)
        var rooted = false
        var levels = 0
        if rest.first == "\\" {
            rooted = true
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" {
                levels += 1
                rest = rest.dropFirst()
            }
        }
        if rest.isEmpty {
            guard rooted || levels > 0 else { throw ACPIError.invalidName(path, reason: "empty name") }
            segments = []
        } else {
            segments = try rest.split(separator: ".", omittingEmptySubsequences: false).map {
                do {
                    return try AMLNameSeg(String($0))
                } catch ACPIError.invalidName(_, let reason) {
                    throw ACPIError.invalidName(path, reason: "segment '\($0)': \(reason)")
                }
            }
        }
        guard segments.count <= Self.maxSegments else {
            throw ACPIError.invalidName(path, reason: "more than \(Self.maxSegments) segments")
        }
        isRooted = rooted
        parentLevels = levels
    }

    public func encode(into bytes: inout [UInt8]) throws {
        if isRooted { bytes.append(AMLOpcode.rootChar) }
        bytes.append(contentsOf: [UInt8](repeating: AMLOpcode.parentPrefixChar, count: parentLevels))
        switch segments.count {
        case 0:
            bytes.append(AMLOpcode.nullName)
        case 1:
            bytes.append(contentsOf: segments[0].bytes)
        case 2:
            bytes.append(AMLOpcode.dualNamePrefix)
            bytes.append(contentsOf: segments[0].bytes + segments[1].bytes)
        default:
            bytes.append(AMLOpcode.multiNamePrefix)
            bytes.append(UInt8(truncatingIfNeeded: segments.count)) // <= 255, checked in init
            for s in segments { bytes.append(contentsOf: s.bytes) }
        }
    }

    public var description: String {
        (isRooted ? "\\" : String(repeating: "^", count: parentLevels))
            + segments.map(\.description).joined(separator: ".")
    }
}

// MARK: - Data objects

/// An Integer in its shortest encoding (ACPI 6.5 §20.2.3): ZeroOp for 0,
/// OneOp for 1, then BytePrefix, WordPrefix, DWordPrefix or QWordPrefix
/// with the value little-endian.
///
/// OnesOp is never chosen here, not even for `UInt64.max`: Ones means
/// 0xFFFFFFFF in a table of revision 1 and 0xFFFFFFFFFFFFFFFF from revision 2
/// on (the DSDT's Revision sets the interpreter's integer width, §5.2.11.1),
/// so the explicit QWord keeps the value independent of the table revision.
/// Use `AMLOnes` to ask for OnesOp.
public struct AMLInteger: AMLTerm, Hashable, Sendable, ExpressibleByIntegerLiteral {
    public let value: UInt64

    public init(_ value: UInt64) { self.value = value }
    public init(integerLiteral value: UInt64) { self.value = value }

    public func encode(into bytes: inout [UInt8]) throws {
        switch value {
        case 0:
            bytes.append(AMLOpcode.zero)
        case 1:
            bytes.append(AMLOpcode.one)
        case 2...0xFF:
            bytes.append(AMLOpcode.bytePrefix)
            bytes.append(UInt8(truncatingIfNeeded: value))
        case 0x100...0xFFFF:
            bytes.append(AMLOpcode.wordPrefix)
            bytes.appendLE(UInt16(truncatingIfNeeded: value))
        case 0x1_0000...0xFFFF_FFFF:
            bytes.append(AMLOpcode.dwordPrefix)
            bytes.appendLE(UInt32(truncatingIfNeeded: value))
        default:
            bytes.append(AMLOpcode.qwordPrefix)
            bytes.appendLE(value)
        }
    }
}

/// OnesOp (0xFF, ACPI 6.5 §20.2.3): all bits set at the table's integer
/// width (32 bits in a revision-1 table, 64 from revision 2).
public struct AMLOnes: AMLTerm, Hashable, Sendable {
    public init() {}
    public func encode(into bytes: inout [UInt8]) throws { bytes.append(AMLOpcode.ones) }
}

/// A String (ACPI 6.5 §20.2.3): StringPrefix, AsciiCharList (0x01-0x7F),
/// NullChar.
public struct AMLString: AMLTerm, Hashable, Sendable {
    public let value: String

    public init(_ value: String) throws {
        guard value.utf8.allSatisfy({ (0x01...0x7F).contains($0) }) else {
            throw ACPIError.invalidString(value, reason: "only ASCII 0x01-0x7F, no NUL")
        }
        self.value = value
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.stringPrefix)
        bytes.append(contentsOf: Array(value.utf8))
        bytes.append(0x00)
    }
}

/// ASL's EISAID("UUUNNNN") (ACPI 6.5 §19.6, the EISAID macro): a compressed
/// 32-bit EISA ID.
/// Each letter is 5 bits (`letter - 0x40`), packed into bits 30:16 with the
/// four hex digits in bits 15:0, then byte-swapped, so "PNP0501" is
/// 0x0105D041 and the bytes read "41 D0 05 01". Encoded as a DWord constant
/// whatever its value, as iasl emits it.
public struct AMLEISAID: AMLTerm, Hashable, Sendable {
    public let value: UInt32

    public init(_ id: String) throws {
        value = try Self.compress(id)
    }

    /// The compressed, byte-swapped value of `id`.
    public static func compress(_ id: String) throws -> UInt32 {
        let chars = Array(id.utf8)
        guard chars.count == 7 else { throw ACPIError.invalidEISAID(id) }
        var packed: UInt32 = 0
        for c in chars[0..<3] {
            guard (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) else { throw ACPIError.invalidEISAID(id) }
            packed = packed << 5 | UInt32(c - 0x40)
        }
        for c in chars[3..<7] {
            guard let digit = hexValue(c) else { throw ACPIError.invalidEISAID(id) }
            packed = packed << 4 | UInt32(digit)
        }
        return packed.byteSwapped
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.dwordPrefix)
        bytes.appendLE(value)
    }
}

/// DefBuffer (ACPI 6.5 §20.2.5.4): BufferOp PkgLength BufferSize ByteList,
/// with BufferSize the byte count as an Integer.
public struct AMLBuffer: AMLTerm, Hashable, Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func encode(into out: inout [UInt8]) throws {
        var body = try AMLInteger(UInt64(bytes.count)).encoded()
        body.append(contentsOf: bytes)
        try AMLPkgLength.wrap([AMLOpcode.buffer], body, into: &out)
    }
}

/// DefPackage (ACPI 6.5 §20.2.5.4): PackageOp PkgLength NumElements
/// PackageElementList, NumElements one byte.
public struct AMLPackage: AMLTerm {
    public let elements: [any AMLTerm]

    /// NumElements is a ByteData.
    public static let maxElements = 255

    public init(_ elements: [any AMLTerm]) { self.elements = elements }

    public func encode(into bytes: inout [UInt8]) throws {
        guard elements.count <= Self.maxElements else {
            throw ACPIError.tooManyElements(what: "Package", count: elements.count, limit: Self.maxElements)
        }
        var body = [UInt8(truncatingIfNeeded: elements.count)]
        for e in elements { try e.encode(into: &body) }
        try AMLPkgLength.wrap([AMLOpcode.package], body, into: &bytes)
    }
}

// MARK: - Namespace and named objects

/// DefName (ACPI 6.5 §20.2.5.1): NameOp NameString DataRefObject, ASL's
/// `Name(_HID, ...)`.
public struct AMLName: AMLTerm {
    public let name: AMLNameString
    public let value: any AMLTerm

    public init(_ name: String, _ value: any AMLTerm) throws {
        self.name = try AMLNameString(name)
        self.value = value
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.name)
        try name.encode(into: &bytes)
        try value.encode(into: &bytes)
    }
}

/// DefScope (ACPI 6.5 §20.2.5.1): ScopeOp PkgLength NameString TermList.
public struct AMLScope: AMLTerm {
    public let name: AMLNameString
    public let terms: [any AMLTerm]

    public init(_ name: String, _ terms: [any AMLTerm]) throws {
        self.name = try AMLNameString(name)
        self.terms = terms
    }

    public func encode(into bytes: inout [UInt8]) throws {
        var body = try name.encoded()
        for t in terms { try t.encode(into: &body) }
        try AMLPkgLength.wrap([AMLOpcode.scope], body, into: &bytes)
    }
}

/// DefDevice (ACPI 6.5 §20.2.5.2): DeviceOp (0x5B 0x82) PkgLength NameString
/// TermList.
public struct AMLDevice: AMLTerm {
    public let name: AMLNameString
    public let terms: [any AMLTerm]

    public init(_ name: String, _ terms: [any AMLTerm]) throws {
        self.name = try AMLNameString(name)
        self.terms = terms
    }

    public func encode(into bytes: inout [UInt8]) throws {
        var body = try name.encoded()
        for t in terms { try t.encode(into: &body) }
        try AMLPkgLength.wrap(AMLOpcode.device, body, into: &bytes)
    }
}

/// DefMethod (ACPI 6.5 §20.2.5.2): MethodOp PkgLength NameString MethodFlags
/// TermList. MethodFlags: bits 2:0 ArgCount (0-7), bit 3 SerializeFlag,
/// bits 7:4 SyncLevel (0-15).
public struct AMLMethod: AMLTerm {
    public let name: AMLNameString
    public let flags: UInt8
    public let terms: [any AMLTerm]

    public init(_ name: String, argumentCount: Int = 0, serialized: Bool = false, syncLevel: Int = 0,
                _ terms: [any AMLTerm]) throws {
        guard (0...7).contains(argumentCount) else {
            throw ACPIError.invalidMethod(name, reason: "argument count \(argumentCount) is outside 0...7")
        }
        guard (0...15).contains(syncLevel) else {
            throw ACPIError.invalidMethod(name, reason: "sync level \(syncLevel) is outside 0...15")
        }
        self.name = try AMLNameString(name)
        flags = UInt8(argumentCount) | (serialized ? 0x08 : 0) | UInt8(syncLevel) << 4
        self.terms = terms
    }

    public func encode(into bytes: inout [UInt8]) throws {
        var body = try name.encoded()
        body.append(flags)
        for t in terms { try t.encode(into: &body) }
        try AMLPkgLength.wrap([AMLOpcode.method], body, into: &bytes)
    }
}

/// DefReturn (ACPI 6.5 §20.2.5.3): ReturnOp ArgObject.
public struct AMLReturn: AMLTerm {
    public let value: any AMLTerm

    public init(_ value: any AMLTerm) { self.value = value }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.return)
        try value.encode(into: &bytes)
    }
}

/// DefNotify (ACPI 6.5 §20.2.5.3): NotifyOp NotifyObject NotifyValue, ASL
/// `Notify(\_SB.PWRB, 0x80)`.
public struct AMLNotify: AMLTerm {
    public let object: AMLNameString
    public let value: AMLInteger

    public init(_ object: String, _ value: UInt64) throws {
        self.object = try AMLNameString(object)
        self.value = AMLInteger(value)
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.notify)
        try object.encode(into: &bytes)
        try value.encode(into: &bytes)
    }
}
