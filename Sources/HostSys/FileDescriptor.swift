import CShim
import Glibc
import Synchronization

/// An owned file descriptor: closed when the last reference goes away.
public final class FileDescriptor: Sendable {
    public let raw: Int32
    /// Set by the first `close()`, so the descriptor is closed exactly once
    /// even when `close()` races another `close()`.
    private let closed = Atomic<Bool>(false)

    public init(adopting raw: Int32) { self.raw = raw }

    deinit { if !closed.load(ordering: .relaxed) { _ = Glibc.close(raw) } }

    /// Whether `close()` was called.
    public var isClosed: Bool { closed.load(ordering: .relaxed) }

    /// Opens `path`. `O_CLOEXEC` is always added.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws -> FileDescriptor {
        let fd = retryingEINTR { Int(Glibc.open(path, flags | O_CLOEXEC, mode)) }
        guard fd >= 0 else { throw SysError.last("open \(path)") }
        return FileDescriptor(adopting: Int32(fd))
    }

    /// Opens `path` read-write (`O_RDWR | O_CLOEXEC`): device nodes such as
    /// /dev/kvm, /dev/iommu and VFIO cdevs. "fd:N" takes the descriptor a
    /// launcher passed instead (`PassedDescriptor`), for `purpose`.
    public static func openReadWrite(_ path: String, purpose: String? = nil) throws -> FileDescriptor {
        if PassedDescriptor.isPassed(path) {
            return try PassedDescriptor.take(path, purpose: purpose ?? path, write: true)
        }
        return try open(path, flags: O_RDWR)
    }

    public func close() {
        let (exchanged, _) = closed.compareExchange(expected: false, desired: true, ordering: .relaxed)
        if exchanged { _ = Glibc.close(raw) }
    }

    /// ioctl with an integer argument; returns the non-negative result.
    @discardableResult
    public func ioctl(_ request: UInt, _ arg: UInt = 0, _ name: String) throws -> Int32 {
        let r = retryingEINTR { Int(shim_ioctl_int(raw, request, arg)) }
        guard r >= 0 else { throw SysError.last(name) }
        return Int32(r)
    }

    /// ioctl with a pointer argument; returns the non-negative result.
    @discardableResult
    public func ioctl(_ request: UInt, pointer: UnsafeMutableRawPointer?, _ name: String) throws -> Int32 {
        let r = retryingEINTR { Int(shim_ioctl_ptr(raw, request, pointer)) }
        guard r >= 0 else { throw SysError.last(name) }
        return Int32(r)
    }

    /// ioctl with a pointer to `value`.
    @discardableResult
    public func ioctl<T>(_ request: UInt, value: inout T, _ name: String) throws -> Int32 {
        try withUnsafeMutableBytes(of: &value) { try ioctl(request, pointer: $0.baseAddress, name) }
    }

    /// One ioctl attempt, no EINTR retry: the raw result and errno.
    public func ioctlOnce(_ request: UInt, _ arg: UInt = 0) -> (Int32, Int32) {
        let r = shim_ioctl_int(raw, request, arg)
        return (r, r < 0 ? shim_errno() : 0)
    }

    /// Reads up to `count` bytes; an empty array is end of file.
    public func read(upTo count: Int) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        let n = buf.withUnsafeMutableBytes { b in retryingEINTR { Glibc.read(raw, b.baseAddress, count) } }
        guard n >= 0 else { throw SysError.last("read") }
        buf.removeSubrange(n...)
        return buf
    }

    /// Writes all of `bytes`.
    public func writeAll(_ bytes: [UInt8]) throws {
        guard Self.writeAll(bytes, to: raw) else { throw SysError.last("write") }
    }

    /// Writes all of `bytes` to descriptor `raw` (EINTR and short writes
    /// continue); false when a write fails, with errno saying why.
    static func writeAll(_ bytes: [UInt8], to raw: Int32) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { b in
                retryingEINTR { Glibc.write(raw, b.baseAddress! + done, bytes.count - done) }
            }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    public func fsync() throws {
        guard retryingEINTR({ Int(Glibc.fsync(raw)) }) == 0 else { throw SysError.last("fsync") }
    }

    public var isTerminal: Bool { isatty(raw) == 1 }
}

