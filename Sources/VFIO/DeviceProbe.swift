import Bits
import CShim
import HostSys

/// What `swiftvmm devices --probe BDF` found by driving the real iommufd + VFIO
/// cdev flow on one vfio-pci device, without a VM.
public struct DeviceProbeReport: Codable, Sendable {
    public struct Range: Codable, Sendable { public let start: UInt64; public let last: UInt64 }
    public struct DMAMap: Codable, Sendable {
        public let iova: UInt64
        public let length: UInt64
        public let mapMicroseconds: Double
        public let unmapMicroseconds: Double
        public let unmappedBytes: UInt64
        public let ok: Bool
    }
    public struct HardwareInfo: Codable, Sendable {
        public let type: String
        public let info: IOMMUHardwareInfo
        public let capReg: UInt64?
        public let ecapReg: UInt64?
        /// VT-d ECAP bit 7 (SC).
        public let snoopControl: Bool?
    }
    public struct Region: Codable, Sendable {
        public let index: UInt32
        public let size: UInt64
        public let flags: UInt32
        public let offset: UInt64
        public let readable: Bool
        public let writable: Bool
        public let mmap: Bool
        public let sparseMmapAreas: [Range]?
        public let msixMappable: Bool
        public let capabilities: [String]
    }
    public struct IRQ: Codable, Sendable {
        public let index: UInt32
        public let name: String
        public let count: UInt32
        public let flags: UInt32
    }

    public var bdf: String
    public var cdev: String
    public var ioasID: UInt32 = 0
    public var iovaRanges: [Range] = []
    public var iovaAlignment: UInt64 = 0
    public var dmaMap: DMAMap?
    public var deviceID: UInt32 = 0
    public var hardwareInfo: HardwareInfo?
    public var attachedPageTable: UInt32 = 0
    public var iovaRangesAttached: [Range] = []
    public var deviceFlags: UInt32 = 0
    public var isPCI = false
    public var supportsReset = false
    public var numRegions: UInt32 = 0
    public var numIRQs: UInt32 = 0
    public var regions: [Region] = []
    public var irqs: [IRQ] = []
    /// Indexes the kernel answered EINVAL for: this device does not have them.
    public var absentRegions: [UInt32] = []
    public var absentIRQs: [UInt32] = []
    /// "done", or why it was not done.
    public var reset = "not attempted"
    public var detached = false
    /// The other wrappers, each run once for real: step -> "ok ..." or the error.
    public var checks: [String: String] = [:]
}

/// Drives the modern flow on a real device: /dev/iommu, IOAS, IOVA ranges, a
/// timed DMA map/unmap of a memfd, the cdev's bind, hw info, attach, device /
/// region / IRQ info, reset, detach.
public enum DeviceProbe {
    /// The fixed IOVA for the test mapping: 4 GiB when it fits in an allowed
    /// range, else the first aligned place that does.
    static func chooseIOVA(ranges: [ClosedRange<UInt64>], length: UInt64, alignment: UInt64) -> UInt64? {
        let align = max(alignment, 2 << 20)
        func up(_ v: UInt64) -> UInt64? {
            let (s, o) = v.addingReportingOverflow(align - 1)
            return o ? nil : s & ~(align - 1)
        }
        for preferred in [UInt64(1) << 32, 0] {
            for r in ranges {
                guard let start = up(max(r.lowerBound, preferred)) else { continue }
                let (end, o) = start.addingReportingOverflow(length - 1)
                if !o, start >= r.lowerBound, end <= r.upperBound { return start }
            }
        }
        return nil
    }

    /// The monotonic clock in microseconds.
    static func now() -> Double {
        Double(ProcessStats.monotonicNanos) / 1e3
    }

    static func irqName(_ i: UInt32) -> String {
        switch i {
        case SHIM_VFIO_PCI_INTX_IRQ_INDEX: return "INTx"
        case SHIM_VFIO_PCI_MSI_IRQ_INDEX: return "MSI"
        case SHIM_VFIO_PCI_MSIX_IRQ_INDEX: return "MSI-X"
        case SHIM_VFIO_PCI_ERR_IRQ_INDEX: return "ERR"
        case SHIM_VFIO_PCI_REQ_IRQ_INDEX: return "REQ"
        default: return "index \(i)"
        }
    }

    static func region(_ r: VFIORegionInfo) -> DeviceProbeReport.Region {
        let caps = r.capabilities.map { c -> String in
            switch c {
            case let .sparseMmap(a): return "sparse-mmap(\(a.count) areas)"
            case let .type(t, s): return "type(\(t), \(s))"
            case .msixMappable: return "msix-mappable"
            case let .other(id, v): return "cap \(id) v\(v)"
            }
        }
        return .init(index: r.index, size: r.size, flags: r.flags, offset: r.offset,
                     readable: r.isReadable, writable: r.isWritable, mmap: r.isMappable,
                     sparseMmapAreas: r.sparseAreas?.map { .init(start: $0.offset, last: $0.offset &+ $0.size &- 1) },
                     msixMappable: r.msixMappable, capabilities: caps)
    }

    public static let mapSize = 64 << 20

