import FoundationEssentials
import HostSys
import Synchronization

/// Milestones of a run, in seconds since the VMM started.
public final class RunClock: Sendable {
    public let startNanos: UInt64
    private let milestones = Mutex<(firstRun: Double?, bootComplete: Double?)>((nil, nil))

    public init(startNanos: UInt64 = ProcessStats.monotonicNanos) { self.startNanos = startNanos }

    public var elapsed: Double { Double(ProcessStats.monotonicNanos &- startNanos) / 1e9 }

    /// Records the first KVM_RUN; returns the time if this was the first.
    func markFirstRun() -> Double? {
        milestones.withLock { m in
            guard m.firstRun == nil else { return nil }
            m.firstRun = elapsed
            return m.firstRun
        }
    }

    /// Records the boot-complete write; returns the time if this was the first.
    func markBootComplete() -> Double? {
        milestones.withLock { m in
            guard m.bootComplete == nil else { return nil }
            m.bootComplete = elapsed
            return m.bootComplete
        }
    }

    public var firstRunSeconds: Double? { milestones.withLock { $0.firstRun } }
    public var bootCompleteSeconds: Double? { milestones.withLock { $0.bootComplete } }
}
