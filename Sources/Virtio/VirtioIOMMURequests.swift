import Bits

// The virtio-iommu wire formats (virtio 1.2 §5.13; the same layouts as
// Linux's include/uapi/linux/virtio_iommu.h, "v0.12"). Every integer is
// little-endian. Nothing here touches guest memory: requests are decoded from
// the bytes the device copied out of a chain, replies are encoded into bytes
// it copies in.

extension VirtioIOMMU {
    /// §5.13.3 "Feature bits", as masks.
    public enum Feature {
        public static let inputRange: UInt64 = 1 << 0   // VIRTIO_IOMMU_F_INPUT_RANGE
        public static let domainRange: UInt64 = 1 << 1  // VIRTIO_IOMMU_F_DOMAIN_RANGE
        public static let mapUnmap: UInt64 = 1 << 2     // VIRTIO_IOMMU_F_MAP_UNMAP
        /// Superseded by BYPASS_CONFIG; "New devices SHOULD NOT offer" it (§5.13.3.2). Not offered.
        public static let bypass: UInt64 = 1 << 3      // VIRTIO_IOMMU_F_BYPASS
        public static let probe: UInt64 = 1 << 4       // VIRTIO_IOMMU_F_PROBE
        /// MMIO mappings (peer-to-peer, MSI doorbells mapped by the guest). Not offered.
        public static let mmio: UInt64 = 1 << 5        // VIRTIO_IOMMU_F_MMIO
        public static let bypassConfig: UInt64 = 1 << 6 // VIRTIO_IOMMU_F_BYPASS_CONFIG
    }

    /// §5.13.4 `struct virtio_iommu_config`: field offsets; 40 bytes.
    public enum ConfigOffset {
        public static let pageSizeMask = 0     // le64
        public static let inputRangeStart = 8  // le64
        public static let inputRangeEnd = 16   // le64, inclusive
        public static let domainRangeStart = 24 // le32
        public static let domainRangeEnd = 28  // le32, inclusive
        public static let probeSize = 32       // le32
        public static let bypass = 36          // u8 (then u8 reserved[3])
        public static let size = 40
    }

    /// §5.13.6 `virtio_iommu_req_head.type`.
    public enum RequestType {
        public static let attach: UInt8 = 1 // VIRTIO_IOMMU_T_ATTACH
        public static let detach: UInt8 = 2 // VIRTIO_IOMMU_T_DETACH
        public static let map: UInt8 = 3    // VIRTIO_IOMMU_T_MAP
        public static let unmap: UInt8 = 4  // VIRTIO_IOMMU_T_UNMAP
        public static let probe: UInt8 = 5  // VIRTIO_IOMMU_T_PROBE
    }

    /// §5.13.6 `virtio_iommu_req_tail.status`.
    public enum Status: UInt8, CaseIterable, Hashable, Sendable, CustomStringConvertible {
        case ok = 0          // VIRTIO_IOMMU_S_OK
        case ioError = 1     // VIRTIO_IOMMU_S_IOERR
        case unsupported = 2 // VIRTIO_IOMMU_S_UNSUPP
        case deviceError = 3 // VIRTIO_IOMMU_S_DEVERR
        case invalid = 4     // VIRTIO_IOMMU_S_INVAL
        case range = 5       // VIRTIO_IOMMU_S_RANGE
        case noEntry = 6     // VIRTIO_IOMMU_S_NOENT
        case fault = 7       // VIRTIO_IOMMU_S_FAULT
        case noMemory = 8    // VIRTIO_IOMMU_S_NOMEM

        public var description: String {
            switch self {
            case .ok: return "OK"
            case .ioError: return "IOERR"
            case .unsupported: return "UNSUPP"
            case .deviceError: return "DEVERR"
            case .invalid: return "INVAL"
            case .range: return "RANGE"
            case .noEntry: return "NOENT"
            case .fault: return "FAULT"
            case .noMemory: return "NOMEM"
            }
        }
    }

