import CShim
import Glibc
import Dispatch
import Synchronization

/// The signal used to kick a vCPU thread out of KVM_RUN (no-op handler,
/// no SA_RESTART, so the ioctl returns EINTR).
public let vcpuKickSignal: Int32 = SIGUSR1

public enum HostThreads {
    /// libdispatch reports its own troubles (e.g. "Failed to set thread
    /// priority for worker thread: errno=13", every time a process without
    /// CAP_SYS_NICE starts a worker) through syslog(3), which opens a socket:
    /// under the seccomp sandbox that call stops the VMM. Unless the user
    /// chose otherwise, it stays quiet (LIBDISPATCH_LOG=stderr brings the
    /// messages back, on standard error). Call before libdispatch first logs.
    public static func quietDispatchLog() {
        if getenv("LIBDISPATCH_LOG") == nil { setenv("LIBDISPATCH_LOG", "NO", 1) }
    }

    /// Installs the kick signal's no-op handler. Call once before vCPUs start.
    public static func installKickHandler() throws {
        guard shim_install_noop_handler(vcpuKickSignal) == 0 else { throw SysError.last("sigaction(SIGUSR1)") }
    }

    /// The calling thread's handle.
    public static func current() -> pthread_t { pthread_self() }

    /// Sends the kick signal to `thread`.
    public static func kick(_ thread: pthread_t) { _ = pthread_kill(thread, vcpuKickSignal) }
}

/// A thread whose pthread handle is known once it runs, so it can be kicked.
/// The OS knows it by `name` (top -H, gdb, /proc/self/task/*/comm).
public final class KickableThread: Sendable {
    /// The running thread's handle (nil until it starts) and whether its body returned.
    private let state = Mutex<(handle: pthread_t?, finished: Bool)>((nil, false))
    private let done = DispatchSemaphore(value: 0)
    /// Bytes of a thread name Linux keeps (TASK_COMM_LEN 16, linux/sched.h,
    /// less the NUL); pthread_setname_np refuses a longer one (ERANGE).
    static let osNameBytes = 15

    /// Starts `body` on a new thread named `name` (cut to `osNameBytes`
    /// bytes), which is named before `body` runs. A thread the OS refuses to
    /// create stops the process with the reason: nothing can run without it.
    public init(name: String, body: @escaping @Sendable () -> Void) {
        var cut = Substring(name)
        while cut.utf8.count > Self.osNameBytes { cut.removeLast() }
        let osName = String(cut)
        let start = ThreadStart { [self] in
            _ = shim_set_thread_name(osName)
            state.withLock { $0.handle = pthread_self() }
            body()
            state.withLock { $0.finished = true }
            done.signal()
        }
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        _ = pthread_attr_setstacksize(&attr, Self.stackBytes)
        _ = pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let context = Unmanaged.passRetained(start).toOpaque()
        let rc = pthread_create(&thread, &attr, { context in
            guard let context else { return nil }
            Unmanaged<ThreadStart>.fromOpaque(context).takeRetainedValue().body()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<ThreadStart>.fromOpaque(context).release()
            fatalError("cannot start thread \(osName): pthread_create: \(String(cString: strerror(rc)))")
        }
    }

    /// Each thread's stack: 1 MiB.
    static let stackBytes = 1 << 20

    /// Kicks the thread (no-op until it has started, or after it ended). The
    /// signal is sent with the lock held, so the thread cannot finish (and its
    /// handle be reused) in between.
    public func kick() {
        state.withLock { s in
            if let h = s.handle, !s.finished { HostThreads.kick(h) }
        }
    }

    /// Waits for the thread's body to return.
    public func join() { done.wait(); done.signal() }

    /// Whether the calling thread is this one (a thread must not join itself).
    public var isCurrent: Bool {
        state.withLock { s in s.handle.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }
}

/// The body a new thread runs, carried through pthread_create's argument.
private final class ThreadStart: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Signals delivered to the process (SIGTERM, SIGINT) turned into callbacks.
public final class SignalWatcher {
    private var sources: [DispatchSourceSignal] = []

    public init() {}

    public func on(_ signo: Int32, _ handler: @escaping () -> Void) {
        signal(signo, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: signo, queue: .global())
        s.setEventHandler(handler: handler)
        s.resume()
        sources.append(s)
    }
}

/// Puts a terminal into raw mode and restores it.
public final class RawTerminal {
    private let fd: Int32
    private var saved = termios()
    private var active = false

    public init?(fd: Int32) {
        guard isatty(fd) == 1 else { return nil }
        self.fd = fd
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR) // keep "\n" -> "\r\n" on output
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return nil }
        active = true
    }

    public func restore() {
        if active { _ = tcsetattr(fd, TCSANOW, &saved); active = false }
    }

    deinit { restore() }
}
