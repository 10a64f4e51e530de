import FoundationEssentials

/// The machine-readable summary written by `--report FILE.json`.
public struct RunReport: Codable, Equatable {
    public var exitReason: String
    public var exitReasonKind: String
    public var exitStatus: Int32
    public var bootCompleteSeconds: Double?
    public var firstKVMRunSeconds: Double?
    public var wallSeconds: Double
    /// Peak resident memory of the VMM excluding guest RAM (RssAnon + RssFile).
    public var vmmPeakRSSBytes: UInt64
    /// Peak resident memory including touched guest RAM (getrusage ru_maxrss).
    public var totalPeakRSSBytes: UInt64
    public var kernel: String
    public var initramfs: String?
    public var cmdline: String
    public var config: String
    public var vcpus: Int
    public var memoryBytes: UInt64
    public var consoleTail: String
    public var swiftvmmVersion: String

    public func json() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(self)
    }
}

extension StopReason {
    /// A stable identifier for scripts (`poweroff`, `timeout`, ...).
    public var kind: String {
        switch self {
        case .powerOff: return "poweroff"
        case .reset: return "reboot"
        case .guestVerdict: return "guest-verdict"
        case .guestPanic: return "guest-panic"
        case .guestHalted: return "guest-halted"
        case .tripleFault: return "triple-fault"
        case .kvmInternalError: return "kvm-internal-error"
        case .timeout: return "timeout"
        case .expectMatched: return "expect-matched"
        case .failPatternMatched: return "fail-pattern-matched"
        case .signal: return "signal"
        case .userQuit: return "user-quit"
        case .vmmError: return "vmm-error"
        }
    }
}