    /// §5.13.6.2 ATTACH `flags`.
    public enum AttachFlag {
        public static let bypass: UInt32 = 1 << 0 // VIRTIO_IOMMU_ATTACH_F_BYPASS
    }

    /// §5.13.6.4 MAP `flags`.
    public enum MapFlag {
        public static let read: UInt32 = 1 << 0  // VIRTIO_IOMMU_MAP_F_READ
        public static let write: UInt32 = 1 << 1 // VIRTIO_IOMMU_MAP_F_WRITE
        /// Only with VIRTIO_IOMMU_F_MMIO, which is not offered: a MAP with it gets INVAL.
        public static let mmio: UInt32 = 1 << 2  // VIRTIO_IOMMU_MAP_F_MMIO
    }

    /// §5.13.6.7-8 PROBE properties.
    public enum ProbeProperty {
        /// `struct virtio_iommu_probe_property` type: the end of the list (all zeros).
        public static let none: UInt16 = 0     // VIRTIO_IOMMU_PROBE_T_NONE (linux/virtio_iommu.h)
        public static let resvMem: UInt16 = 1  // VIRTIO_IOMMU_PROBE_T_RESV_MEM
        /// `struct virtio_iommu_probe_resv_mem` subtypes.
        public static let reserved: UInt8 = 0  // VIRTIO_IOMMU_RESV_MEM_T_RESERVED
        public static let msi: UInt8 = 1       // VIRTIO_IOMMU_RESV_MEM_T_MSI
        /// The whole RESV_MEM property: 4-byte header (le16 type, le16
        /// length), u8 subtype, u8 reserved[3], le64 start, le64 end.
        public static let resvMemSize = 24
        /// What `length` holds for RESV_MEM: the size without the header.
        public static let resvMemLength: UInt16 = 20
    }

    /// §5.13.6.9 `struct virtio_iommu_fault` `reason`.
    public enum FaultReason: UInt8, Sendable {
        case unknown = 0 // VIRTIO_IOMMU_FAULT_R_UNKNOWN
        case domain = 1  // VIRTIO_IOMMU_FAULT_R_DOMAIN: the endpoint is in no domain
        case mapping = 2 // VIRTIO_IOMMU_FAULT_R_MAPPING: not mapped, or not with these permissions
    }

    /// §5.13.6.9 `struct virtio_iommu_fault` `flags` (EXEC from linux/virtio_iommu.h).
    /// VIRTIO_IOMMU_FAULT_F_ADDRESS (0x100) is set by `reportFault` when it is given an address.
    public struct FaultFlags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let read = FaultFlags(rawValue: 1 << 0)  // VIRTIO_IOMMU_FAULT_F_READ
        public static let write = FaultFlags(rawValue: 1 << 1) // VIRTIO_IOMMU_FAULT_F_WRITE
        public static let exec = FaultFlags(rawValue: 1 << 2)  // VIRTIO_IOMMU_FAULT_F_EXEC
        public static let address = FaultFlags(rawValue: 1 << 8) // VIRTIO_IOMMU_FAULT_F_ADDRESS
    }

    /// `struct virtio_iommu_req_head` and `_tail`: 4 bytes each.
    static let headSize = 4
    static let tailSize = 4
    /// `struct virtio_iommu_fault`: 24 bytes.
    public static let faultSize = 24
}

/// One request's device-readable fields after the 4-byte head, decoded.
/// Field names are the spec's; the sizes (`payloadSize`) are those of the
/// §5.13.6 structs without head and tail.
enum VIOMMURequest: Equatable {
    /// §5.13.6.2: le32 domain, le32 endpoint, le32 flags, u8 reserved[4].
    case attach(domain: UInt32, endpoint: UInt32, flags: UInt32, reserved: UInt32)
    /// §5.13.6.3: le32 domain, le32 endpoint, u8 reserved[8] (ignored, §5.13.6.3.2).
    case detach(domain: UInt32, endpoint: UInt32)
    /// §5.13.6.4: le32 domain, le64 virt_start, le64 virt_end (inclusive), le64 phys_start, le32 flags.
    case map(domain: UInt32, virtStart: UInt64, virtEnd: UInt64, physStart: UInt64, flags: UInt32)
    /// §5.13.6.6: le32 domain, le64 virt_start, le64 virt_end (inclusive), u8 reserved[4].
    case unmap(domain: UInt32, virtStart: UInt64, virtEnd: UInt64, reserved: UInt32)
    /// §5.13.6.7: le32 endpoint, u8 reserved[64] (ignored, §5.13.6.7.2).
    case probe(endpoint: UInt32)

