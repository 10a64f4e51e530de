import Devices
import Synchronization

/// A console that keeps everything written to it. Safe to write from
/// several threads.
public final class RecordingConsole: ConsoleOutput, Sendable {
    private let written = Mutex<[UInt8]>([])

    public init() {}

    public func write(_ bytes: [UInt8]) { written.withLock { $0 += bytes } }

    /// Every byte written so far.
    public var bytes: [UInt8] { written.withLock { $0 } }
    /// `bytes` as UTF-8 (invalid sequences replaced).
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}