    /// Runs the wrappers the flow above does not need, recording each outcome:
    /// options, an explicit HWPT (attach, replace back to the IOAS, destroy) and
    /// MSI-X through an eventfd.
    static func extraChecks(iommufd: IOMMUFD, ioas: IOAS, device: VFIODeviceCdev, irqs: [DeviceProbeReport.IRQ]) -> [String: String] {
        var out = [String: String]()
        func check(_ step: String, _ body: () throws -> String) {
            do { out[step] = "ok " + (try body()) } catch { out[step] = "\(error)" }
        }
        check("IOMMU_OPTION RLIMIT_MODE") { "\(try iommufd.option(SHIM_IOMMU_OPTION_RLIMIT_MODE))" }
        check("IOMMU_OPTION HUGE_PAGES") { "\(try iommufd.option(SHIM_IOMMU_OPTION_HUGE_PAGES, objectID: ioas.id))" }
        check("IOMMU_IOAS_IOVA_RANGES EMSGSIZE retry") {
            let a = try ioas.iovaRanges(initialCapacity: 1), b = try ioas.iovaRanges()
            guard a.ranges == b.ranges else { throw VFIOError.malformedReply("\(a.ranges.count) ranges after the retry, \(b.ranges.count) at once") }
            return "\(a.ranges.count) ranges, same as asked at once"
        }
        if let devid = device.deviceID {
            check("IOMMU_HWPT_ALLOC") {
                let hwpt = try iommufd.allocateHWPT(deviceID: devid, ptID: ioas.id)
                let onHWPT = try device.attach(ptID: hwpt)
                let back = try device.attach(ptID: ioas.id)
                try iommufd.destroy(hwpt)
                return "hwpt \(hwpt), attached \(onHWPT), back on \(back), destroyed"
            }
        }
        if let msix = irqs.first(where: { $0.index == SHIM_VFIO_PCI_MSIX_IRQ_INDEX }), msix.count > 0 {
            check("VFIO_DEVICE_SET_IRQS MSI-X") {
                let e = try EventFD(nonBlocking: true)
                try device.enable(.msix, eventfds: [e.fd.raw])
                try device.disable(.msix)
                return "vector 0 on an eventfd, then disabled"
            }
        }
        if irqs.contains(where: { $0.index == SHIM_VFIO_PCI_INTX_IRQ_INDEX && $0.count > 0 }) {
            check("VFIO_DEVICE_SET_IRQS INTx") {
                let trigger = try EventFD(nonBlocking: true), resample = try EventFD(nonBlocking: true)
                try device.enableINTx(trigger: trigger.fd.raw, resample: resample.fd.raw)
                try device.unmaskINTx()
                try device.disable(.intx)
                return "trigger and resample eventfds, unmask, then disabled"
            }
        }
        return out
    }

    /// `VFIO_DEVICE_GET_INFO`, then every region and IRQ index it announces.
    static func describe(_ device: VFIODeviceCdev, into rep: inout DeviceProbeReport) throws {
        let info = try device.info()
        rep.deviceFlags = info.flags
        rep.isPCI = info.isPCI
        rep.supportsReset = info.supportsReset
        rep.numRegions = info.numRegions
        rep.numIRQs = info.numIRQs
        // vfio-pci reports every index it knows (9 regions, 5 IRQ kinds) and
        // answers EINVAL for those this device lacks (VGA region without VGA,
        // ERR IRQ without PCIe): absent, not a failure.
        for i in 0..<min(info.numRegions, 64) {
            do { rep.regions.append(region(try device.regionInfo(i))) } catch VFIOError.ioctl(let e) where e.errno == Errno.EINVAL {
                rep.absentRegions.append(i)
            }
        }
        for i in 0..<min(info.numIRQs, 64) {
            do {
                let q = try device.irqInfo(i)
                rep.irqs.append(.init(index: q.index, name: irqName(q.index), count: q.count, flags: q.flags))
            } catch VFIOError.ioctl(let e) where e.errno == Errno.EINVAL {
                rep.absentIRQs.append(i)
            }
        }
    }

