import CShim
import Glibc

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
/// Thread safety: `pread`/`pwrite` carry their own offset, so calls from
/// several threads do not disturb each other.
public final class BlockFile: Sendable {
    public let path: String
    public let isReadOnly: Bool
    /// Size of the image in bytes.
    public let capacity: UInt64
    private let fd: FileDescriptor

    /// Opens `path`. Refuses, with a `SysError` that names the path, a
    /// missing file, a directory or other non-image file, an image that
    /// cannot be opened for writing when `readOnly` is false, and an image
    /// another process holds locked.
    public init(path: String, readOnly: Bool = false) throws {
        let mode = readOnly ? "read-only" : "read-write"
        let raw = retryingEINTR { Int(Glibc.open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)) }
        guard raw >= 0 else {
            let e = shim_errno()
            throw SysError(errno: e, operation: Self.openFailure(path: path, readOnly: readOnly, errno: e))
        }
        let fd = FileDescriptor(adopting: Int32(raw))

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

        self.path = path
        self.isReadOnly = readOnly
        self.capacity = UInt64(end)
        self.fd = fd
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

    /// Fills `buffer` with the image bytes at `[offset, offset + buffer.count)`.
    /// Reaching the end of the file first is an error (EIO): the image shrank.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let start = try range(offset, buffer.count, "read")
        guard let base = buffer.baseAddress else { return } // empty buffer
        var done = 0
        while done < buffer.count {
            // SAFETY: done < buffer.count, so base + done and the remaining
            // buffer.count - done bytes are inside `buffer`.
            let n = retryingEINTR { Glibc.pread(fd.raw, base + done, buffer.count - done, off_t(start + Int64(done))) }
            guard n >= 0 else { throw SysError.last("read \(path) at offset \(offset + UInt64(done))") }
            guard n > 0 else {
                throw SysError(errno: EIO, operation: "read \(path) at offset \(offset + UInt64(done)): unexpected end of file")
            }
            done += n
        }
    }

    /// Writes `bytes` at `offset`. EBADF on a read-only image.
    public func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else {
            throw SysError(errno: EBADF, operation: "write \(path): the image is attached read-only")
        }
        let start = try range(offset, bytes.count, "write")
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            // SAFETY: done < bytes.count, so base + done and the remaining
            // bytes.count - done bytes are inside `bytes`.
            let n = retryingEINTR { Glibc.pwrite(fd.raw, base + done, bytes.count - done, off_t(start + Int64(done))) }
            guard n >= 0 else { throw SysError.last("write \(path) at offset \(offset + UInt64(done))") }
            guard n > 0 else {
                throw SysError(errno: EIO, operation: "write \(path) at offset \(offset + UInt64(done)): no progress")
            }
            done += n
        }
    }

    /// `fsync(2)`: once it returns, everything written so far is on stable
    /// storage, whatever happens to the VMM or the host afterwards.
    public func flush() throws {
        guard retryingEINTR({ Int(fsync(fd.raw)) }) == 0 else { throw SysError.last("fsync \(path)") }
    }
}
