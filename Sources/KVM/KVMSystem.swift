import CShim
import HostSys

/// The KVM subsystem (/dev/kvm).
public final class KVMSystem: Sendable {
    let fd: FileDescriptor
    public let path: String

    /// Capabilities SwiftVMM cannot run without, by name.
    static let requiredCapabilities: [(Int32, String)] = [
        (SHIM_KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"),
        (SHIM_KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
        (SHIM_KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"),
        (SHIM_KVM_CAP_PIT2, "KVM_CAP_PIT2"),
        (SHIM_KVM_CAP_IRQFD, "KVM_CAP_IRQFD"),
        (SHIM_KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"),
        (SHIM_KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
        (SHIM_KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
        (SHIM_KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"),
    ]

    /// Opens /dev/kvm and checks the API version and required capabilities.
    /// The corresponding ioctls are `KVM_GET_API_VERSION` and `KVM_CHECK_EXTENSION`.
    public init(path: String = "/dev/kvm") throws {
        self.path = path
        do {
            fd = try FileDescriptor.openReadWrite(path, purpose: "KVM (/dev/kvm)")
        } catch let e as SysError {
            switch e.errno {
            case Errno.ENOENT: throw KVMError.deviceMissing(path: path)
            case Errno.EACCES, Errno.EPERM: throw KVMError.permissionDenied(path: path)
            default: throw KVMError.openFailed(path: path, e)
            }
        }
        let version: Int32
        do {
            version = try kvmCall { try fd.ioctl(SHIM_KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION") }
        } catch KVMError.ioctl(let e) where e.errno == Errno.ENOTTY && PassedDescriptor.isPassed(path) {
            throw KVMError.openFailed(path: path, SysError(errno: e.errno, operation: "the descriptor is not /dev/kvm (KVM_GET_API_VERSION)"))
        }
        guard version == SHIM_KVM_API_VERSION else {
            throw KVMError.apiVersion(found: version, expected: SHIM_KVM_API_VERSION)
        }
        for (cap, name) in Self.requiredCapabilities where try checkExtension(cap) <= 0 {
            throw KVMError.missingCapability(name)
        }
    }

    /// The corresponding ioctl is `KVM_CHECK_EXTENSION`.
    func checkExtension(_ cap: Int32) throws -> Int32 {
        try kvmCall { try fd.ioctl(SHIM_KVM_CHECK_EXTENSION, UInt(cap), "KVM_CHECK_EXTENSION") }
    }

    /// The corresponding ioctl is `KVM_GET_VCPU_MMAP_SIZE`.
    public func vcpuMmapSize() throws -> Int {
        let n = Int(try kvmCall { try fd.ioctl(SHIM_KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE") })
        guard n >= SHIM_RUN_SIZE else { throw KVMError.runPageTooSmall(n) }
        return n
    }

    /// Whether the in-kernel local APIC emulates the TSC-deadline timer mode,
    /// which KVM_GET_SUPPORTED_CPUID leaves to userspace to advertise (api.rst).
    /// The corresponding ioctl is `KVM_CHECK_EXTENSION` (`KVM_CAP_TSC_DEADLINE_TIMER`).
    public var hasTSCDeadlineTimer: Bool {
        ((try? checkExtension(SHIM_KVM_CAP_TSC_DEADLINE_TIMER)) ?? 0) > 0
    }

    /// Maximum vCPUs per VM (KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS, else 4 per api.rst).
    public func maxVCPUs() -> Int {
        if let m = try? checkExtension(SHIM_KVM_CAP_MAX_VCPUS), m > 0 { return Int(m) }
        if let n = try? checkExtension(SHIM_KVM_CAP_NR_VCPUS), n > 0 { return Int(n) }
        return 4
    }

    /// The CPUID entries KVM can expose. The corresponding ioctl is `KVM_GET_SUPPORTED_CPUID`.
    public func supportedCPUID() throws -> [CPUIDEntry] {
        var header = kvm_cpuid2()
        header.nent = SHIM_KVM_MAX_CPUID_ENTRIES
        return try withFlexibleArray(header, count: Int(header.nent), of: kvm_cpuid_entry2.self) { c, entries in
            try kvmCall { try fd.ioctl(SHIM_KVM_GET_SUPPORTED_CPUID, pointer: UnsafeMutableRawPointer(c), "KVM_GET_SUPPORTED_CPUID") }
            return CPUIDEntry.decode(nent: c.pointee.nent, entries)
        }
    }

    /// Creates a VM. The corresponding ioctl is `KVM_CREATE_VM`.
    public func createVM() throws -> VirtualMachine {
        // KVM_CREATE_VM may fail with EINTR on busy hosts; FileDescriptor.ioctl retries.
        let raw = try kvmCall { try fd.ioctl(SHIM_KVM_CREATE_VM, 0, "KVM_CREATE_VM") }
        return VirtualMachine(system: self, fd: FileDescriptor(adopting: raw))
    }

    /// What kind of KVM this host has, from the loaded modules. KVM-PVM
    /// (paravirtual, no VT-x/AMD-V) creates VMs but cannot run a stock Linux guest.
    public static func hostBackend(sysModule: String = "/sys/module") -> KVMBackend {
        if HostFiles.exists(sysModule + "/kvm_intel") { return .intelVMX }
        if HostFiles.exists(sysModule + "/kvm_amd") { return .amdSVM }
        if HostFiles.exists(sysModule + "/kvm_pvm") { return .pvm }
        return .unknown
    }
}

public enum KVMBackend: String, Sendable {
    case intelVMX = "kvm_intel (VT-x)"
    case amdSVM = "kvm_amd (AMD-V)"
    case pvm = "kvm_pvm (paravirtual, no VT-x/AMD-V)"
    case unknown = "unknown"
}
