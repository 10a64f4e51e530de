import Bits

/// Root System Description Pointer, ACPI 2.0+ form (ACPI 6.5 §5.2.5.3,
/// Table 5.3), 36 bytes. Linux finds it by scanning 0xE0000-0xFFFFF on
/// 16-byte boundaries for "RSD PTR " (§5.2.5.1) when the boot protocol
/// does not hand it over.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 8 | "RSD PTR " |
/// | 8 | 1 | Checksum of bytes 0-19 (the ACPI 1.0 part) |
/// | 9 | 6 | OEMID |
/// | 15 | 1 | Revision: 2 for ACPI 2.0 and later |
/// | 16 | 4 | RsdtAddress: 0, there is no RSDT |
/// | 20 | 4 | Length: 36 |
/// | 24 | 8 | XsdtAddress |
/// | 32 | 1 | Extended checksum of all 36 bytes |
/// | 33 | 3 | Reserved |
public enum RSDP {
    public static let length = 36
    public static let signature = "RSD PTR "
    public static let revision: UInt8 = 2
    /// Bytes covered by the first checksum.
    static let v1Length = 20

    public static func build(xsdtAddress: UInt64) -> [UInt8] {
        var bytes = asciiField(signature, width: 8)
        bytes.append(0) // checksum
        bytes += asciiField(SDTHeader.oemID, width: 6)
        bytes.append(revision)
        bytes.appendLE(UInt32(0))
        bytes.appendLE(UInt32(length))
        bytes.appendLE(xsdtAddress)
        bytes.append(0) // extended checksum
        bytes += [0, 0, 0]
        bytes[8] = 0 &- byteSum(bytes[0..<v1Length])
        bytes[32] = 0 &- byteSum(bytes)
        return bytes
    }
}

/// Extended System Description Table (ACPI 6.5 §5.2.8): the header, then the
/// 64-bit addresses of every other table except the DSDT (which the FADT
/// points to) and the FACS.
public enum XSDT {
    public static let signature = "XSDT"
    public static let revision: UInt8 = 1

    public static func length(entries: Int) -> Int { SDTHeader.length + 8 * entries }

    public static func build(entries: [UInt64]) throws -> [UInt8] {
        var body: [UInt8] = []
        for address in entries { body.appendLE(address) }
        return try SDTHeader.table(signature: signature, revision: revision, body: body)
    }
}
