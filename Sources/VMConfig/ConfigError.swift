import FoundationEssentials

/// One problem with a config: where (a TOML key path such as `machine.memory`,
/// a command-line option such as `--memory`, or "" for the file as a whole)
/// and what.
public struct ConfigIssue: Equatable, Sendable, CustomStringConvertible {
    public var keyPath: String
    public var message: String

    public init(keyPath: String, message: String) {
        self.keyPath = keyPath
        self.message = message
    }

    /// E.g. `machine.memory: "12Q" is not a size (use e.g. 512M, 2G)`.
    public var description: String {
        keyPath.isEmpty ? message : "\(keyPath): \(message)"
    }
}

/// Every problem found in a config, in schema order. Loading never stops at
/// the first problem (a file-level or TOML syntax error is the only issue,
/// since nothing else can be checked then).
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    public var issues: [ConfigIssue]
    /// The config file, if the config came from one.
    public var configPath: String?

    public init(issues: [ConfigIssue], configPath: String? = nil) {
        self.issues = issues
        self.configPath = configPath
    }

    public var description: String {
        let n = issues.count
        let what = configPath.map { "config \($0)" } ?? "config"
        let head = "\(what): \(n) problem\(n == 1 ? "" : "s")"
        return ([head] + issues.map { "  \($0)" }).joined(separator: "\n")
    }

    public var errorDescription: String? { description }
}
