import CShim
import Glibc
import Synchronization

/// A raw disk image (a regular file or a block device) opened for a virtio
/// block device: positional reads and writes (`pread`/`pwrite`, looped over
/// short transfers, EINTR retried) and `fsync` for the driver's flushes.
///
/// The image is opened `O_RDWR`, or `O_RDONLY` when `readOnly`, and locked
/// with `flock` (exclusive when writable, shared when read-only), so two VMMs
/// cannot write one image at once; the lock goes with the descriptor. The
/// capacity is the size at open time (`lseek(SEEK_END)`, which also works for
/// block devices); growing the image later is not seen.
///
/// With `direct` (a disk's `cache = "none"`) a second descriptor is opened
/// with O_DIRECT, so data bypasses the host's page cache. Transfers whose
/// buffer address, offset and length are all multiples of
/// `directAlignment` go through it; any other (and any the file system
/// refuses with EINVAL) go through the first, buffered one, which the kernel
/// keeps coherent with direct I/O on the same range. A file system that
/// refuses O_DIRECT at open (tmpfs) leaves the image buffered, and
/// `directUnavailable` says why. `flush` is `fsync` either way: O_DIRECT
/// skips the page cache, not the disk's own volatile cache.
///
/// Thread safety: `pread`/`pwrite` carry their own offset, so calls from
/// several threads do not disturb each other.
public final class BlockFile: Sendable {
    public let path: String
    public let isReadOnly: Bool
    /// Size of the image in bytes.
    public let capacity: UInt64
    private let fd: FileDescriptor
    /// The O_DIRECT descriptor, when asked for and the file system allows it.
    private let directFD: FileDescriptor?
    /// Why `direct` was asked for and the image is still buffered, or nil.
    public let directUnavailable: String?
    /// Address, offset and length alignment of a transfer through O_DIRECT:
    /// 4 KiB, a multiple of every logical block size in use (512 and 4096),
    /// so no per-device query is needed.
    public static let directAlignment = 4096
    /// Transfers done through the O_DIRECT descriptor, and those that were
    /// not aligned for it (or that the file system refused) and went buffered.
    private let directCounts = Atomic<UInt64>(0)
    private let bufferedCounts = Atomic<UInt64>(0)
    public var isDirect: Bool { directFD != nil }
    /// (through O_DIRECT, buffered) transfers so far; all buffered when not direct.
    public var transferCounts: (direct: UInt64, buffered: UInt64) {
        (directCounts.load(ordering: .relaxed), bufferedCounts.load(ordering: .relaxed))
    }

