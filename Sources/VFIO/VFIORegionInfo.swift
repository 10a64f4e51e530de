import Bits
import CShim

/// One region of a VFIO device (a BAR, the ROM, config space) and what its
/// capability chain says about it.
public struct VFIORegionInfo: Equatable, Sendable {
    public let index: UInt32
    public let flags: UInt32
    public let size: UInt64
    /// Offset of the region in the device fd (for pread/pwrite/mmap).
    public let offset: UInt64
    public let capabilities: [VFIORegionCapability]

    public var isReadable: Bool { flags & SHIM_VFIO_REGION_INFO_FLAG_READ != 0 }
    public var isWritable: Bool { flags & SHIM_VFIO_REGION_INFO_FLAG_WRITE != 0 }
    public var isMappable: Bool { flags & SHIM_VFIO_REGION_INFO_FLAG_MMAP != 0 }

    /// The parts of the region that may be mmapped (sparse mmap cap), nil when
    /// the whole region may be (or none, see `isMappable`).
    public var sparseAreas: [VFIOSparseArea]? {
        for c in capabilities { if case let .sparseMmap(a) = c { return a } }
        return nil
    }

    /// The MSI-X table in this BAR may be mmapped too (the kernel traps it otherwise).
    public var msixMappable: Bool { capabilities.contains(.msixMappable) }
}

public struct VFIOSparseArea: Equatable, Sendable {
    public let offset: UInt64
    public let size: UInt64
}

public enum VFIORegionCapability: Equatable, Sendable {
    /// VFIO_REGION_INFO_CAP_SPARSE_MMAP: only these areas may be mmapped.
    case sparseMmap([VFIOSparseArea])
    /// VFIO_REGION_INFO_CAP_TYPE: a device-specific region.
    case type(type: UInt32, subtype: UInt32)
    /// VFIO_REGION_INFO_CAP_MSIX_MAPPABLE.
    case msixMappable
    /// A capability this build does not decode.
    case other(id: UInt16, version: UInt16)
}

extension VFIORegionInfo {
    /// Offsets in `struct vfio_region_info` (linux/vfio.h; asserted in vfio_asserts.c).
    static let flagsOffset = 4, indexOffset = 8, capOffsetOffset = 12, sizeOffset = 16, offsetOffset = 24
    /// Sparse areas: `nr_areas` at +8 of the cap, areas (offset, size: u64) from +16.
    static let sparseCountOffset = 8, sparseAreasOffset = 16, sparseAreaSize = 16
    /// Most capabilities a chain may have before we call it a loop.
    static let maxCapabilities = 64
    /// Most sparse areas we accept (a BAR split more finely than this is not real).
    static let maxSparseAreas = 1024

    /// Decodes a `VFIO_DEVICE_GET_REGION_INFO` reply of `bytes.count` bytes,
    /// walking the capability chain with every offset checked: a chain that
    /// points outside the reply, into the fixed header, backwards or in a loop
    /// is rejected.
    static func decode(_ bytes: [UInt8]) throws -> VFIORegionInfo {
        let header = Int(SHIM_SIZEOF_VFIO_REGION_INFO)
        guard bytes.count >= header,
              let flags = LE.u32(bytes, flagsOffset), let index = LE.u32(bytes, indexOffset),
              let capOffset = LE.u32(bytes, capOffsetOffset),
              let size = LE.u64(bytes, sizeOffset), let offset = LE.u64(bytes, offsetOffset) else {
            throw VFIOError.malformedReply("vfio_region_info of \(bytes.count) bytes")
        }
        var caps = [VFIORegionCapability]()
        if flags & SHIM_VFIO_REGION_INFO_FLAG_CAPS != 0 {
            caps = try decodeChain(bytes, first: Int(capOffset), header: header, what: "region \(index)")
        }
        return VFIORegionInfo(index: index, flags: flags, size: size, offset: offset, capabilities: caps)
    }

    /// Walks `struct vfio_info_cap_header { u16 id; u16 version; u32 next; }`.
    static func decodeChain(_ b: [UInt8], first: Int, header: Int, what: String) throws -> [VFIORegionCapability] {
        var caps = [VFIORegionCapability]()
        var at = first
        var seen = Set<Int>()
        let capHeader = Int(SHIM_SIZEOF_VFIO_INFO_CAP_HEADER)
        while at != 0 {
            guard at >= header else { throw VFIOError.malformedReply("\(what): capability at \(at) overlaps the fixed header") }
            guard at <= b.count - capHeader, let id = LE.u16(b, at), let version = LE.u16(b, at + 2),
                  let next = LE.u32(b, at + 4) else {
                throw VFIOError.malformedReply("\(what): capability at \(at) is outside the \(b.count)-byte reply")
            }
            guard seen.insert(at).inserted, seen.count <= maxCapabilities else {
                throw VFIOError.malformedReply("\(what): capability chain loops at \(at)")
            }
            switch id {
            case SHIM_VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                guard let n = LE.u32(b, at + sparseCountOffset) else {
                    throw VFIOError.malformedReply("\(what): sparse mmap capability at \(at) is truncated")
                }
                guard n <= maxSparseAreas else { throw VFIOError.malformedReply("\(what): \(n) sparse mmap areas") }
                let end = at + sparseAreasOffset + Int(n) * sparseAreaSize // n <= 1024: no overflow
                guard end <= b.count else {
                    throw VFIOError.malformedReply("\(what): \(n) sparse mmap areas run past the \(b.count)-byte reply")
                }
                var areas = [VFIOSparseArea]()
                for i in 0..<Int(n) {
                    let o = at + sparseAreasOffset + i * sparseAreaSize
                    if let off = LE.u64(b, o), let sz = LE.u64(b, o + 8) { areas.append(VFIOSparseArea(offset: off, size: sz)) }
                }
                caps.append(.sparseMmap(areas))
            case SHIM_VFIO_REGION_INFO_CAP_TYPE:
                guard let t = LE.u32(b, at + 8), let s = LE.u32(b, at + 12) else {
                    throw VFIOError.malformedReply("\(what): type capability at \(at) is truncated")
                }
                caps.append(.type(type: t, subtype: s))
            case SHIM_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                caps.append(.msixMappable)
            default:
                caps.append(.other(id: id, version: version))
            }
            at = Int(next)
        }
        return caps
    }
}
