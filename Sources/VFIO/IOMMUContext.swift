import Bits
import HostSys

/// The DMA side of one VM: an iommufd and the one IOAS every assigned device
/// of the VM is attached to, holding guest RAM at IOVA == guest physical
/// address. Order of use: `open`, attach the devices
/// (`AssignedVFIODevice.bindAndAttach`), `checkGuestRAM`, `mapGuestRAM`;
/// at the end close the devices, then `unmapAll`.
public final class IOMMUContext: @unchecked Sendable {
    public let iommufd: IOMMUFD
    public let ioas: IOAS
    /// The IOVA ranges mapped by `mapGuestRAM` and not unmapped yet.
    public private(set) var mappings: [ClosedRange<UInt64>] = []
    /// PCI addresses of the devices attached to `ioas`, for messages.
    public internal(set) var attachedDevices: [String] = []

    /// The IOAS's id (what devices attach to).
    public var ioasID: UInt32 { ioas.id }

    public init(iommufd: IOMMUFD, ioas: IOAS) {
        self.iommufd = iommufd
        self.ioas = ioas
    }

    /// Opens `/dev/iommu` and allocates the VM's IOAS.
    public static func open(path: String = "/dev/iommu") throws -> IOMMUContext {
        let fd = try IOMMUFD.open(path: path)
        return IOMMUContext(iommufd: fd, ioas: try fd.allocateIOAS())
    }

    // MARK: - Guest RAM vs. the IOVA ranges the IOMMU allows

    /// Checks, after every device is attached (the ranges narrow with each),
    /// that all guest RAM can be mapped at IOVA == GPA; throws
    /// `VFIOError.iovaConflict` naming the first range that cannot.
    public func checkGuestRAM(_ ranges: [(guest: UInt64, size: UInt64)]) throws {
        let allowed = try ioas.iovaRanges().ranges
        if let c = Self.firstConflict(ram: ranges, allowed: allowed) {
            throw VFIOError.iovaConflict(guestRange: c.ram, allowed: allowed, devices: attachedDevices)
        }
    }

    /// The first RAM range not wholly inside the allowed IOVA ranges, with its
    /// first blocked part. Empty RAM ranges are ignored; a range that wraps
    /// past 2^64 is blocked from where it wraps.
    public static func firstConflict(ram: [(guest: UInt64, size: UInt64)], allowed: [ClosedRange<UInt64>]) -> (ram: ClosedRange<UInt64>, blocked: ClosedRange<UInt64>)? {
        let merged = merge(allowed)
        for r in ram where r.size > 0 {
            let (last, wraps) = r.guest.addingReportingOverflow(r.size - 1)
            let range = r.guest...(wraps ? UInt64.max : last)
            if wraps { return (range, range) }
            if let b = blockedPart(of: range, merged: merged) { return (range, b) }
        }
        return nil
    }