    /// Opens `path`. Refuses, with a `SysError` that names the path, a
    /// missing file, a directory or other non-image file, an image that
    /// cannot be opened for writing when `readOnly` is false, and an image
    /// another process holds locked.
    public init(path: String, readOnly: Bool = false, direct: Bool = false) throws {
        let mode = readOnly ? "read-only" : "read-write"
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        let fd: FileDescriptor
        if PassedDescriptor.isPassed(path) {
            // Opened by a launcher ("fd:N"): read-write unless read_only.
            do { fd = try PassedDescriptor.take(path, purpose: "a \(mode) disk image", write: !readOnly) } catch let e as SysError {
                throw SysError(errno: e.errno, operation: "disk image \(path): \(e.operation)")
            }
        } else {
            let raw = retryingEINTR { Int(Glibc.open(path, flags)) }
            guard raw >= 0 else {
                let e = shim_errno()
                throw SysError(errno: e, operation: Self.openFailure(path: path, readOnly: readOnly, errno: e))
            }
            fd = FileDescriptor(adopting: Int32(raw))
        }

        var st = stat()
        guard fstat(fd.raw, &st) == 0 else { throw SysError.last("disk image \(path): fstat") }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else {
            throw SysError(errno: EINVAL, operation: "disk image \(path) is not a regular file or block device")
        }
        // flock(2): LOCK_EX for a writer, LOCK_SH for readers; LOCK_NB so a
        // busy image fails at once instead of hanging the VMM's start.
        let lock = (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB
        guard retryingEINTR({ Int(flock(fd.raw, lock)) }) == 0 else {
            let e = shim_errno()
            if e == EWOULDBLOCK {
                throw SysError(errno: e, operation: "disk image \(path) is in use by another process (locked)")
            }
            throw SysError(errno: e, operation: "disk image \(path): flock")
        }
        let end = lseek(fd.raw, 0, SEEK_END)
        guard end >= 0 else { throw SysError.last("disk image \(path): find its size (\(mode))") }

        var directFD: FileDescriptor?
        var unavailable: String?
        if direct {
            // The same file again (the flock above covers it: same process);
            // a passed one through /proc/self/fd, which works when this
            // user may open the file itself.
            let again = PassedDescriptor.isPassed(path) ? "/proc/self/fd/\(fd.raw)" : path
            let d = retryingEINTR { Int(Glibc.open(again, flags | SHIM_O_DIRECT)) }
            if d >= 0 {
                directFD = FileDescriptor(adopting: Int32(d))
            } else {
                let e = shim_errno()
                unavailable = e == EINVAL
                    ? "its file system does not support O_DIRECT"
                    : "open with O_DIRECT: \(String(cString: strerror(e)))"
            }
        }

        self.path = path
        self.isReadOnly = readOnly
        self.capacity = UInt64(end)
        self.fd = fd
        self.directFD = directFD
        self.directUnavailable = unavailable
    }

    /// The message for an `open` that failed with `errno`: says what to do.
    static func openFailure(path: String, readOnly: Bool, errno e: Int32) -> String {
        switch e {
        case ENOENT:
            return "disk image \(path) does not exist"
        case EACCES, EPERM, EROFS:
            return readOnly
                ? "disk image \(path) cannot be read (check its permissions)"
                : "disk image \(path) cannot be opened for writing (fix its permissions, or attach it read-only)"
        case EISDIR:
            return "disk image \(path) is a directory"
        default:
            return "open disk image \(path) \(readOnly ? "read-only" : "read-write")"
        }
    }

    /// `offset` and `offset + count` as an `off_t`, or EINVAL.
    private func range(_ offset: UInt64, _ count: Int, _ what: String) throws -> Int64 {
        guard let start = Int64(exactly: offset),
              !start.addingReportingOverflow(Int64(count)).overflow else {
            throw SysError(errno: EINVAL, operation: "\(what) \(path) at offset \(offset): offset out of range")
        }
        return start
    }

    /// IOV_MAX: iovecs per preadv/pwritev call.
    static let maxIOVecs = 1024

    /// Whether the iovecs and `offset` are all aligned for O_DIRECT.
    private static func alignedForDirect<C: Collection<iovec>>(_ iov: C, _ offset: Int64) -> Bool {
        let a = directAlignment
        return offset % Int64(a) == 0 && iov.allSatisfy {
            Int(bitPattern: $0.iov_base) % a == 0 && $0.iov_len % a == 0
        }
    }

    /// The O_DIRECT descriptor when `iov` and `offset` are aligned for it
    /// (and the image has one), else nil: the buffered one is for it.
    func directDescriptor<C: Collection<iovec>>(for iov: C, at offset: Int64) -> FileDescriptor? {
        guard let d = directFD, Self.alignedForDirect(iov, offset) else { return nil }
        return d
    }

    /// The page-cache descriptor (every image has one).
    var bufferedDescriptor: FileDescriptor { fd }

    /// Counts a transfer made elsewhere (`BlockFileRing`) in `transferCounts`.
    func countTransfer(direct: Bool) {
        if direct { directCounts.add(1, ordering: .relaxed) } else { bufferedCounts.add(1, ordering: .relaxed) }
    }

    /// Reads (`write` false) or writes `iov`, in order, from `offset` on:
    /// `preadv`/`pwritev`, at most `maxIOVecs` at a time, on the O_DIRECT
    /// descriptor when all of a call's iovecs are aligned for it (and the
    /// file system takes it), else on the buffered one; short transfers
    /// are continued and EINTR retried. Reaching the end of the file while
    /// reading is EIO: the image shrank.
    private func transfer(_ iovecs: [iovec], at offset: UInt64, write: Bool) throws {
        let what = write ? "write" : "read"
        let total = iovecs.reduce(0) { $0 + $1.iov_len }
        let start = try range(offset, total, what)
        var iov = iovecs
        var i = iov.firstIndex { $0.iov_len > 0 } ?? iov.count
        var pos = start
        while i < iov.count {
            let end = min(iov.count, i + Self.maxIOVecs)
            let n: Int = iov.withUnsafeBufferPointer { all in
                // SAFETY: i..<end is inside `all`.
                let base = all.baseAddress! + i, count = Int32(end - i)
                let call = { (fd: Int32) in
                    retryingEINTR { write ? Glibc.pwritev(fd, base, count, off_t(pos)) : Glibc.preadv(fd, base, count, off_t(pos)) }
                }
                if let d = directDescriptor(for: iov[i..<end], at: pos) {
                    let n = call(d.raw)
                    if n >= 0 || shim_errno() != EINVAL {
                        directCounts.add(1, ordering: .relaxed)
                        return n
                    }
                }
                bufferedCounts.add(1, ordering: .relaxed)
                return call(fd.raw)
            }
            guard n >= 0 else { throw SysError.last("\(what) \(path) at offset \(pos)") }
            guard n > 0 else {
                throw SysError(errno: EIO, operation: "\(what) \(path) at offset \(pos): "
                               + (write ? "no progress" : "unexpected end of file"))
            }
            pos += Int64(n)
            // Past the n bytes done: whole iovecs, then into the next one.
            var left = n
            while left > 0, i < iov.count {
                if iov[i].iov_len <= left {
                    left -= iov[i].iov_len
                    i += 1
                } else {
                    // SAFETY: left < iov_len: still inside the same buffer.
                    iov[i].iov_base = iov[i].iov_base.map { $0 + left }
                    iov[i].iov_len -= left
                    left = 0
                }
            }
            while i < iov.count, iov[i].iov_len == 0 { i += 1 }
        }
    }

    /// Fills `buffer` with the image bytes at `[offset, offset + buffer.count)`.
    /// Reaching the end of the file first is an error (EIO): the image shrank.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read(at: offset, into: [buffer])
    }

