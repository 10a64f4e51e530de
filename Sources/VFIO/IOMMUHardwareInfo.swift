import CShim

/// What the IOMMU behind a device says about itself: the reply of
/// `IOMMU_GET_HW_INFO` (linux/iommufd.h), or the same registers read from
/// sysfs (`/sys/class/iommu/dmarN/intel-iommu/{cap,ecap}`) before any device
/// is bound.
public enum IOMMUHardwareInfo: Equatable, Sendable, Codable {
    /// Intel VT-d: `struct iommu_hw_info_vtd`. `capReg` and `ecapReg` are the
    /// Capability and Extended Capability registers (VT-d spec 4.0, 11.4.2 and 11.4.3).
    case intelVTd(flags: UInt32, capReg: UInt64, ecapReg: UInt64)
    /// ARM SMMUv3: `struct iommu_hw_info_arm_smmuv3` (Linux 6.14+): IDR0-5, IIDR, AIDR.
    case armSMMUv3(flags: UInt32, idr: [UInt32], iidr: UInt32, aidr: UInt32)
    /// AMD-Vi, known from sysfs only (Linux 6.12 reports `IOMMU_HW_INFO_TYPE_NONE` for it).
    case amdVi
    /// The driver reports nothing (`IOMMU_HW_INFO_TYPE_NONE`).
    case none
    /// A type this build does not know.
    case unknown(type: UInt32)

    /// VT-d ECAP bit 7, SC: Snoop Control. When set the IOMMU can force every
    /// DMA of a domain to snoop the CPU caches, whatever the device's
    /// No Snoop attribute says (VT-d spec 4.0, 11.4.3; Linux `ecap_sc_support`).
    public static let vtdSnoopControlBit: UInt64 = SHIM_VTD_ECAP_SC

    /// ARM SMMUv3 IDR0 bit 4, COHACC: coherent access to translations, queues
    /// and (for Linux) the IOMMU_CAP_CACHE_COHERENCY capability
    /// (SMMUv3 spec 6.3.1; Linux `ARM_SMMU_FEAT_COHERENCY`).
    public static let smmuv3CoherentAccessBit: UInt32 = 1 << 4

    /// True when the IOMMU can enforce cache coherency of device DMA
    /// (Linux `IOMMU_CAP_ENFORCE_CACHE_COHERENCY`), false when it cannot,
    /// nil when nothing is known.
    public var canEnforceSnoop: Bool? {
        switch self {
        case let .intelVTd(_, _, ecap): return ecap & Self.vtdSnoopControlBit != 0
        case let .armSMMUv3(_, idr, _, _):
            guard let idr0 = idr.first else { return nil }
            return idr0 & Self.smmuv3CoherentAccessBit != 0
        case .amdVi: return true
        case .none, .unknown: return nil
        }
    }

    /// A short name for messages.
    public var name: String {
        switch self {
        case .intelVTd: return "Intel VT-d"
        case .armSMMUv3: return "ARM SMMUv3"
        case .amdVi: return "AMD-Vi"
        case .none: return "IOMMU without hardware info"
        case let .unknown(t): return "IOMMU of unknown type \(t)"
        }
    }
}
