import Devices
import Synchronization

/// An interrupt line that records every level driven on it, in order. Safe to
/// drive from several threads.
public final class RecordingLine: InterruptLine, Sendable {
    /// The GSI the line stands for, when a test hands out lines per GSI.
    public let gsi: UInt32
    private let recorded = Mutex<[Bool]>([])

    public init(gsi: UInt32 = 0) { self.gsi = gsi }

    public func setLevel(_ high: Bool) { recorded.withLock { $0.append(high) } }

    /// Every level set so far, oldest first.
    public var levels: [Bool] { recorded.withLock { $0 } }
    /// The last level set (low before any).
    public var level: Bool { recorded.withLock { $0.last ?? false } }
}
