/// How a run behaves beyond the config file (command-line choices).
public struct RunOptions: Sendable {
    /// Stop the guest after this many seconds (overrides the config's run.timeout).
    public var timeoutSeconds: Double?
    /// Forward the terminal's input to the guest (raw mode). Default: when stdin is a TTY.
    public var interactive: Bool?
    /// Try to run even on KVM-PVM, which cannot run stock Linux guests.
    public var allowPVM = false
    /// Finish successfully as soon as the console matches one of these.
    public var expect: [String] = []
    /// Finish with failure as soon as the console matches one of these.
    public var failOn: [String] = []
    /// Keep the full console output in this file.
    public var consoleLog: String?
    /// Write a JSON summary here.
    public var reportPath: String?

    /// After SIGTERM presses the power button, how long the guest has to power off.
    public var powerOffGrace: Double = 20

    public init() {}
}
