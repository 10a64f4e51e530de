import CShim
import Glibc

/// An anonymous memory file (memfd) mapped shared: guest RAM lives here so it
/// can later be mapped into an iommufd IOAS or handed to another process.
// @unchecked Sendable: every stored property is a `let`; the raw pointer is not
// Sendable, but the mapping it points to lives until deinit, and accesses to
// the bytes behind it are the guest memory layer's business.
public final class SharedMemoryMapping: @unchecked Sendable {
    public let fd: FileDescriptor
    public let pointer: UnsafeMutableRawPointer
    /// Bytes mapped: the requested size, rounded up to 2 MiB with `hugePages`.
    public let size: Int
    /// Whether the memory is 2 MiB hugetlbfs pages.
    public let hugePages: Bool

    /// 2 MiB, the x86 PMD page size (Intel SDM Vol. 3A, 4.5).
    public static let hugePageSize = 2 << 20
    /// MFD_HUGETLB (include/uapi/linux/memfd.h).
    static let mfdHugeTLB: UInt32 = 0x0004
    /// MFD_HUGE_2MB: log2(2 MiB) = 21 in the size field at bit 26
    /// (HUGETLB_FLAG_ENCODE_2MB, include/uapi/asm-generic/hugetlb_encode.h).
    static let mfdHuge2MB: UInt32 = 21 << 26

    /// Creates a memfd of `size` bytes and maps it read-write, shared.
    ///
    /// With `hugePages`, the memfd is hugetlbfs (`MFD_HUGETLB | MFD_HUGE_2MB`),
    /// `size` is rounded up to a multiple of 2 MiB, and the pages are reserved
    /// when mapping (no `MAP_NORESERVE`: an unreserved hugetlb page that
    /// cannot be allocated at fault time would be a SIGBUS in the guest's
    /// vCPU thread). Too few free 2 MiB pages throws `HugePageError`.
    public init(name: String, size: Int, hugePages: Bool = false) throws {
        guard size > 0 else { throw SysError(errno: EINVAL, operation: "memfd \(name): size 0") }
        var length = size
        if hugePages {
            let (rounded, overflow) = size.addingReportingOverflow(Self.hugePageSize - 1)
            guard !overflow else { throw SysError(errno: EINVAL, operation: "memfd \(name): size \(size) too large") }
            length = rounded & ~(Self.hugePageSize - 1)
        }
        let flags = SHIM_MFD_CLOEXEC | (hugePages ? Self.mfdHugeTLB | Self.mfdHuge2MB : 0)
        let raw = shim_memfd_create(name, flags)
        guard raw >= 0 else {
            let e = shim_errno()
            if hugePages, e == EINVAL || e == ENOMEM { throw HugePageError(errno: e, operation: "memfd_create", name: name, bytes: length) }
            throw SysError(errno: e, operation: "memfd_create \(name)")
        }
        let fd = FileDescriptor(adopting: raw)
        guard ftruncate(raw, off_t(length)) == 0 else {
            let e = shim_errno()
            if hugePages, e == EINVAL || e == ENOMEM { throw HugePageError(errno: e, operation: "ftruncate", name: name, bytes: length) }
            throw SysError(errno: e, operation: "ftruncate memfd \(name) to \(length) bytes")
        }
        let mapFlags = MAP_SHARED | (hugePages ? 0 : MAP_NORESERVE)
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, mapFlags, raw, 0)
        guard let p, p != MAP_FAILED else {
            let e = shim_errno()
            if hugePages, e == EINVAL || e == ENOMEM { throw HugePageError(errno: e, operation: "mmap", name: name, bytes: length) }
            throw SysError(errno: e, operation: "mmap \(length) bytes of \(name)")
        }
        self.fd = fd
        self.pointer = p
        self.size = length
        self.hugePages = hugePages
    }

    deinit { munmap(pointer, size) }

    /// MADV_POPULATE_WRITE (Linux 5.14, include/uapi/asm-generic/mman-common.h).
    static let madvPopulateWrite: Int32 = 23

    /// Faults in `[offset, offset + length)` for writing, as a first write
    /// to each page would (allocating and zeroing it), without writing:
    /// `madvise(MADV_POPULATE_WRITE)`. The range must lie inside the
    /// mapping; with `hugePages`, offset and length are multiples of 2 MiB.
    /// Several threads may populate disjoint ranges at once.
    public func populate(offset: Int, length: Int) throws {
        guard offset >= 0, length > 0, offset <= size, length <= size - offset else {
            throw SysError(errno: EINVAL, operation: "populate [\(offset), +\(length)) of a \(size)-byte mapping")
        }
        // SAFETY: inside the mapping (checked above).
        let at = pointer + offset
        while madvise(at, length, Self.madvPopulateWrite) != 0 {
            let e = shim_errno()
            if e == EINTR { continue }
            throw SysError(errno: e, operation: "madvise(MADV_POPULATE_WRITE) of \(length >> 20) MiB")
        }
    }
}

