import Bits
import CShim
import HostSys

/// An iommufd context (`/dev/iommu`): owns IO address spaces, hardware page
/// tables and the devices bound to it. Closing it destroys all of them.
public final class IOMMUFD: Sendable {
    public let performer: IOCTLPerformer
    /// The device node, named in error messages.
    public let path: String

    public init(performer: IOCTLPerformer, path: String = "/dev/iommu") {
        self.performer = performer
        self.path = path
    }

    /// Opens `/dev/iommu`. ENOENT means the kernel has no CONFIG_IOMMUFD.
    public static func open(path: String = "/dev/iommu") throws -> IOMMUFD {
        do {
            return IOMMUFD(performer: try FileDescriptorPerformer.open(path, purpose: "iommufd (/dev/iommu)"), path: path)
        } catch let e as SysError {
            switch e.errno {
            case Errno.ENOENT, Errno.ENODEV, Errno.ENXIO: throw VFIOError.iommufdMissing(path: path)
            case Errno.EACCES, Errno.EPERM: throw VFIOError.permissionDenied(path: path)
            default: throw VFIOError.openFailed(path: path, e)
            }
        }
    }

    /// A new, empty IO address space. The corresponding ioctl is `IOMMU_IOAS_ALLOC`.
    public func allocateIOAS() throws -> IOAS {
        var a = iommu_ioas_alloc()
        a.size = SHIM_SIZEOF_IOMMU_IOAS_ALLOC
        try performer.call(SHIM_IOMMU_IOAS_ALLOC, &a, "IOMMU_IOAS_ALLOC on \(path)")
        return IOAS(iommufd: self, id: a.out_ioas_id)
    }

    /// Destroys object `id` (IOAS, HWPT). The corresponding ioctl is `IOMMU_DESTROY`.
    public func destroy(_ id: UInt32) throws {
        var d = iommu_destroy()
        d.size = SHIM_SIZEOF_IOMMU_DESTROY
        d.id = id
        try performer.call(SHIM_IOMMU_DESTROY, &d, "IOMMU_DESTROY of object \(id) on \(path)")
    }

    /// A hardware page table for bound device `deviceID` on top of `ptID`
    /// (an IOAS). The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
    public func allocateHWPT(deviceID: UInt32, ptID: UInt32, flags: UInt32 = 0) throws -> UInt32 {
        var h = iommu_hwpt_alloc()
        h.size = SHIM_SIZEOF_IOMMU_HWPT_ALLOC
        h.flags = flags
        h.dev_id = deviceID
        h.pt_id = ptID
        try performer.call(SHIM_IOMMU_HWPT_ALLOC, &h, "IOMMU_HWPT_ALLOC on \(path) dev \(deviceID) pt \(ptID)")
        return h.out_hwpt_id
    }

    /// Reads (`set == nil`) or sets an iommufd option; returns its value.
    /// `objectID` 0 is the whole iommufd (RLIMIT_MODE), else an IOAS (HUGE_PAGES).
    /// The corresponding ioctl is `IOMMU_OPTION`.
    @discardableResult
    public func option(_ optionID: UInt32, objectID: UInt32 = 0, set value: UInt64? = nil) throws -> UInt64 {
        var o = iommu_option()
        o.size = SHIM_SIZEOF_IOMMU_OPTION
        o.option_id = optionID
        o.op = value == nil ? SHIM_IOMMU_OPTION_OP_GET : SHIM_IOMMU_OPTION_OP_SET
        o.object_id = objectID
        o.val64 = value ?? 0
        try performer.call(SHIM_IOMMU_OPTION, &o, "IOMMU_OPTION on \(path) \(optionID)")
        return o.val64
    }

