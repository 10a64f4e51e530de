import HostSys
import Synchronization

/// Guest RAM: one memfd-backed shared mapping per region of a
/// `GuestMemoryMap`. The only place that turns guest addresses into host
/// pointers; every access is range-checked first.
///
/// Sendable: immutable after init; the mappings live as long as it does.
public final class GuestRAM: GuestMemoryAccess, Sendable {
    public struct Slot: Sendable {
        public let guestBase: UInt64
        public let size: UInt64
        public let mapping: SharedMemoryMapping
        public var hostAddress: UInt64 { UInt64(UInt(bitPattern: mapping.pointer)) }
    }

    public let map: GuestMemoryMap
    public let slots: [Slot]

    /// Whether every slot is 2 MiB hugetlbfs pages.
    public let hugePages: Bool

    /// One memfd per region of `map`. With `hugePages`, each is backed by
    /// 2 MiB hugetlbfs pages, reserved now: too few free pages throws
    /// `HugePageError` (which says how to reserve them). A slot's mapping
    /// may then be larger than its region (rounded up to 2 MiB); only
    /// `size` bytes of it are guest RAM.
    public init(map: GuestMemoryMap, hugePages: Bool = false) throws {
        self.map = map
        self.hugePages = hugePages
        var slots: [Slot] = []
        for (i, r) in map.regions.enumerated() {
            guard let size = Int(exactly: r.size) else { throw GuestMemoryError.badLayout("region too large") }
            let m = try SharedMemoryMapping(name: "swiftvmm-ram\(i)", size: size, hugePages: hugePages)
            slots.append(Slot(guestBase: r.base, size: r.size, mapping: m))
        }
        self.slots = slots
    }

    /// Bytes each populating thread takes at a time: a multiple of 2 MiB, so
    /// hugetlb pages are never split between threads.
    static let populateChunk = 32 << 20

    /// Faults in every page of guest RAM for writing (allocated and zeroed,
    /// nothing written), with `threads` threads taking `populateChunk`
    /// bytes at a time. For RAM about to be pinned whole for device DMA,
    /// which would otherwise fault it in page by page on one thread inside
    /// IOMMU_IOAS_MAP. Returns the bytes populated; throws the first error
    /// (a `SysError`; what was populated stays populated).
    @discardableResult
    public func populate(threads: Int) throws -> UInt64 {
        var chunks: [(slot: Int, offset: Int, length: Int)] = []
        for (i, s) in slots.enumerated() {
            var offset = 0
            while offset < s.mapping.size {
                let n = min(Self.populateChunk, s.mapping.size - offset)
                chunks.append((i, offset, n))
                offset += n
            }
        }
        let work = chunks
        let next = Mutex(0)
        let failure = Mutex<(any Error)?>(nil)
        let workers = (0..<max(1, min(threads, work.count))).map { k in
            KickableThread(name: "populate\(k)") { [slots] in
                while failure.withLock({ $0 == nil }) {
                    let i = next.withLock { n in defer { n += 1 }; return n }
                    guard i < work.count else { return }
                    let c = work[i]
                    do { try slots[c.slot].mapping.populate(offset: c.offset, length: c.length) } catch {
                        failure.withLock { $0 = $0 ?? error }
                    }
                }
            }
        }
        for w in workers { w.join() }
        if let e = failure.withLock({ $0 }) { throw e }
        return work.reduce(UInt64(0)) { $0 + UInt64($1.length) }
    }

    /// The host pointer for `[address, address+length)`, if wholly inside one slot.
    private func hostPointer(_ address: GuestAddress, _ length: UInt64) -> UnsafeMutableRawPointer? {
        for s in slots where address.raw >= s.guestBase {
            let off = address.raw - s.guestBase
            guard off <= s.size, length <= s.size - off else { continue }
            // SAFETY: off + length <= s.size, the size of this mapping.
            return s.mapping.pointer + Int(off)
        }
        return nil
    }

    public func contains(_ address: GuestAddress, length: UInt64) -> Bool { hostPointer(address, length) != nil }

    /// Guest RAM's pages, valid while the VM (this object) lives: each range
    /// must lie inside one slot.
    public func lastingHostBuffers(_ ranges: [GuestRange], for access: DMAPermissions) throws -> [UnsafeMutableRawBufferPointer]? {
        try withHostBuffers(ranges, for: access) { $0 }
    }

    /// Guest RAM itself: each range must lie inside one slot.
    public func withHostBuffers<R>(_ ranges: [GuestRange], for access: DMAPermissions,
                                   _ body: ([UnsafeMutableRawBufferPointer]) throws -> R) throws -> R {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        buffers.reserveCapacity(ranges.count)
        for r in ranges {
            guard let p = hostPointer(r.address, r.length) else {
                throw GuestMemoryError.outOfRange(address: r.address.raw, length: r.length)
            }
            // SAFETY: [p, p + length) is inside one slot's mapping (checked
            // above), which lives as long as `self`.
            buffers.append(UnsafeMutableRawBufferPointer(start: p, count: Int(r.length)))
        }
        return try body(buffers)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        guard let p = hostPointer(address, UInt64(buffer.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(buffer.count))
        }
        guard let dst = buffer.baseAddress, buffer.count > 0 else { return }
        // SAFETY: p has buffer.count bytes inside guest RAM (checked above).
        dst.copyMemory(from: p, byteCount: buffer.count)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        guard let p = hostPointer(address, UInt64(bytes.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(bytes.count))
        }
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        // SAFETY: p has bytes.count bytes inside guest RAM (checked above).
        p.copyMemory(from: src, byteCount: bytes.count)
    }
}
