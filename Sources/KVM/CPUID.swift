import CShim

/// One CPUID leaf (struct kvm_cpuid_entry2).
public struct CPUIDEntry: Equatable, Sendable {
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }

    /// The first `nent` of `entries` (the count KVM wrote back, clamped to the room it had).
    static func decode(nent: UInt32, _ entries: UnsafeMutableBufferPointer<kvm_cpuid_entry2>) -> [CPUIDEntry] {
        let n = min(Int(nent), entries.count)
        return (0..<n).map { i in
            let e = entries[i]
            return CPUIDEntry(function: e.function, index: e.index, flags: e.flags, eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
        }
    }
}

/// The guest's CPUID, derived from what KVM supports (Intel SDM vol. 2A, CPUID).
public enum CPUIDPolicy {
    /// Filters `supported` for vCPU `apicID` of `vcpuCount`:
    /// - leaf 1: EBX[31:24] = initial APIC ID, EBX[23:16] = logical processors,
    ///   ECX bit 31 = running under a hypervisor, EDX bit 28 (HTT) when > 1 CPU,
    ///   ECX bit 24 (TSC-deadline timer) when the in-kernel LAPIC emulates it
    ///   (KVM_CAP_TSC_DEADLINE_TIMER; KVM_GET_SUPPORTED_CPUID leaves it to
    ///   userspace, api.rst). Without it Linux calibrates the LAPIC timer
    ///   against the PIT, which fails under nested emulation and leaves the
    ///   guest on slow PIT broadcast ticks;
    /// - leaves 0xB and 0x1F: EDX = x2APIC ID;
    /// - leaf 6 ECX bit 3 (performance-energy bias) cleared: no such MSR is emulated.
    public static func guestCPUID(supported: [CPUIDEntry], apicID: UInt32, vcpuCount: UInt32, tscDeadline: Bool = false) -> [CPUIDEntry] {
        supported.map { e in
            var e = e
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_FFFF) | ((apicID & 0xFF) << 24) | ((min(vcpuCount, 255) & 0xFF) << 16)
                e.ecx |= 1 << 31
                if vcpuCount > 1 { e.edx |= 1 << 28 }
                if tscDeadline { e.ecx |= 1 << 24 }
            case 0xB, 0x1F:
                e.edx = apicID
            case 6:
                e.ecx &= ~(UInt32(1) << 3)
            default:
                break
            }
            return e
        }
    }
}