    /// Fills `buffers`, one after the other, from `offset` on (`preadv`).
    public func read(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        try transfer(buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset, write: false)
    }

    /// Writes `bytes` at `offset`. EBADF on a read-only image.
    public func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
        try write(at: offset, from: [bytes])
    }

    /// Writes `buffers`, one after the other, from `offset` on (`pwritev`).
    /// EBADF on a read-only image.
    public func write(at offset: UInt64, from buffers: [UnsafeRawBufferPointer]) throws {
        guard !isReadOnly else {
            throw SysError(errno: EBADF, operation: "write \(path): the image is attached read-only")
        }
        try transfer(buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) },
                     at: offset, write: true)
    }

    /// `fsync(2)`: once it returns, everything written so far is on stable
    /// storage, whatever happens to the VMM or the host afterwards.
    public func flush() throws {
        guard retryingEINTR({ Int(fsync(fd.raw)) }) == 0 else { throw SysError.last("fsync \(path)") }
    }

    /// Makes `[offset, offset + length)` read as zeros. With `deallocate`
    /// the space is given back (a hole: fallocate PUNCH_HOLE), without it
    /// the blocks stay allocated (ZERO_RANGE); the size never changes
    /// (KEEP_SIZE). A file system or device that supports neither mode gets
    /// the zeros written, 64 KiB at a time. EBADF on a read-only image.
    public func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {
        guard !isReadOnly else {
            throw SysError(errno: EBADF, operation: "zero \(path): the image is attached read-only")
        }
        guard length > 0 else { return }
        guard let start = Int64(exactly: offset), let count = Int64(exactly: length),
              !start.addingReportingOverflow(count).overflow else {
            throw SysError(errno: EINVAL, operation: "zero \(path) at offset \(offset): range out of bounds")
        }
        let punch = SHIM_FALLOC_FL_PUNCH_HOLE | SHIM_FALLOC_FL_KEEP_SIZE
        let zeroRange = SHIM_FALLOC_FL_ZERO_RANGE | SHIM_FALLOC_FL_KEEP_SIZE
        for mode in deallocate ? [punch, zeroRange] : [zeroRange, punch] {
            if retryingEINTR({ Int(shim_fallocate(fd.raw, mode, start, count)) }) == 0 { return }
            let e = shim_errno()
            // Not supported here (EOPNOTSUPP), or not for this range of a
            // block device (EINVAL): try the next way.
            guard e == EOPNOTSUPP || e == EINVAL || e == ENODEV else {
                throw SysError(errno: e, operation: "zero \(path) at offset \(offset), \(length) bytes (fallocate)")
            }
        }
        let chunk = 64 * 1024
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: Self.directAlignment)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(chunk), length - done))
            try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: zeros[0..<n]))
            done += UInt64(n)
        }
    }
}