    /// `allowed` sorted, with overlapping and adjacent ranges joined.
    static func merge(_ allowed: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var out = [ClosedRange<UInt64>]()
        for a in allowed.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let l = out.last, l.upperBound == .max || a.lowerBound <= l.upperBound + 1 {
                out[out.count - 1] = l.lowerBound...max(l.upperBound, a.upperBound)
            } else {
                out.append(a)
            }
        }
        return out
    }

    /// The first part of `range` outside every (merged) allowed range, or nil.
    static func blockedPart(of range: ClosedRange<UInt64>, merged: [ClosedRange<UInt64>]) -> ClosedRange<UInt64>? {
        var cursor = range.lowerBound
        for a in merged where a.upperBound >= cursor {
            if a.lowerBound > cursor { return cursor...min(range.upperBound, a.lowerBound - 1) }
            if a.upperBound >= range.upperBound { return nil }
            cursor = a.upperBound + 1 // a.upperBound < range.upperBound: no overflow
        }
        return cursor...range.upperBound
    }

    /// The x86 MSI address window (Intel SDM vol. 3, 11.11.1), which IOMMUs
    /// reserve for interrupt messages.
    static let msiWindow: ClosedRange<UInt64> = 0xFEE0_0000...0xFEEF_FFFF

    /// The text of `VFIOError.iovaConflict`.
    static func conflictMessage(guestRange: ClosedRange<UInt64>, allowed: [ClosedRange<UInt64>], devices: [String]) -> String {
        let merged = merge(allowed)
        let blocked = blockedPart(of: guestRange, merged: merged) ?? guestRange
        let mmu = devices.isEmpty ? "the IOMMU" : "the IOMMU of \(devices.joined(separator: ", "))"
        let list = merged.isEmpty ? "none" : merged.map(hexRange).joined(separator: ", ")
        var s = "guest RAM \(hexRange(guestRange)) is outside the IOVA ranges \(mmu) allows for DMA (\(list)), so it cannot be mapped at IOVA == guest physical address: "
        let below = "use less guest memory (machine.memory) so RAM stays below \(hex(blocked.lowerBound))"
        if let top = merged.last?.upperBound, blocked.lowerBound > top {
            var width = ""
            if top == .max { width = " (64-bit)" } else if (top + 1).nonzeroBitCount == 1 { width = " (\((top + 1).trailingZeroBitCount)-bit address width)" }
            s += "\(hexRange(blocked)) is above the IOMMU's limit \(hex(top))\(width); use less guest memory (machine.memory) so RAM stays below the IOMMU's limit"
        } else if merged.isEmpty {
            s += "the IOMMU allows no IOVA at all; check `dmesg` for IOMMU errors"
        } else if blocked.overlaps(msiWindow) {
            s += "\(hexRange(blocked)) overlaps the reserved MSI window \(hexRange(msiWindow)), where guest RAM must leave a hole; \(below)"
        } else {
            s += "\(hexRange(blocked)) is a reserved IOVA region (an RMRR/IVMD the firmware declares for a device of the group, see /sys/kernel/iommu_groups/*/reserved_regions); \(below), or assign another device"
        }
        return s
    }

    // MARK: - Mapping guest RAM

    /// Maps each guest RAM range readable and writable at IOVA == `guest`
    /// (pinning it); returns the bytes mapped and the time it took. On
    /// failure the ranges mapped by this call are unmapped again and the
    /// error names the range (ENOMEM: RLIMIT_MEMLOCK).
    @discardableResult
    public func mapGuestRAM(_ ranges: [(guest: UInt64, host: UInt64, size: UInt64)]) throws -> (bytes: UInt64, seconds: Double) {
        let start = ProcessStats.monotonicNanos
        var done = [ClosedRange<UInt64>]()
        let before = mappings.count
        var bytes: UInt64 = 0
        for r in ranges where r.size > 0 {
            do {
                try ioas.map(hostAddress: r.host, length: r.size, iova: r.guest, readable: true, writable: true)
            } catch {
                for m in done.reversed() { _ = try? ioas.unmap(iova: m.lowerBound, length: m.upperBound - m.lowerBound + 1) }
                mappings.removeSubrange(before...)
                let (last, wraps) = r.guest.addingReportingOverflow(r.size - 1)
                if case let VFIOError.ioctl(e) = error {
                    throw VFIOError.guestRAMMapFailed(guestRange: r.guest...(wraps ? .max : last), e)
                }
                throw error
            }
            let m = r.guest...(r.guest + (r.size - 1)) // map checked that this does not wrap
            done.append(m)
            mappings.append(m)
            bytes += r.size
        }
        return (bytes, Double(ProcessStats.monotonicNanos &- start) / 1e9)
    }

    /// Unmaps everything `mapGuestRAM` mapped. Tries every range; throws the
    /// first error after trying them all.
    public func unmapAll() throws {
        var first: Error?
        for m in mappings.reversed() {
            do { try ioas.unmap(iova: m.lowerBound, length: m.upperBound - m.lowerBound + 1) } catch { first = first ?? error }
        }
        mappings.removeAll()
        if let first { throw first }
    }
}
