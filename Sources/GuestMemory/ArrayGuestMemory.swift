import Synchronization

/// Guest memory backed by Swift arrays: for tests and fuzzing. Regions may
/// leave holes between them, as real guest memory maps do. Each access holds
/// one lock, so tests may share it between threads.
public final class ArrayGuestMemory: GuestMemoryAccess, Sendable {
    private struct Region { let base: UInt64; var bytes: [UInt8] }
    private let regions: Mutex<[Region]>

    /// One region per `(base, size)`; throws if regions overlap.
    public init(regions layout: [(base: UInt64, size: Int)]) throws {
        let sorted = layout.sorted { $0.base < $1.base }
        var prevEnd: UInt64 = 0
        var first = true
        for r in sorted {
            guard r.size > 0 else { throw GuestMemoryError.badLayout("empty region at 0x\(String(r.base, radix: 16))") }
            guard first || r.base >= prevEnd else { throw GuestMemoryError.badLayout("regions overlap at 0x\(String(r.base, radix: 16))") }
            let (end, o) = r.base.addingReportingOverflow(UInt64(r.size))
            guard !o else { throw GuestMemoryError.badLayout("region at 0x\(String(r.base, radix: 16)) wraps") }
            prevEnd = end
            first = false
        }
        regions = Mutex(sorted.map { Region(base: $0.base, bytes: [UInt8](repeating: 0, count: $0.size)) })
    }

    /// A single region starting at guest address 0.
    public init(size: Int) {
        regions = Mutex([Region(base: 0, bytes: [UInt8](repeating: 0, count: max(size, 1)))])
    }

    /// The region holding `[address, address+length)` and the offset into it.
    private static func locate(_ regions: [Region], _ address: GuestAddress, _ length: UInt64) -> (Int, Int)? {
        for (i, r) in regions.enumerated() where address.raw >= r.base {
            let off = address.raw - r.base
            let size = UInt64(r.bytes.count)
            guard off <= size, length <= size - off else { continue }
            return (i, Int(off))
        }
        return nil
    }

    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        regions.withLock { Self.locate($0, address, length) != nil }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        try regions.withLock { regions in
            guard let (i, off) = Self.locate(regions, address, UInt64(buffer.count)) else {
                throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(buffer.count))
            }
            guard buffer.count > 0 else { return }
            regions[i].bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[off..<(off + buffer.count)]))
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        try regions.withLock { regions in
            guard let (i, off) = Self.locate(regions, address, UInt64(bytes.count)) else {
                throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(bytes.count))
            }
            guard bytes.count > 0 else { return }
            regions[i].bytes.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[off..<(off + bytes.count)]).copyMemory(from: bytes)
            }
        }
    }
}
