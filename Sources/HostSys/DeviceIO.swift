import CShim
import Glibc

/// Positioned reads, writes and shared mappings of a device fd (a VFIO device
/// cdev: each region lives at its own offset of the fd).
public enum DeviceIO {
    /// The host page size (mmap offsets and lengths are multiples of it).
    public static let pageSize: UInt64 = {
        let s = sysconf(Int32(_SC_PAGESIZE))
        return s > 0 ? UInt64(s) : 4096
    }()

    /// Reads all of `buffer` from `fd` at `offset` (pread, retried on EINTR and
    /// short reads). Returns false on an error or end of file. Allocates
    /// nothing: safe on vCPU threads.
    public static func read(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        var done = 0
        while done < buffer.count {
            let (o, overflow) = offset.addingReportingOverflow(UInt64(done))
            guard !overflow, o <= UInt64(Int64.max) else { return false }
            // SAFETY: `done < buffer.count`, so base + done and the remaining
            // count stay inside `buffer`.
            let n = retryingEINTR { Glibc.pread(fd, base + done, buffer.count - done, off_t(o)) }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    /// Writes all of `buffer` to `fd` at `offset` (pwrite, retried on EINTR
    /// and short writes). Returns false on an error. Allocates nothing.
    public static func write(fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        var done = 0
        while done < buffer.count {
            let (o, overflow) = offset.addingReportingOverflow(UInt64(done))
            guard !overflow, o <= UInt64(Int64.max) else { return false }
            // SAFETY: as in `read`.
            let n = retryingEINTR { Glibc.pwrite(fd, base + done, buffer.count - done, off_t(o)) }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    /// Maps `length` bytes of `fd` at `offset` shared, read-write. Nothing is
    /// copied: an 8 GiB BAR is one mmap. `what` names it in the error.
    public static func mapShared(fd: Int32, length: UInt64, offset: UInt64, what: String) throws -> UnsafeMutableRawPointer {
        guard length > 0, length <= UInt64(Int.max), offset <= UInt64(Int64.max) else {
            throw SysError(errno: EINVAL, operation: "mmap \(what): length 0x\(String(length, radix: 16)) at 0x\(String(offset, radix: 16))")
        }
        let p = mmap(nil, Int(length), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset))
        guard let p, p != MAP_FAILED else { throw SysError.last("mmap \(what)") }
        return p
    }

    /// Undoes `mapShared`.
    public static func unmap(_ pointer: UnsafeMutableRawPointer, length: UInt64) {
        _ = munmap(pointer, Int(length))
    }
}

/// Which processes hold a file open, from `/proc/PID/fd` symlinks.
public enum ProcScan {
    /// This process's id.
    public static var currentPID: Int32 { getpid() }

    /// Processes (other than `excluding`) with an fd whose link target is one
    /// of `paths`, sorted by pid, with their `comm`. Processes that exit
    /// during the scan or whose fds we may not read are skipped.
    public static func holders(of paths: [String], procRoot: String = "/proc", excluding: Int32? = ProcScan.currentPID) -> [(pid: Int32, command: String)] {
        let wanted = Set(paths)
        var out = [(pid: Int32, command: String)]()
        for name in entries(procRoot) {
            guard let pid = Int32(name), pid > 0, pid != excluding else { continue }
            let fdDir = "\(procRoot)/\(name)/fd"
            let holds = entries(fdDir).contains { fd in
                guard let target = linkTarget("\(fdDir)/\(fd)") else { return false }
                return wanted.contains(target)
            }
            guard holds else { continue }
            let comm = (try? HostFiles.readAll("\(procRoot)/\(name)/comm", limit: 4096))
                .map { String(decoding: $0, as: UTF8.self).droppingTrailingWhitespace() } ?? "?"
            out.append((pid, comm.isEmpty ? "?" : comm))
        }
        return out.sorted { $0.pid < $1.pid }
    }

    /// The names in directory `path` except `.` and `..`; empty when unreadable.
    static func entries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names = [String]()
        while let e = readdir(dir) {
            let name = withUnsafePointer(to: &e.pointee.d_name) { p in
                // SAFETY: d_name is a NUL-terminated array of 256 CChars.
                p.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Where symlink `path` points, or nil.
    static func linkTarget(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = buf.withUnsafeMutableBufferPointer { b -> Int in
            guard let base = b.baseAddress else { return -1 }
            return readlink(path, base, b.count - 1)
        }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

private extension String {
    func droppingTrailingWhitespace() -> String {
        var s = Substring(self)
        while s.last == "\n" || s.last == " " { s.removeLast() }
        return String(s)
    }
}
