import CShim
import Glibc

/// A periodic timerfd on the monotonic clock: readable every `seconds`, for
/// an epoll loop that checks on something now and then.
public final class TimerFD: Sendable {
    public let fd: FileDescriptor

    public init(everySeconds seconds: Int) throws {
        let raw = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC) | Int32(TFD_NONBLOCK))
        guard raw >= 0 else { throw SysError.last("timerfd_create") }
        fd = FileDescriptor(adopting: raw)
        var spec = itimerspec()
        spec.it_value.tv_sec = max(seconds, 1)
        spec.it_interval.tv_sec = max(seconds, 1)
        guard timerfd_settime(raw, 0, &spec, nil) == 0 else { throw SysError.last("timerfd_settime") }
    }

    /// Clears the expirations counted so far.
    public func drain() { fd.readCounter() }
}

extension FileDescriptor {
    /// Whether the descriptor reports an error or a hang-up now (poll with no
    /// events asked for, no waiting): a deleted TAP device, a closed pipe.
    public var hasFailed: Bool {
        var p = pollfd(fd: raw, events: 0, revents: 0)
        guard poll(&p, 1, 0) == 1 else { return false }
        return p.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0
    }
}
