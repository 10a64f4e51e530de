import Bits
import HostSys
import KVM

/// Why a VM stopped.
public enum StopReason: Equatable, Sendable {
    case powerOff
    case reset
    case guestVerdict(UInt8)
    /// The guest kernel panicked; `viaPVPanic` false: seen only on the console.
    case guestPanic(viaPVPanic: Bool)
    case guestHalted(vcpu: UInt32)
    case tripleFault(vcpu: UInt32, rip: UInt64?)
    case kvmInternalError(vcpu: UInt32, suberror: UInt32, data: [UInt64], rip: UInt64?)
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

extension StopReason: CustomStringConvertible {
    /// One line for the user.
    public var description: String {
        func atRIP(_ rip: UInt64?) -> String { rip.map { " at RIP " + hex($0) } ?? "" }
        switch self {
        case .powerOff: return "guest powered off"
        case .reset: return "guest rebooted"
        case let .guestVerdict(v): return "guest reported exit status \(v)"
        case let .guestPanic(pv): return pv ? "guest kernel panicked (reported through pvpanic)" : "guest kernel panicked (seen on the console; the guest has no pvpanic driver)"
        case let .guestHalted(v): return "guest halted vCPU \(v) for good"
        case let .tripleFault(v, rip):
            // On AMD SVM, KVM re-initialises the vCPU on a shutdown intercept
            // before reporting it, so the registers read afterwards are the
            // reset state (RIP 0xfff0) and the faulting RIP is gone.
            if rip == Self.resetVectorRIP {
                return "guest triple fault on vCPU \(v) (KVM_EXIT_SHUTDOWN; KVM had already reset the vCPU, so its last RIP is unknown)"
            }
            return "guest triple fault on vCPU \(v)\(atRIP(rip)) (KVM_EXIT_SHUTDOWN)"
        case let .kvmInternalError(v, sub, data, rip):
            let what = sub == VCPUExit.internalErrorEmulation ? "KVM emulation failure" : "KVM internal error \(sub)"
            let extra = data.isEmpty ? "" : " [" + data.map { hex($0) }.joined(separator: " ") + "]"
            return "\(what) on vCPU \(v)\(atRIP(rip))\(extra)"
        case let .timeout(s): return "timeout: guest still running after \(s) s"
        case let .expectMatched(p): return "console matched expectation /\(p)/"
        case let .failPatternMatched(p): return "console matched failure pattern /\(p)/"
        case let .signal(s): return "stopped by \(HostSignal.name(s))"
        case .userQuit: return "stopped by the user (Ctrl-A x)"
        case let .vmmError(m): return m
        }
    }

    /// RIP of an x86 vCPU after reset (Intel SDM vol. 3A 9.1.4: CS base 0xFFFF0000, IP 0xFFF0).
    static let resetVectorRIP: UInt64 = 0xFFF0

    /// Fills in the guest RIP of crash reasons.
    func withRIP(_ rip: UInt64) -> StopReason {
        switch self {
        case let .tripleFault(v, _): return .tripleFault(vcpu: v, rip: rip)
        case let .kvmInternalError(v, s, d, _): return .kvmInternalError(vcpu: v, suberror: s, data: d, rip: rip)
        default: return self
        }
    }
}