    /// What the IOMMU behind bound device `deviceID` reports about itself.
    /// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
    public func hardwareInfo(deviceID: UInt32) throws -> IOMMUHardwareInfo {
        // Room for the largest known type (SMMUv3, 40 bytes); the kernel says
        // how much it filled in data_len and zeroes the rest.
        var data = [UInt8](repeating: 0, count: 64)
        var h = iommu_hw_info()
        h.size = SHIM_SIZEOF_IOMMU_HW_INFO
        h.dev_id = deviceID
        h.data_len = UInt32(data.count)
        try data.withUnsafeMutableBytes { buf in
            // SAFETY: `buf` is `data.count` bytes, the length passed as data_len,
            // and lives until the ioctl returns.
            h.data_uptr = UInt64(UInt(bitPattern: buf.baseAddress))
            try performer.call(SHIM_IOMMU_GET_HW_INFO, &h, "IOMMU_GET_HW_INFO on \(path) dev \(deviceID)")
        }
        return try Self.decodeHardwareInfo(type: h.out_data_type, length: h.data_len, data: data)
    }

    /// The typed view of `IOMMU_GET_HW_INFO`'s data.
    static func decodeHardwareInfo(type: UInt32, length: UInt32, data: [UInt8]) throws -> IOMMUHardwareInfo {
        let n = min(Int(length), data.count)
        let d = Array(data.prefix(n))
        switch type {
        case SHIM_IOMMU_HW_INFO_TYPE_NONE:
            return .none
        case SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD:
            guard let flags = LE.u32(d, Int(SHIM_IOMMU_HW_INFO_VTD_FLAGS)),
                  let cap = LE.u64(d, Int(SHIM_IOMMU_HW_INFO_VTD_CAP_REG)),
                  let ecap = LE.u64(d, Int(SHIM_IOMMU_HW_INFO_VTD_ECAP_REG)) else {
                throw VFIOError.malformedReply("IOMMU_GET_HW_INFO: VT-d data is \(length) bytes, expected \(SHIM_IOMMU_HW_INFO_VTD_SIZE)")
            }
            return .intelVTd(flags: flags, capReg: cap, ecapReg: ecap)
        case SHIM_IOMMU_HW_INFO_TYPE_ARM_SMMUV3:
            // flags, __reserved, idr[6], iidr, aidr: ten u32.
            let words = (0..<10).compactMap { LE.u32(d, $0 * 4) }
            guard words.count == 10 else {
                throw VFIOError.malformedReply("IOMMU_GET_HW_INFO: SMMUv3 data is \(length) bytes, expected \(SHIM_IOMMU_HW_INFO_ARM_SMMUV3_SIZE)")
            }
            return .armSMMUv3(flags: words[0], idr: Array(words[2..<8]), iidr: words[8], aidr: words[9])
        default:
            return .unknown(type: type)
        }
    }
}

/// An IO address space: the IOVA -> host memory map devices attached to it use.
/// Map guest RAM here at IOVA == guest physical address.
public final class IOAS: Sendable {
    public let iommufd: IOMMUFD
    public let id: UInt32

    init(iommufd: IOMMUFD, id: UInt32) {
        self.iommufd = iommufd
        self.id = id
    }

    /// The IOVA ranges devices may use now and the required alignment; they
    /// narrow as devices attach. Asks again with a bigger array while the kernel
    /// answers EMSGSIZE. The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
    public func iovaRanges() throws -> (ranges: [ClosedRange<UInt64>], alignment: UInt64) {
        try iovaRanges(initialCapacity: 8)
    }

