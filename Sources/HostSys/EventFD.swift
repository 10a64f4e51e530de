import CShim
import Glibc

/// An eventfd (irqfd, ioeventfd, wakeups).
public final class EventFD: Sendable {
    public let fd: FileDescriptor

    public init(nonBlocking: Bool = false) throws {
        let raw = eventfd(0, Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0))
        guard raw >= 0 else { throw SysError.last("eventfd") }
        fd = FileDescriptor(adopting: raw)
    }

    public func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { b in Glibc.write(fd.raw, b.baseAddress, 8) }
    }

    /// Blocks until signalled; returns the counter.
    public func wait() -> UInt64 {
        var v: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &v) { b in retryingEINTR { Glibc.read(fd.raw, b.baseAddress, 8) } }
        return n == 8 ? v : 0
    }

    /// Reads and clears the counter without blocking (the fd must be non-blocking).
    public func drain() { fd.readCounter() }
}

extension FileDescriptor {
    /// Reads the 8-byte counter of an eventfd or timerfd, which clears it;
    /// without blocking when the fd is non-blocking.
    func readCounter() {
        var v: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &v) { b in Glibc.read(raw, b.baseAddress, 8) }
    }
}
