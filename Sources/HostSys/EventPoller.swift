import CShim
import Glibc

/// An epoll instance: waits for any of several fds to become readable.
public final class EventPoller: Sendable {
    public let fd: FileDescriptor

    public init() throws {
        let raw = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard raw >= 0 else { throw SysError.last("epoll_create1") }
        fd = FileDescriptor(adopting: raw)
    }

    /// Watches `watched` for input; `token` comes back from `wait`.
    public func add(_ watched: FileDescriptor, token: UInt64) throws {
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = token
        guard epoll_ctl(fd.raw, EPOLL_CTL_ADD, watched.raw, &ev) == 0 else { throw SysError.last("epoll_ctl ADD") }
    }

    public func remove(_ watched: FileDescriptor) {
        var ev = epoll_event()
        _ = epoll_ctl(fd.raw, EPOLL_CTL_DEL, watched.raw, &ev)
    }

    /// Waits up to `timeoutMs` (-1: forever) and returns the ready tokens.
    public func wait(timeoutMs: Int32, maxEvents: Int = 32) -> [UInt64] {
        var events = [epoll_event](repeating: epoll_event(), count: maxEvents)
        let n = events.withUnsafeMutableBufferPointer { b in
            epoll_wait(fd.raw, b.baseAddress, Int32(maxEvents), timeoutMs)
        }
        guard n > 0 else { return [] }
        return events[0..<Int(n)].map { $0.data.u64 }
    }
}
