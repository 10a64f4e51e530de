import Bits

/// An Ethernet MAC address for a virtio network device (§5.1.4 `mac`).
/// Only unicast, non-zero addresses: a driver handed a multicast or zero MAC
/// would pick a random one (Linux does) and the host would not know it.
public struct MACAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 6 bytes (ETH_ALEN, linux/if_ether.h).
    public static let length = MAC.length
    public let bytes: [UInt8]

    /// nil unless `bytes` has 6 bytes, is not all zero and has the I/G
    /// (multicast) bit, bit 0 of the first byte (IEEE 802), clear.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.length, !MAC.isZero(bytes), !MAC.isMulticast(bytes) else { return nil }
        self.bytes = bytes
    }

    /// Parses the form `MAC.parse` accepts: six two-digit hex octets
    /// separated by ':' ("52:54:00:12:34:56").
    public init?(string: String) {
        guard let bytes = MAC.parse(string) else { return nil }
        self.init(bytes)
    }

    /// "52:54:00:12:34:56" (lower case).
    public var description: String { MAC.format(bytes) }
}