    /// `iovaRanges()` starting with room for `initialCapacity` ranges (tests
    /// and the probe use 1 to exercise the EMSGSIZE retry).
    func iovaRanges(initialCapacity: UInt32) throws -> (ranges: [ClosedRange<UInt64>], alignment: UInt64) {
        var capacity = max(initialCapacity, 1)
        for _ in 0..<4 {
            var storage = [iommu_iova_range](repeating: iommu_iova_range(), count: Int(capacity))
            var r = iommu_ioas_iova_ranges()
            r.size = SHIM_SIZEOF_IOMMU_IOAS_IOVA_RANGES
            r.ioas_id = id
            r.num_iovas = capacity
            do {
                try storage.withUnsafeMutableBufferPointer { buf in
                    // SAFETY: `buf` holds `capacity` ranges, the count passed in num_iovas.
                    r.allowed_iovas = UInt64(UInt(bitPattern: buf.baseAddress))
                    try iommufd.performer.call(SHIM_IOMMU_IOAS_IOVA_RANGES, &r, "IOMMU_IOAS_IOVA_RANGES on \(iommufd.path) ioas \(id)")
                }
            } catch VFIOError.ioctl(let e) where e.errno == Errno.EMSGSIZE && r.num_iovas > capacity && r.num_iovas <= 4096 {
                capacity = r.num_iovas
                continue
            }
            guard r.num_iovas <= capacity else {
                throw VFIOError.malformedReply("IOMMU_IOAS_IOVA_RANGES: \(r.num_iovas) ranges in an array of \(capacity)")
            }
            var out = [ClosedRange<UInt64>]()
            for x in storage.prefix(Int(r.num_iovas)) {
                guard x.start <= x.last else {
                    throw VFIOError.malformedReply("IOMMU_IOAS_IOVA_RANGES: range start 0x\(String(x.start, radix: 16)) > last 0x\(String(x.last, radix: 16))")
                }
                out.append(x.start...x.last)
            }
            return (out, r.out_iova_alignment)
        }
        throw VFIOError.malformedReply("IOMMU_IOAS_IOVA_RANGES: the range count kept growing")
    }

    /// Maps `length` bytes of this process's memory at `hostAddress` for device
    /// DMA, at `iova` when given (IOMMU_IOAS_MAP_FIXED_IOVA) or where the kernel
    /// chooses; returns the IOVA. The memory is pinned until unmapped.
    /// The corresponding ioctl is `IOMMU_IOAS_MAP`.
    @discardableResult
    public func map(hostAddress: UInt64, length: UInt64, iova: UInt64?, readable: Bool = true, writable: Bool = true) throws -> UInt64 {
        guard length > 0 else { throw VFIOError.invalidArgument("IOAS map of 0 bytes") }
        guard !hostAddress.addingReportingOverflow(length - 1).overflow,
              !(iova ?? 0).addingReportingOverflow(length - 1).overflow else {
            throw VFIOError.invalidArgument("IOAS map of 0x\(String(length, radix: 16)) bytes wraps the address space")
        }
        var m = iommu_ioas_map()
        m.size = SHIM_SIZEOF_IOMMU_IOAS_MAP
        m.flags = (iova != nil ? SHIM_IOMMU_IOAS_MAP_FIXED_IOVA : 0)
            | (readable ? SHIM_IOMMU_IOAS_MAP_READABLE : 0)
            | (writable ? SHIM_IOMMU_IOAS_MAP_WRITEABLE : 0)
        m.ioas_id = id
        m.user_va = hostAddress
        m.length = length
        m.iova = iova ?? 0
        let at = iova.map { " at IOVA 0x\(String($0, radix: 16))" } ?? ""
        try iommufd.performer.call(SHIM_IOMMU_IOAS_MAP, &m, "IOMMU_IOAS_MAP on \(iommufd.path) 0x\(String(length, radix: 16)) bytes\(at)")
        return m.iova
    }

    /// Unmaps `[iova, iova + length)`, which must cover whole earlier maps;
    /// returns the bytes unmapped. The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    @discardableResult
    public func unmap(iova: UInt64, length: UInt64) throws -> UInt64 {
        var u = iommu_ioas_unmap()
        u.size = SHIM_SIZEOF_IOMMU_IOAS_UNMAP
        u.ioas_id = id
        u.iova = iova
        u.length = length
        try iommufd.performer.call(SHIM_IOMMU_IOAS_UNMAP, &u, "IOMMU_IOAS_UNMAP on \(iommufd.path) IOVA 0x\(String(iova, radix: 16))")
        return u.length
    }

    /// Destroys this IOAS (it must have no devices attached).
    /// The corresponding ioctl is `IOMMU_DESTROY`.
    public func destroy() throws { try iommufd.destroy(id) }
}