/// Host file helpers.
public enum HostFiles {
    /// Reads a whole regular file, refusing anything over `limit` bytes.
    public static func readAll(_ path: String, limit: Int = 1 << 30) throws -> [UInt8] {
        let (fd, size) = try openRegular(path, limit: UInt64(max(limit, 0)))
        var out = [UInt8]()
        out.reserveCapacity(Int(size))
        while true {
            let chunk = try fd.read(upTo: 1 << 20)
            if chunk.isEmpty { break }
            out.append(contentsOf: chunk)
            if out.count > limit { throw SysError(errno: EFBIG, operation: "\(path) is larger than \(limit) bytes") }
        }
        return out
    }

    /// Opens `path` for reading; it must be a regular file of at most `limit`
    /// bytes. Returns the descriptor and the size.
    static func openRegular(_ path: String, limit: UInt64) throws -> (FileDescriptor, UInt64) {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY)
        var st = stat()
        guard fstat(fd.raw, &st) == 0 else { throw SysError.last("stat \(path)") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw SysError(errno: EINVAL, operation: "\(path) is not a regular file") }
        guard UInt64(st.st_size) <= limit else { throw SysError(errno: EFBIG, operation: "\(path) is larger than \(limit) bytes") }
        return (fd, UInt64(st.st_size))
    }

    /// Reads at most `count` bytes from the start of any readable file (a
    /// regular file, a pipe, a character device), until end of file.
    public static func readPrefix(_ path: String, upTo count: Int) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY)
        var out = [UInt8]()
        while out.count < count {
            let chunk = try fd.read(upTo: min(count - out.count, 1 << 20))
            if chunk.isEmpty { break }
            out.append(contentsOf: chunk)
        }
        return out
    }

    /// What stat(2) says about a path, symlinks followed.
    public struct Status: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case regular, directory, other }
        public let kind: Kind
        public let size: UInt64
        /// The device and inode numbers: together they name the file.
        public let device: UInt64
        public let inode: UInt64
    }

    /// stat(2) of `path` (symlinks followed); nil when it does not exist or
    /// cannot be reached.
    public static func status(_ path: String) -> Status? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let kind: Status.Kind
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        default: kind = .other
        }
        return Status(kind: kind, size: UInt64(max(st.st_size, 0)), device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    public static func isReadable(_ path: String) -> Bool { access(path, R_OK) == 0 }
    public static func isWritable(_ path: String) -> Bool { access(path, W_OK) == 0 }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
    public static func isReadWritable(_ path: String) -> Bool { access(path, R_OK | W_OK) == 0 }

    /// Why this process may not write `path`, as access(2)'s errno (EROFS on a
    /// read-only mount even for root), or nil when it may.
    public static func writeAccessError(_ path: String) -> Int32? {
        access(path, W_OK) == 0 ? nil : errno
    }
}

/// A regular file opened for reading at any offset (pread), so a caller reads
/// only the parts it needs: the kernel loader reads headers where the parser
/// looks and the payload chunk by chunk into guest memory, never the whole file.
public final class ReadOnlyFile: Sendable {
    public let path: String
    /// The size when opened.
    public let size: UInt64
    private let fd: FileDescriptor

    /// Opens `path`, which must be a regular file of at most `limit` bytes.
    public init(_ path: String, limit: UInt64 = 1 << 30) throws {
        (fd, size) = try HostFiles.openRegular(path, limit: limit)
        self.path = path
    }

    /// Exactly `count` bytes at `offset`, or nil when the file ends first
    /// (it shrank since it was opened) or cannot be read.
    public func read(at offset: UInt64, count: Int) -> [UInt8]? {
        guard count >= 0, let start = off_t(exactly: offset) else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        let ok = out.withUnsafeMutableBytes { b -> Bool in
            while done < count {
                let n = retryingEINTR { pread(fd.raw, b.baseAddress! + done, count - done, start + off_t(done)) }
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
        return ok ? out : nil
    }
}
