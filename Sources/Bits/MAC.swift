/// Ethernet (MAC-48) addresses as six bytes. IEEE 802-2014 clause 8.2.2:
/// bit 0 of the first octet is I/G (1 = group, i.e. multicast, broadcast
/// included), bit 1 is U/L (1 = locally administered).
public enum MAC {
    /// ETH_ALEN (linux/if_ether.h).
    public static let length = 6
    public static let groupBit: UInt8 = 0x01
    public static let localBit: UInt8 = 0x02

    /// The one text form SwiftVMM accepts: six two-digit hex octets separated
    /// by ':', either case ("52:54:00:AB:cd:EF"). Nil for anything else (other
    /// separators, one-digit octets, signs, surrounding space). Does not judge
    /// the address: multicast and all-zero addresses parse.
    public static func parse(_ text: String) -> [UInt8]? {
        let groups = text.utf8.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard groups.count == length else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        for group in groups {
            guard group.count == 2, let high = hexDigitValue(group[group.startIndex]),
                  let low = hexDigitValue(group[group.index(after: group.startIndex)]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// Lower-case two-digit octets joined by ':' ("52:54:00:12:34:56"), the
    /// form `parse` reads back.
    public static func format(_ bytes: [UInt8]) -> String {
        bytes.map { hexDigits($0, width: 2) }.joined(separator: ":")
    }

    /// The I/G bit of the first octet is set (false for no bytes).
    public static func isMulticast(_ bytes: [UInt8]) -> Bool {
        (bytes.first ?? 0) & groupBit != 0
    }

    /// Every byte is 0 (true for no bytes).
    public static func isZero(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { $0 == 0 }
    }
}
