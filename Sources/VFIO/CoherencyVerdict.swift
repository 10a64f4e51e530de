/// Whether assigning a device makes the guest's WBINVD a real cache flush.
///
/// KVM turns WBINVD into a no-op unless the VM has non-coherent DMA
/// (`kvm_arch_has_noncoherent_dma`). It learns that only through the kvm-vfio
/// pseudo device: every VFIO file added with `KVM_DEV_VFIO_FILE_ADD` is asked
/// `vfio_file_enforced_coherent()`, which is the IOMMU's
/// `IOMMU_CAP_ENFORCE_CACHE_COHERENCY` for the device, and one non-coherent
/// file registers non-coherent DMA for the whole VM. See README.md.
public enum CoherencyVerdict: Equatable, Sendable {
    /// Device DMA always snoops the CPU caches: WBINVD can stay a no-op.
    case wbinvdIsNoOp(reason: String)
    /// Device DMA may bypass the caches: WBINVD must write back and invalidate for real.
    case wbinvdMustFlush(reason: String)

    public var mustFlush: Bool {
        if case .wbinvdMustFlush = self { return true }
        return false
    }

    public var reason: String {
        switch self {
        case let .wbinvdIsNoOp(r), let .wbinvdMustFlush(r): return r
        }
    }

    /// One line for people.
    public var text: String {
        switch self {
        case let .wbinvdIsNoOp(r): return "WBINVD stays a no-op: \(r)"
        case let .wbinvdMustFlush(r): return "WBINVD must really flush: \(r)"
        }
    }

    /// The verdict for one device.
    ///
    /// - `hwptEnforcesCoherency`: what the kernel said about the page table the
    ///   device is attached to, when known; it wins over everything else because
    ///   it is what the IOMMU actually does. Nil: decide from `iommu`.
    /// - `deviceNoSnoopEnabled`: PCIe Device Control bit 11 as the host sees it now.
    /// - `vmmForbidsNoSnoop`: the VMM traps guest writes to Device Control and
    ///   keeps bit 11 clear. SwiftVMM does not do this yet, so the default is false.
    ///
    /// Rules, in order:
    /// 1. The kernel reported the hwpt: enforced => no-op, not enforced => flush.
    /// 2. The IOMMU can force snoop (VT-d ECAP.SC, SMMUv3 IDR0.COHACC, AMD-Vi)
    ///    => every DMA snoops => no-op.
    /// 3. Unknown IOMMU (no hardware info, unknown type) => flush: assume the worst.
    /// 4. The IOMMU cannot force snoop and the device has No Snoop enabled => flush.
    /// 5. The IOMMU cannot force snoop and No Snoop is disabled: coherent today,
    ///    but the guest owns the device's config space and can set the bit with one
    ///    config write, and KVM decides from the IOMMU capability alone, so adding
    ///    the device to kvm-vfio makes WBINVD real anyway => flush, unless the VMM
    ///    forbids the bit, then no-op.
    public static func decide(
        iommu: IOMMUHardwareInfo,
        hwptEnforcesCoherency: Bool?,
        deviceNoSnoopEnabled: Bool,
        vmmForbidsNoSnoop: Bool = false
    ) -> CoherencyVerdict {
        if let enforced = hwptEnforcesCoherency {
            return enforced
                ? .wbinvdIsNoOp(reason: "the kernel enforces cache coherency on the device's IOMMU page table, so its DMA always snoops")
                : .wbinvdMustFlush(reason: "the kernel reports the device's IOMMU page table does not enforce cache coherency, so no-snoop DMA bypasses the CPU caches")
        }
        switch iommu.canEnforceSnoop {
        case .some(true):
            return .wbinvdIsNoOp(reason: snoopReason(iommu))
        case .none:
            return .wbinvdMustFlush(reason: "\(iommu.name): cannot tell whether it forces DMA to snoop, so assume device DMA is not coherent")
        case .some(false):
            break
        }
        let noSC = "\(iommu.name) cannot force snoop (\(missingCapability(iommu)))"
        if deviceNoSnoopEnabled {
            return .wbinvdMustFlush(reason: "\(noSC) and the device has PCIe No Snoop enabled (Device Control bit 11), so its DMA may bypass the CPU caches")
        }
        if vmmForbidsNoSnoop {
            return .wbinvdIsNoOp(reason: "\(noSC), but the device has No Snoop disabled and the VMM keeps the guest from enabling it")
        }
        return .wbinvdMustFlush(reason: "\(noSC); the device has No Snoop disabled, so it is coherent in practice, but the guest can enable No Snoop with a config write and KVM decides from the IOMMU alone")
    }

    /// The verdict for a VM: one device that needs real flushes makes every
    /// WBINVD of the VM real (KVM's non-coherent DMA count is per VM).
    public static func decideVM(_ devices: [CoherencyVerdict]) -> CoherencyVerdict {
        let flushing = devices.filter(\.mustFlush)
        if devices.isEmpty {
            return .wbinvdIsNoOp(reason: "no assigned devices, so there is no device DMA to be coherent with")
        }
        if flushing.isEmpty {
            return .wbinvdIsNoOp(reason: "every assigned device's DMA snoops the CPU caches")
        }
        let n = flushing.count
        return .wbinvdMustFlush(reason: "\(n) of \(devices.count) assigned device\(devices.count == 1 ? "" : "s") may do non-coherent DMA: \(flushing[0].reason)")
    }

    private static func snoopReason(_ iommu: IOMMUHardwareInfo) -> String {
        switch iommu {
        case .intelVTd: return "Intel VT-d has snoop control (ECAP bit 7), so it forces device DMA to snoop the CPU caches"
        case .armSMMUv3: return "ARM SMMUv3 has coherent access (IDR0 bit 4), so device DMA is cache coherent"
        case .amdVi: return "AMD-Vi enforces cache coherency for device DMA"
        case .none, .unknown: return "\(iommu.name) enforces cache coherency"
        }
    }

    private static func missingCapability(_ iommu: IOMMUHardwareInfo) -> String {
        switch iommu {
        case .intelVTd: return "ECAP bit 7, snoop control, is clear"
        case .armSMMUv3: return "IDR0 bit 4, COHACC, is clear"
        default: return "no cache coherency enforcement"
        }
    }
}
