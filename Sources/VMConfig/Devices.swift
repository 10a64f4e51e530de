/// A virtio-blk disk (`[[disk]]`), backed by a raw image file.
public struct DiskConfig: Equatable, Sendable {
    /// Absolute path of the image.
    public var path: String
    /// Open the image read-only and offer VIRTIO_BLK_F_RO to the guest.
    public var readOnly: Bool

    public init(path: String, readOnly: Bool = false) {
        self.path = path
        self.readOnly = readOnly
    }
}

/// A virtio-net device (`[[net]]`) on a host TAP interface.
public struct NetConfig: Equatable, Sendable {
    /// The TAP interface name: 1...15 bytes of `A-Z a-z 0-9 _ . -`.
    public var tap: String
    /// The guest's MAC address, 6 bytes, unicast and not all zero.
    public var mac: [UInt8]

    public init(tap: String, mac: [UInt8]) {
        self.tap = tap
        self.mac = mac
    }

    /// `mac` as six lower-case hex pairs: "52:54:00:12:34:56".
    public var macString: String { MAC.format(mac) }

    /// Parses six hex pairs separated by colons, either case
    /// ("52:54:00:AB:cd:EF"). Nil for anything else. Does not judge the
    /// address (multicast and all-zero addresses parse).
    public static func parseMAC(_ text: String) -> [UInt8]? { MAC.parse(text) }

    /// The MAC a `[[net]]` at `index` gets without a `mac` key: 52:54:00 and
    /// then 0x123456 + index in the low three bytes (24 bits, wrapping), so
    /// the first is QEMU's familiar 52:54:00:12:34:56. 0x52 has the
    /// locally-administered bit set and the multicast bit clear.
    public static func defaultMAC(index: Int) -> [UInt8] { MAC.defaultAddress(index: index) }
}

/// Ethernet addresses. IEEE 802-2014 clause 8.2.2: bit 0 of the first octet
/// is I/G (1 = group, i.e. multicast; broadcast included), bit 1 is U/L
/// (1 = locally administered).
enum MAC {
    static let count = 6
    static let groupBit: UInt8 = 0x01
    static let localBit: UInt8 = 0x02
    /// QEMU's prefix for generated NIC addresses (net/net.c,
    /// qemu_macaddr_default_if_unset): locally administered, unicast.
    static let defaultPrefix: [UInt8] = [0x52, 0x54, 0x00]
    static let defaultFirstSuffix: UInt32 = 0x12_34_56

    static func parse(_ text: String) -> [UInt8]? {
        let groups = text.split(separator: ":", omittingEmptySubsequences: false)
        guard groups.count == count else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for g in groups {
            let u = Array(g.utf8)
            guard u.count == 2, let hi = hexValue(u[0]), let lo = hexValue(u[1]) else { return nil }
            bytes.append(hi << 4 | lo)
        }
        return bytes
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    static func format(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return bytes.map { String([digits[Int($0 >> 4)], digits[Int($0 & 0xF)]]) }.joined(separator: ":")
    }

    static func defaultAddress(index: Int) -> [UInt8] {
        let suffix = (defaultFirstSuffix &+ UInt32(truncatingIfNeeded: index)) & 0xFF_FFFF
        return defaultPrefix + [UInt8(truncatingIfNeeded: suffix >> 16),
                                UInt8(truncatingIfNeeded: suffix >> 8),
                                UInt8(truncatingIfNeeded: suffix)]
    }

    static func isMulticast(_ bytes: [UInt8]) -> Bool {
        (bytes.first ?? 0) & groupBit != 0
    }

    static func isZero(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { $0 == 0 }
    }
}
