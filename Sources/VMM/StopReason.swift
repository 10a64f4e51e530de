import CShim

/// KVM system event types (linux/kvm.h KVM_SYSTEM_EVENT_*).
enum SystemEventType {
    static let shutdown = SHIM_KVM_SYSTEM_EVENT_SHUTDOWN
    static let reset = SHIM_KVM_SYSTEM_EVENT_RESET
    static let crash = SHIM_KVM_SYSTEM_EVENT_CRASH
}

/// Offset of kvm_run.mmio.data.
let mmioDataOffset = SHIM_RUN_MMIO_DATA

/// Why a VM stopped.
public enum StopReason: Equatable, Sendable {
    case powerOff
    case reset
    case guestVerdict(UInt8)
    case guestPanic
    case guestHalted(vcpu: UInt32)
    case tripleFault(vcpu: UInt32)
    case kvmInternalError(vcpu: UInt32, suberror: UInt32, data: [UInt64])
    case timeout(seconds: Double)
    case expectMatched(String)
    case failPatternMatched(String)
    case signal(Int32)
    case userQuit
    case vmmError(String)
}

/// The exit statuses of `swiftvmm run` (documented in README.md).
public enum ExitStatus {
    public static let success: Int32 = 0
    public static let usage: Int32 = 64
    public static let badConfig: Int32 = 65
    public static let hostUnsupported: Int32 = 69
    public static let vmmError: Int32 = 70
    public static let guestPanic: Int32 = 121
    public static let guestCrash: Int32 = 122
    public static let failPattern: Int32 = 123
    public static let timeout: Int32 = 124

    public static func of(_ r: StopReason) -> Int32 {
        switch r {
        case .powerOff, .reset, .expectMatched, .userQuit: return success
        case let .guestVerdict(v): return Int32(v)
        case .guestPanic: return guestPanic
        case .tripleFault, .kvmInternalError, .guestHalted: return guestCrash
        case .timeout: return timeout
        case .failPatternMatched: return failPattern
        case let .signal(s): return 128 + s
        case .vmmError: return vmmError
        }
    }
}