    public static func run(bdf: String, discovery: SysfsDiscovery, iommuPath: String = "/dev/iommu") throws -> DeviceProbeReport {
        _ = try discovery.checkAssignable(bdf)
        guard let cdevPath = discovery.cdev(bdf) else { throw VFIOError.noCdev(bdf: bdf) }
        var rep = DeviceProbeReport(bdf: bdf, cdev: cdevPath)

        let iommufd = try IOMMUFD.open(path: iommuPath)
        let ioas = try iommufd.allocateIOAS()
        rep.ioasID = ioas.id
        let (ranges, alignment) = try ioas.iovaRanges()
        rep.iovaRanges = ranges.map { .init(start: $0.lowerBound, last: $0.upperBound) }
        rep.iovaAlignment = alignment

        let memory = try SharedMemoryMapping(name: "swiftvmm-probe", size: mapSize)
        let length = UInt64(mapSize)
        guard let iova = chooseIOVA(ranges: ranges, length: length, alignment: alignment) else {
            throw VFIOError.malformedReply("no IOVA range of IOAS \(ioas.id) holds \(mapSize) bytes")
        }
        let t0 = now()
        try ioas.map(hostAddress: UInt64(UInt(bitPattern: memory.pointer)), length: length, iova: iova)
        let t1 = now()
        let unmapped = try ioas.unmap(iova: iova, length: length)
        let t2 = now()
        rep.dmaMap = .init(iova: iova, length: length, mapMicroseconds: (t1 - t0).rounded(), unmapMicroseconds: (t2 - t1).rounded(),
                           unmappedBytes: unmapped, ok: unmapped == length)

        let device = try VFIODeviceCdev.open(path: cdevPath)
        rep.deviceID = try device.bind(to: iommufd)
        let hw = try device.hardwareInfo(iommufd)
        switch hw {
        case let .intelVTd(_, cap, ecap):
            rep.hardwareInfo = .init(type: hw.name, info: hw, capReg: cap, ecapReg: ecap, snoopControl: hw.canEnforceSnoop)
        default:
            rep.hardwareInfo = .init(type: hw.name, info: hw, capReg: nil, ecapReg: nil, snoopControl: nil)
        }
        rep.attachedPageTable = try device.attach(ptID: ioas.id)
        rep.iovaRangesAttached = try ioas.iovaRanges().ranges.map { .init(start: $0.lowerBound, last: $0.upperBound) }

        try describe(device, into: &rep)
        rep.checks = extraChecks(iommufd: iommufd, ioas: ioas, device: device, irqs: rep.irqs)
        if rep.supportsReset {
            try device.reset()
            rep.reset = "done"
        } else {
            rep.reset = "not supported (VFIO_DEVICE_FLAGS_RESET clear)"
        }
        try device.detach()
        rep.detached = true
        try ioas.destroy()
        return rep
    }
}

extension DeviceProbeReport {
    public func text() -> String {
        var s = ["\(bdf) via \(cdev)"]
        s.append("IOAS \(ioasID), IOVA ranges (alignment \(hex(iovaAlignment))):")
        for r in iovaRanges { s.append("  \(hex(r.start))-\(hex(r.last))") }
        if let m = dmaMap {
            s.append("IOMMU_IOAS_MAP \(m.length >> 20) MiB memfd at IOVA \(hex(m.iova)): \(Int(m.mapMicroseconds)) us; IOMMU_IOAS_UNMAP: \(Int(m.unmapMicroseconds)) us (\(m.unmappedBytes) bytes)")
        }
        s.append("bound: devid \(deviceID)")
        if let h = hardwareInfo {
            var line = "IOMMU_GET_HW_INFO: \(h.type)"
            if case let .intelVTd(flags, _, _) = h.info {
                line += ", flags \(hex(UInt64(flags)))"
                if flags & SHIM_IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 != 0 { line += " (ERRATA_772415_SPR17)" }
            }
            if let c = h.capReg, let e = h.ecapReg {
                line += ", cap \(hex(c)), ecap \(hex(e)), ECAP bit 7 snoop control: \(h.snoopControl == true ? "set" : "clear")"
            }
            s.append(line)
        }
        s.append("attached to IOAS \(ioasID): page table \(attachedPageTable); IOVA ranges now: "
            + iovaRangesAttached.map { "\(hex($0.start))-\(hex($0.last))" }.joined(separator: ", "))
        s.append("device flags \(hex(UInt64(deviceFlags)))\(isPCI ? " (PCI)" : "")\(supportsReset ? " (reset)" : ""), \(numRegions) regions, \(numIRQs) IRQ indexes")
        for r in regions {
            var line = "  region \(r.index): size \(hex(r.size)) (\(r.size)), flags \(hex(UInt64(r.flags)))"
            var f = [String]()
            if r.readable { f.append("read") }
            if r.writable { f.append("write") }
            if r.mmap { f.append("mmap") }
            if !f.isEmpty { line += " [\(f.joined(separator: ","))]" }
            line += ", offset \(hex(r.offset))"
            if let a = r.sparseMmapAreas {
                line += ", sparse mmap " + (a.isEmpty ? "(none)" : a.map { "\(hex($0.start))-\(hex($0.last))" }.joined(separator: " "))
            }
            if r.msixMappable { line += ", MSI-X mappable" }
            let other = r.capabilities.filter { !$0.hasPrefix("sparse") && $0 != "msix-mappable" }
            if !other.isEmpty { line += ", caps " + other.joined(separator: " ") }
            s.append(line)
        }
        if !absentRegions.isEmpty { s.append("  absent regions: \(absentRegions.map(String.init).joined(separator: ", "))") }
        for q in irqs { s.append("  irq \(q.index) \(q.name): count \(q.count), flags \(hex(UInt64(q.flags)))") }
        if !absentIRQs.isEmpty { s.append("  absent IRQ indexes: \(absentIRQs.map(String.init).joined(separator: ", "))") }
        for (k, v) in checks.sorted(by: { $0.key < $1.key }) { s.append("\(k): \(v)") }
        s.append("VFIO_DEVICE_RESET: \(reset)")
        s.append(detached ? "detached, closed" : "not detached")
        return s.joined(separator: "\n")
    }
}
