/// Everything that can go wrong while encoding AML or laying out the ACPI
/// tables. The inputs come from the VMM's own configuration, not from the
/// guest, but a bad value still ends here with a reason, never in a trap.
public enum ACPIError: Error, Equatable, CustomStringConvertible {
    /// A NameSeg or NameString breaks the grammar of ACPI 6.5 §20.2.2.
    case invalidName(String, reason: String)
    /// A String object holds a byte outside AsciiCharList (0x01-0x7F, §20.2.3).
    case invalidString(String, reason: String)
    /// Not of the form UUUNNNN (three capital letters, four hex digits).
    case invalidEISAID(String)
    /// A PkgLength outside 0...0x0FFF_FFFF (ACPI 6.5 §20.2.4: at most 28 bits).
    case pkgLengthOutOfRange(Int)
    /// More elements than the encoding can count (a Package's NumElements is one byte).
    case tooManyElements(what: String, count: Int, limit: Int)
    /// Method flags out of range: ArgCount 0-7, SyncLevel 0-15 (§20.2.5.2).
    case invalidMethod(String, reason: String)
    /// A resource descriptor field that does not fit or contradicts another (§6.4).
    case invalidResource(String)
    /// An operand out of range for its term (ArgN, LocalN) or a malformed ToUUID string.
    case invalidTerm(String)
    /// vCPU count outside 1...`MADT.maxVCPUs`.
    case invalidVCPUCount(Int)
    /// A machine description the tables cannot express.
    case invalidMachine(String)
    /// A table longer than its 32-bit Length field can say.
    case tableTooLarge(signature: String, length: Int)
    /// The RSDP must sit on a 16-byte boundary (ACPI 6.5 §5.2.5.1).
    case misalignedRSDP(UInt64)
    /// The tables end at `end`, past the area's `limit`.
    case tablesDoNotFit(end: UInt64, limit: UInt64)
    /// `[address, address+length)` is not backed by guest RAM.
    case tableOutsideGuestMemory(signature: String, address: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case let .invalidName(n, r):
            return "invalid AML name '\(n)': \(r)"
        case let .invalidString(s, r):
            return "invalid AML string '\(s)': \(r)"
        case let .invalidEISAID(s):
            return "invalid EISA ID '\(s)': expected three capital letters and four hex digits, e.g. PNP0501"
        case let .pkgLengthOutOfRange(n):
            return "AML PkgLength \(n) is outside 0...0x0FFFFFFF"
        case let .tooManyElements(what, count, limit):
            return "\(what) has \(count) elements, at most \(limit) can be encoded"
        case let .invalidMethod(n, r):
            return "invalid AML method '\(n)': \(r)"
        case let .invalidResource(r):
            return "invalid resource descriptor: \(r)"
        case let .invalidTerm(r):
            return "invalid AML term: \(r)"
        case let .invalidVCPUCount(n):
            return "ACPI MADT: \(n) vCPUs is outside 1...\(MADT.maxVCPUs)"
        case let .invalidMachine(r):
            return "ACPI machine description: \(r)"
        case let .tableTooLarge(sig, len):
            return "ACPI table \(sig) is \(len) bytes, more than its 32-bit length field holds"
        case let .misalignedRSDP(a):
            return "ACPI RSDP address 0x\(String(a, radix: 16)) is not 16-byte aligned"
        case let .tablesDoNotFit(end, limit):
            return "ACPI tables end at 0x\(String(end, radix: 16)), past the limit 0x\(String(limit, radix: 16))"
        case let .tableOutsideGuestMemory(sig, a, l):
            return "ACPI table \(sig) at 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) is outside guest RAM"
        }
    }
}
