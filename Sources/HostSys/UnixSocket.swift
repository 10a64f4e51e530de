import CShim
import Glibc

/// A connected AF_UNIX stream socket that carries descriptors with its bytes
/// (SCM_RIGHTS): the vfio-user transport.
public final class UnixSocket: Sendable {
    public let fd: FileDescriptor

    public init(adopting fd: FileDescriptor) { self.fd = fd }

    /// The most descriptors one message may carry (`SHIM_MAX_PASSED_FDS`).
    public static let maxPassedDescriptors = Int(SHIM_MAX_PASSED_FDS)

    /// Connects to the listening socket at `path`. A server that has bound
    /// its socket but is not listening yet refuses (ECONNREFUSED); with
    /// `waitForListenerMs`, connecting is tried again every 20 ms for that long.
    public static func connect(path: String, waitForListenerMs: Int = 0) throws -> UnixSocket {
        var waited = 0
        while true {
            do {
                return try connectOnce(path: path)
            } catch let e as SysError where e.errno == ECONNREFUSED && waited < waitForListenerMs {
                usleep(20_000)
                waited += 20
            }
        }
    }

    private static func connectOnce(path: String) throws -> UnixSocket {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw SysError(errno: ENAMETOOLONG, operation: "connect to \(path): a socket path is 1 to \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { p in
            // SAFETY: bytes.count < capacity, so the copy and its NUL fit.
            p.copyBytes(from: bytes)
            p[bytes.count] = 0
        }
        let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw SysError.last("socket(AF_UNIX)") }
        let fd = FileDescriptor(adopting: raw)
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let r = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in retryingEINTR { Int(Glibc.connect(raw, a, length)) } }
        }
        guard r == 0 else { throw SysError.last("connect to \(path)") }
        return UnixSocket(adopting: fd)
    }

    /// Two connected sockets (socketpair(2)).
    public static func pair() throws -> (UnixSocket, UnixSocket) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SysError.last("socketpair(AF_UNIX)")
        }
        return (UnixSocket(adopting: FileDescriptor(adopting: fds[0])), UnixSocket(adopting: FileDescriptor(adopting: fds[1])))
    }

    /// Bounds every send: a peer that stops reading makes `send` fail with
    /// EAGAIN after `milliseconds` instead of blocking the caller for good.
    public func setSendTimeout(milliseconds: Int) throws {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        guard setsockopt(fd.raw, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw SysError.last("setsockopt(SO_SNDTIMEO)")
        }
    }

    /// Sends all of `bytes`; `descriptors` go with the first byte.
    public func send(_ bytes: [UInt8], descriptors: [Int32] = []) throws {
        guard descriptors.count <= Self.maxPassedDescriptors else {
            throw SysError(errno: EINVAL, operation: "sendmsg: \(descriptors.count) descriptors in one message")
        }
        var done = 0
        var passing = descriptors
        while done < bytes.count || (bytes.isEmpty && done == 0) {
            let n = bytes.withUnsafeBytes { b in
                passing.withUnsafeBufferPointer { f in
                    // SAFETY: done < bytes.count (or both are 0), so the pointer and length stay inside `bytes`.
                    retryingEINTR {
                        Int(shim_send_with_fds(fd.raw, b.baseAddress.map { $0 + done }, bytes.count - done,
                                               f.baseAddress, Int32(f.count)))
                    }
                }
            }
            guard n >= 0 else { throw SysError.last("sendmsg") }
            if bytes.isEmpty { break }
            guard n > 0 else { throw SysError(errno: EPIPE, operation: "sendmsg: nothing sent") }
            done += n
            passing = []
        }
    }

    /// What one `receive` got.
    public struct Received: Sendable {
        public var bytes: [UInt8]
        public var descriptors: [FileDescriptor]
        /// The kernel dropped descriptors that did not fit, or more came than were allowed.
        public var descriptorsDropped: Bool
    }

    /// Receives exactly `count` bytes and every descriptor passed with them
    /// (up to `maxDescriptors`; more are closed and reported as dropped).
    /// nil when the stream ended before the first byte; a stream that ends
    /// in the middle throws ECONNRESET.
    public func receive(exactly count: Int, maxDescriptors: Int) throws -> Received? {
        var out = Received(bytes: [UInt8](repeating: 0, count: count), descriptors: [], descriptorsDropped: false)
        let limit = min(max(maxDescriptors, 0), Self.maxPassedDescriptors)
        var got = 0
        var fds = [Int32](repeating: -1, count: Self.maxPassedDescriptors)
        while got < count {
            var nfds: Int32 = 0, truncated: Int32 = 0
            let room = limit - out.descriptors.count
            let n = out.bytes.withUnsafeMutableBytes { b in
                fds.withUnsafeMutableBufferPointer { f in
                    // SAFETY: got < count == b.count, so the pointer and length stay inside the buffer.
                    retryingEINTR {
                        Int(shim_recv_with_fds(fd.raw, b.baseAddress! + got, count - got, f.baseAddress, Int32(room),
                                               &nfds, &truncated))
                    }
                }
            }
            guard n >= 0 else {
                out.descriptors.forEach { $0.close() }
                throw SysError.last("recvmsg")
            }
            for i in 0..<Int(nfds) { out.descriptors.append(FileDescriptor(adopting: fds[i])) }
            if truncated != 0 { out.descriptorsDropped = true }
            if n == 0 {
                out.descriptors.forEach { $0.close() }
                if got == 0 { return nil }
                throw SysError(errno: ECONNRESET, operation: "recvmsg: the stream ended after \(got) of \(count) bytes")
            }
            got += n
        }
        return out
    }

    /// Waits until the socket has bytes (or its end) to read: true when it
    /// does, false after `timeoutMs` (-1: no limit).
    public func waitReadable(timeoutMs: Int32) -> Bool {
        var p = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
        return retryingEINTR { Int(poll(&p, 1, timeoutMs)) } > 0
    }

    /// Ends both directions: a thread blocked in `receive` wakes with the end
    /// of the stream, and the peer sees it too.
    public func shutdown() {
        _ = Glibc.shutdown(fd.raw, Int32(SHUT_RDWR))
    }
}
