/// Guest memory laid out as a machine's RAM that keeps nothing: writes inside
/// RAM succeed and vanish, reads give zeros, anything outside RAM fails as it
/// would on the real thing. For checking that a boot fits (`swiftvmm check`
/// runs the same loader as `run` into it) without allocating the RAM.
public final class DiscardingGuestMemory: GuestMemoryAccess, Sendable {
    public let map: GuestMemoryMap

    public init(map: GuestMemoryMap) {
        self.map = map
    }

    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        map.regions.contains { r in
            address.raw >= r.base && address.raw - r.base <= r.size && length <= r.size - (address.raw - r.base)
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(buffer.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(buffer.count))
        }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(bytes.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(bytes.count))
        }
    }
}