    /// Bytes after the head that a request of `type` needs, or nil for a
    /// type this device does not know.
    static func payloadSize(type: UInt8) -> Int? {
        switch type {
        case VirtioIOMMU.RequestType.attach: return 16
        case VirtioIOMMU.RequestType.detach: return 16
        case VirtioIOMMU.RequestType.map: return 32
        case VirtioIOMMU.RequestType.unmap: return 24
        case VirtioIOMMU.RequestType.probe: return 68
        default: return nil
        }
    }

    /// The largest `payloadSize`: what the device copies out of a chain at most.
    static let maxPayloadSize = 68

    /// Decodes `payload` (the readable bytes after the head) as a request of
    /// `type`; nil when the type is unknown or `payload` is too short.
    /// Bytes past the struct are ignored (QEMU does the same).
    init?(type: UInt8, payload p: [UInt8]) {
        guard let size = Self.payloadSize(type: type), p.count >= size else { return nil }
        // Every read below is inside `size` bytes, which `p` has; LE.read
        // returns nil rather than trapping anyway.
        func u32(_ o: Int) -> UInt32 { LE.u32(p, o) ?? 0 }
        func u64(_ o: Int) -> UInt64 { LE.u64(p, o) ?? 0 }
        switch type {
        case VirtioIOMMU.RequestType.attach:
            self = .attach(domain: u32(0), endpoint: u32(4), flags: u32(8), reserved: u32(12))
        case VirtioIOMMU.RequestType.detach:
            self = .detach(domain: u32(0), endpoint: u32(4))
        case VirtioIOMMU.RequestType.map:
            self = .map(domain: u32(0), virtStart: u64(4), virtEnd: u64(12), physStart: u64(20), flags: u32(28))
        case VirtioIOMMU.RequestType.unmap:
            self = .unmap(domain: u32(0), virtStart: u64(4), virtEnd: u64(12), reserved: u32(20))
        default: // probe: the only other type payloadSize knows
            self = .probe(endpoint: u32(0))
        }
    }
}

enum VIOMMUWire {
    /// `struct virtio_iommu_req_tail`: the status, reserved bytes zero (§5.13.6.1: SHOULD).
    static func tail(_ status: VirtioIOMMU.Status) -> [UInt8] {
        [status.rawValue, 0, 0, 0]
    }

    /// One `struct virtio_iommu_probe_resv_mem` (§5.13.6.8.1).
    static func resvMem(subtype: UInt8, range: ClosedRange<UInt64>) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VirtioIOMMU.ProbeProperty.resvMemSize)
        LE.put(VirtioIOMMU.ProbeProperty.resvMem, into: &b, at: 0)
        LE.put(VirtioIOMMU.ProbeProperty.resvMemLength, into: &b, at: 2)
        b[4] = subtype
        LE.put(range.lowerBound, into: &b, at: 8)
        LE.put(range.upperBound, into: &b, at: 16)
        return b
    }

    /// `struct virtio_iommu_fault` (§5.13.6.9); reserved fields zero.
    static func fault(reason: VirtioIOMMU.FaultReason, flags: UInt32, endpoint: UInt32, address: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VirtioIOMMU.faultSize)
        b[0] = reason.rawValue
        LE.put(flags, into: &b, at: 4)
        LE.put(endpoint, into: &b, at: 8)
        LE.put(address, into: &b, at: 16)
        return b
    }
}
