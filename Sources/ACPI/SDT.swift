import Bits

/// The header every system description table starts with (ACPI 6.5 §5.2.6,
/// Table 5.4), and the checksum that makes the whole table sum to zero.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 4 | Signature |
/// | 4 | 4 | Length of the whole table, header included |
/// | 8 | 1 | Revision of the table's structure |
/// | 9 | 1 | Checksum: all bytes of the table sum to 0 mod 256 |
/// | 10 | 6 | OEMID |
/// | 16 | 8 | OEM Table ID |
/// | 24 | 4 | OEM Revision |
/// | 28 | 4 | Creator ID |
/// | 32 | 4 | Creator Revision |
public enum SDTHeader {
    public static let length = 36
    static let checksumOffset = 9

    /// OEMID, 6 bytes. Also in the RSDP.
    public static let oemID = "SWVMM "
    /// OEM Table ID, 8 bytes, the same for every table (the signature tells them apart).
    public static let oemTableID = "SWIFTVMM"
    public static let oemRevision: UInt32 = 1
    /// Creator ID, 4 bytes: the "ASL compiler" that made the table, here us.
    public static let creatorID = "SWFT"
    public static let creatorRevision: UInt32 = 1

    /// The header, `body`, and the length and checksum filled in.
    static func table(signature: String, revision: UInt8, body: [UInt8]) throws -> [UInt8] {
        let total = length + body.count
        guard let length32 = UInt32(exactly: total) else {
            throw ACPIError.tableTooLarge(signature: signature, length: total)
        }
        var bytes = asciiField(signature, width: 4)
        bytes.appendLE(length32)
        bytes.append(revision)
        bytes.append(0) // checksum, below
        bytes += asciiField(oemID, width: 6)
        bytes += asciiField(oemTableID, width: 8)
        bytes.appendLE(oemRevision)
        bytes += asciiField(creatorID, width: 4)
        bytes.appendLE(creatorRevision)
        bytes += body
        bytes[checksumOffset] = 0 &- byteSum(bytes)
        return bytes
    }
}

/// Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1), 12 bytes:
/// address space ID, register bit width, register bit offset, access size,
/// 64-bit address.
public struct GenericAddress: Hashable, Sendable {
    /// Address space ID 1: System I/O.
    public static let systemIO: UInt8 = 1
    /// Access size 1: byte access.
    public static let byteAccess: UInt8 = 1
    public static let size = 12

    public var addressSpace: UInt8
    public var bitWidth: UInt8
    public var bitOffset: UInt8
    public var accessSize: UInt8
    public var address: UInt64

    /// An 8-bit register at I/O port `port`, accessed a byte at a time.
    public static func ioPort8(_ port: UInt16) -> GenericAddress {
        GenericAddress(addressSpace: systemIO, bitWidth: 8, bitOffset: 0, accessSize: byteAccess, address: UInt64(port))
    }

    public var bytes: [UInt8] {
        var out = [addressSpace, bitWidth, bitOffset, accessSize]
        out.appendLE(address)
        return out
    }
}
