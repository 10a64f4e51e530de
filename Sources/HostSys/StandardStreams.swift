import Glibc

/// The process's standard streams and the few process-level constants the
/// upper layers need, so they never call libc themselves.
public enum StandardStreams {
    /// A new descriptor for standard output (the caller owns it).
    public static func duplicateOutput() -> FileDescriptor { FileDescriptor(adopting: dup(STDOUT_FILENO)) }
    /// A new descriptor for standard input (the caller owns it).
    public static func duplicateInput() -> FileDescriptor { FileDescriptor(adopting: dup(STDIN_FILENO)) }
    public static var inputIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
    /// Raw mode for the terminal on standard input, or nil when it is not one.
    public static func rawInputTerminal() -> RawTerminal? { RawTerminal(fd: STDIN_FILENO) }

    /// Writes `text` to standard error, all of it (a short write or EINTR
    /// continues; any other failure drops the rest: there is nowhere to say so).
    public static func writeError(_ text: String) {
        _ = FileDescriptor.writeAll(Array(text.utf8), to: STDERR_FILENO)
    }

    /// Ends the process with `status` (exit(3): atexit handlers run, stdio flushed).
    public static func exit(_ status: Int32) -> Never { Glibc.exit(status) }
}

public enum HostSignal {
    public static let terminate: Int32 = SIGTERM
    public static let interrupt: Int32 = SIGINT

    public static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(s)"
        }
    }
}

extension FileDescriptor {
    /// Creates or truncates `path` for writing (console logs, reports).
    public static func createForWriting(_ path: String) throws -> FileDescriptor {
        try open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
    }
}

/// Sleeps the calling thread.
public func sleepMicroseconds(_ us: UInt32) { usleep(us) }
