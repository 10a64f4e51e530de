/// Checked access to guest physical memory. Parsers and devices take this
/// protocol, so tests run them on `ArrayGuestMemory` (with holes) and fuzzers
/// feed them random bytes. A range must be wholly inside one region.
///
/// Sendable: vCPU threads and device I/O threads reach guest memory at once.
/// Concurrent accesses to the same bytes race as they do on real hardware
/// (the guest's business); the implementation's own state must not.
public protocol GuestMemoryAccess: AnyObject, Sendable {
    /// Copies `buffer.count` bytes from guest memory at `address`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws
    /// Copies `bytes` into guest memory at `address`.
    func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws
    /// True when `[address, address+length)` is backed by guest RAM.
    func contains(_ address: GuestAddress, length: UInt64) -> Bool
    /// True when addresses may stop being valid at any time (IOVAs behind a
    /// vIOMMU, which the guest unmaps as it likes): then a device checks a
    /// buffer when it reads or writes it, and a refused access fails that
    /// request, rather than judging the buffer once when it takes the
    /// descriptor chain (where a bad buffer breaks the whole queue).
    var checksBuffersOnAccess: Bool { get }
    /// Runs `body` with host memory standing for `ranges`, in order, for a
    /// device to use in place (a disk's `preadv` straight into the guest's
    /// buffers): `access` is `.read` when the device reads guest memory
    /// (`body` must not write it) and `.write` when it writes it. Throws as
    /// `read` or `write` would, without running `body`, when a range cannot
    /// be reached. The buffers are valid (and behind a vIOMMU still mapped)
    /// only while `body` runs. The default copies through buffers of its
    /// own, so that any implementation (a test's) gets it; guest RAM and
    /// DMA-translated memory hand out their own pages.
    func withHostBuffers<R>(_ ranges: [GuestRange], for access: DMAPermissions,
                            _ body: ([UnsafeMutableRawBufferPointer]) throws -> R) throws -> R
    /// Host memory standing for `ranges`, in order, that stays valid after
    /// the call, for I/O that completes later (a disk's io_uring reads and
    /// writes): guest RAM's own pages, which live as long as the VM. Nil
    /// when this memory cannot promise that: behind a vIOMMU the guest may
    /// unmap a buffer at any time, and the default (a test's memory) only
    /// copies. Throws as `withHostBuffers` when a range cannot be reached.
    func lastingHostBuffers(_ ranges: [GuestRange], for access: DMAPermissions) throws -> [UnsafeMutableRawBufferPointer]?
}

/// `length` bytes of guest memory at `address` (a descriptor's buffer, or a
/// piece of one).
public struct GuestRange: Equatable, Sendable {
    public var address: GuestAddress
    public var length: UInt64
    public init(_ address: GuestAddress, _ length: UInt64) {
        self.address = address
        self.length = length
    }
}

extension GuestMemoryAccess {
    public var checksBuffersOnAccess: Bool { false }

    public func lastingHostBuffers(_ ranges: [GuestRange], for access: DMAPermissions) throws -> [UnsafeMutableRawBufferPointer]? {
        nil
    }

    /// The copying `withHostBuffers`: reads every range into a buffer of its
    /// own, runs `body`, and, for `.write`, copies the buffers back when
    /// `body` returns.
    public func withHostBuffers<R>(_ ranges: [GuestRange], for access: DMAPermissions,
                                   _ body: ([UnsafeMutableRawBufferPointer]) throws -> R) throws -> R {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        defer { for b in buffers { b.deallocate() } }
        for r in ranges {
            guard let n = Int(exactly: r.length), contains(r.address, length: r.length) else {
                throw GuestMemoryError.outOfRange(address: r.address.raw, length: r.length)
            }
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 16)
            b.initializeMemory(as: UInt8.self, repeating: 0)
            buffers.append(b)
            if access.contains(.read) { try read(into: b, at: r.address) }
        }
        let result = try body(buffers)
        if access.contains(.write) {
            for (r, b) in zip(ranges, buffers) { try write(UnsafeRawBufferPointer(b), at: r.address) }
        }
        return result
    }
}

extension GuestMemoryAccess {
    public func readBytes(at address: GuestAddress, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw GuestMemoryError.outOfRange(address: address.raw, length: 0) }
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: address) }
        return out
    }

    public func writeBytes(_ bytes: [UInt8], at address: GuestAddress) throws {
        try bytes.withUnsafeBytes { try write($0, at: address) }
    }

    /// Reads a little-endian integer (x86 guests are little-endian).
    public func readInteger<T: FixedWidthInteger>(_: T.Type, at address: GuestAddress) throws -> T {
        var value: T = 0
        try withUnsafeMutableBytes(of: &value) { try read(into: $0, at: address) }
        return T(littleEndian: value)
    }

    public func writeInteger<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws {
        var le = value.littleEndian
        try withUnsafeBytes(of: &le) { try write($0, at: address) }
    }

    /// Fills `[address, address+length)` with zero bytes.
    public func zero(at address: GuestAddress, length: UInt64) throws {
        guard contains(address, length: length) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: length)
        }
        let chunk = [UInt8](repeating: 0, count: 65536)
        var done: UInt64 = 0
        while done < length {
            let n = min(UInt64(chunk.count), length - done)
            try chunk.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)]), at: address.checkedAdding(done)) }
            done += n
        }
    }
}
