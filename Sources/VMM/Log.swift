import FoundationEssentials
import HostSys
import Logging

/// Log lines on stderr as `swiftvmm: <level>: message`, readable next to a
/// guest console on the same terminal.
public struct VMMLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String

    public init(label: String, level: Logger.Level = .info) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let text = "\(label): \(event.level): \(event.message)\n"
        StandardStreams.writeError(text)
    }
}
