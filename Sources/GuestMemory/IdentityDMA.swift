/// The identity DMA mapping: every guest RAM range at IOVA == its guest
/// physical address. What every device gets until a vIOMMU says otherwise,
/// and the first client of `DMAMapping`: the VMM installs it in the IOAS of
/// the assigned devices and in each emulated device's `DMATranslator`.
public enum IdentityDMA {
    /// A guest RAM range could not be mapped; the ranges mapped before it by
    /// the same call were unmapped again.
    public struct Failure: Error, CustomStringConvertible {
        /// The guest RAM range (== IOVA range) that failed.
        public let range: ClosedRange<UInt64>
        /// What the mapping threw.
        public let underlying: Error

        public var description: String { "identity DMA map of \(DMAMappingError.hex(range)): \(underlying)" }
    }

    /// The RAM ranges of a guest memory map.
    public static func ranges(of map: GuestMemoryMap) -> [(guest: UInt64, size: UInt64)] {
        map.regions.map { (guest: $0.base, size: $0.size) }
    }

    /// Maps each non-empty range at IOVA == `guest`, in order; returns the
    /// bytes mapped. On failure the ranges this call mapped are unmapped
    /// again, last first, and `Failure` names the range.
    @discardableResult
    public static func mapGuestRAM(_ ram: [(guest: UInt64, size: UInt64)], into dma: DMAMapping) throws -> UInt64 {
        var done: [(guest: UInt64, size: UInt64)] = []
        var bytes: UInt64 = 0
        for r in ram where r.size > 0 {
            do {
                try dma.map(iova: r.guest, size: r.size, guestAddress: GuestAddress(r.guest))
            } catch {
                for m in done.reversed() { try? dma.unmap(iova: m.guest, size: m.size) }
                let (last, wraps) = r.guest.addingReportingOverflow(r.size - 1)
                throw Failure(range: r.guest...(wraps ? .max : last), underlying: error)
            }
            done.append(r)
            bytes &+= r.size
        }
        return bytes
    }
}
