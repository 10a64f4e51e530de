/// An Ethernet MAC address for a virtio network device (§5.1.4 `mac`).
/// Only unicast, non-zero addresses: a driver handed a multicast or zero MAC
/// would pick a random one (Linux does) and the host would not know it.
public struct MACAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 6 bytes (ETH_ALEN, linux/if_ether.h).
    public static let length = 6
    public let bytes: [UInt8]

    /// nil unless `bytes` has 6 bytes, is not all zero and has the I/G
    /// (multicast) bit, bit 0 of the first byte (IEEE 802), clear.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.length, bytes.contains(where: { $0 != 0 }), bytes[0] & 1 == 0 else { return nil }
        self.bytes = bytes
    }

    /// Parses "52:54:00:12:34:56" (or with '-'): six hex pairs.
    public init?(string: String) {
        let parts = string.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == Self.length else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        self.init(b)
    }

    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}