/// The kernel could not give a hugetlbfs memfd its 2 MiB pages: none (or too
/// few) are reserved, or the kernel has no 2 MiB hugetlbfs pool.
public struct HugePageError: Error, CustomStringConvertible, Equatable {
    /// ENOMEM or EINVAL.
    public let errno: Int32
    /// The call that failed: memfd_create, ftruncate or mmap.
    public let operation: String
    public let name: String
    /// The mapping's size, a multiple of 2 MiB.
    public let bytes: Int
    /// 2 MiB pages the mapping needs.
    public var pagesNeeded: Int { bytes / SharedMemoryMapping.hugePageSize }
    /// The 2 MiB pool as the kernel reported it when this was thrown
    /// (/sys/kernel/mm/hugepages/hugepages-2048kB), nil if unreadable.
    public let pool: (total: Int, free: Int)?

    public init(errno: Int32, operation: String, name: String, bytes: Int,
                pool: (total: Int, free: Int)? = HugePageError.readPool()) {
        self.errno = errno
        self.operation = operation
        self.name = name
        self.bytes = bytes
        self.pool = pool
    }

    /// What to write to /proc/sys/vm/nr_hugepages for this mapping to fit:
    /// the pages already in use plus the ones needed ("N" without the pool).
    public var suggestedReservation: String {
        guard let pool else { return "N" }
        let inUse = max(0, pool.total - pool.free)
        return "\(inUse + pagesNeeded)"
    }

    public var description: String {
        let mib = bytes >> 20
        let have = pool.map { ", \($0.free) free of \($0.total)" } ?? ""
        return "no free 2 MiB hugepages: reserve them with `echo \(suggestedReservation) > /proc/sys/vm/nr_hugepages` "
            + "(\(name): \(mib) MiB needs \(pagesNeeded) page\(pagesNeeded == 1 ? "" : "s")\(have); \(operation): "
            + "\(String(cString: strerror(errno))), \(SysError(errno: errno, operation: "").errnoName))"
    }

    public static func == (a: HugePageError, b: HugePageError) -> Bool {
        a.errno == b.errno && a.operation == b.operation && a.name == b.name && a.bytes == b.bytes
            && a.pool?.total == b.pool?.total && a.pool?.free == b.pool?.free
    }

    /// The 2 MiB pool's size and free pages (Documentation/admin-guide/mm/hugetlbpage.rst).
    public static func readPool() -> (total: Int, free: Int)? {
        let dir = "/sys/kernel/mm/hugepages/hugepages-2048kB/"
        func number(_ file: String) -> Int? {
            // sysfs attributes report st_size 4096 whatever they hold.
            guard let bytes = try? HostFiles.readAll(dir + file, limit: 4096) else { return nil }
            return String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) }
        }
        guard let total = number("nr_hugepages"), let free = number("free_hugepages") else { return nil }
        return (total, free)
    }
}

/// A shared mapping of an fd region (the vCPU's kvm_run page, device BARs).
// @unchecked Sendable: immutable (`let` pointer and size); the mapping lives
// until deinit, and who may touch the bytes (the vCPU that owns kvm_run, the
// BAR's device) is its owner's rule.
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
