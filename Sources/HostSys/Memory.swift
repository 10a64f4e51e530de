import CShim
import Glibc

/// An anonymous memory file (memfd) mapped shared: guest RAM lives here so it
/// can later be mapped into an iommufd IOAS or handed to another process.
public final class SharedMemoryMapping: @unchecked Sendable {
    public let fd: FileDescriptor
    public let pointer: UnsafeMutableRawPointer
    public let size: Int

    /// Creates a memfd of `size` bytes and maps it read-write, shared.
    public init(name: String, size: Int) throws {
        guard size > 0 else { throw SysError(errno: EINVAL, operation: "memfd \(name): size 0") }
        let raw = shim_memfd_create(name, SHIM_MFD_CLOEXEC)
        guard raw >= 0 else { throw SysError.last("memfd_create \(name)") }
        let fd = FileDescriptor(adopting: raw)
        guard ftruncate(raw, off_t(size)) == 0 else { throw SysError.last("ftruncate memfd \(name) to \(size) bytes") }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, raw, 0)
        guard let p, p != MAP_FAILED else { throw SysError.last("mmap \(size) bytes of \(name)") }
        self.fd = fd
        self.pointer = p
        self.size = size
    }

    deinit { munmap(pointer, size) }
}

/// A shared mapping of an fd region (the vCPU's kvm_run page, device BARs).
public final class FileMapping: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let size: Int

    public init(fd: FileDescriptor, size: Int, offset: Int = 0, what: String) throws {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.raw, off_t(offset))
        guard let p, p != MAP_FAILED else { throw SysError.last("mmap \(what)") }
        pointer = p
        self.size = size
    }

    deinit { munmap(pointer, size) }
}

/// An eventfd (irqfd, ioeventfd, wakeups).
public final class EventFD: @unchecked Sendable {
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
}

/// Process resource figures.
public enum ProcessStats {
    /// Peak resident set size of this process, bytes.
    public static var peakRSSBytes: UInt64 {
        var u = rusage()
        guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u) == 0 else { return 0 }
        return UInt64(max(u.ru_maxrss, 0)) * 1024
    }

    /// Monotonic clock in nanoseconds.
    public static var monotonicNanos: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension ProcessStats {
    /// Resident memory of this process that is not shared memory (guest RAM is
    /// a memfd, counted in RssShmem): RssAnon + RssFile from /proc/self/status.
    public static var rssExcludingSharedBytes: UInt64 {
        guard let bytes = try? HostFiles.readAll("/proc/self/status", limit: 1 << 16) else { return 0 }
        var total: UInt64 = 0
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        where line.hasPrefix("RssAnon:") || line.hasPrefix("RssFile:") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) } ?? 0
            total += kb * 1024
        }
        return total
    }
}
