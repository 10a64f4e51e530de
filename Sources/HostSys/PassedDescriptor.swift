import CShim
import Glibc
import Synchronization

/// Files a launcher opened for the VMM and left open across exec, named
/// "fd:N" wherever a device node or image path goes: /dev/kvm (`--kvm`),
/// /dev/iommu (`--iommufd`), a VFIO cdev (`[[passthrough]] device`), a disk
/// image (`[[disk]] path`), a TAP queue (`[[net]] tap`). This is how a VMM
/// runs without privileges, as KubeVirt hands QEMU its iommufd and VFIO cdev
/// descriptors and systemd hands a service its sockets: whoever may open the
/// files opens them, and the VMM needs no right to their paths.
///
/// Taking one checks that it is open with the access the VMM needs, marks it
/// close-on-exec (no child inherits it) and makes the VMM its owner: it is
/// closed with the device that uses it. A number can serve one purpose at a
/// time; 0, 1 and 2 are the standard streams and never a passed file.
public enum PassedDescriptor {
    public static let prefix = "fd:"

    /// Whether `text` is written as a passed descriptor ("fd:" and anything).
    public static func isPassed(_ text: String) -> Bool { text.hasPrefix(prefix) }

    /// N of "fd:N" (decimal digits only, 3 or more), or a message that says
    /// what is wrong with the text; nil when `text` does not start with "fd:".
    public static func parse(_ text: String) -> Result<Int32, Problem>? {
        guard isPassed(text) else { return nil }
        let digits = text.dropFirst(prefix.count)
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int32(digits) else {
            return .failure(Problem("\"\(text)\" is not a passed descriptor: write fd: and its number, e.g. fd:3"))
        }
        guard n > 2 else {
            return .failure(Problem("\"\(text)\": descriptors 0, 1 and 2 are the standard streams; pass the file as 3 or above"))
        }
        return .success(n)
    }

    /// A reason a passed descriptor is not usable.
    public struct Problem: Error, CustomStringConvertible, Equatable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// What a descriptor refers to, by fstat(2).
    public enum Kind: Equatable, Sendable {
        case regularFile, blockDevice, directory, pipeOrSocket, other
        case characterDevice(major: UInt32, minor: UInt32)
    }

    /// What descriptor `n` is, or nil when it is not open.
    public static func kind(of n: Int32) -> Kind? {
        var st = stat()
        guard fstat(n, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .regularFile
        case S_IFBLK: return .blockDevice
        case S_IFDIR: return .directory
        case S_IFIFO, S_IFSOCK: return .pipeOrSocket
        case S_IFCHR: return .characterDevice(major: shim_major(UInt64(st.st_rdev)), minor: shim_minor(UInt64(st.st_rdev)))
        default: return .other
        }
    }

    /// What "fd:N" refers to, without taking it (a VFIO cdev's device number
    /// names it in sysfs before it is opened); the error is `take`'s.
    public static func kind(of text: String, purpose: String) throws -> Kind {
        let n = try number(text)
        guard let k = kind(of: n) else { throw notOpen(n, purpose: purpose) }
        return k
    }

    /// N of "fd:N", or the error that says what is wrong with the text.
    private static func number(_ text: String) throws -> Int32 {
        switch parse(text) {
        case nil: throw SysError(errno: EINVAL, operation: "\"\(text)\" is not a passed descriptor (fd:N)")
        case let .failure(p)?: throw SysError(errno: EINVAL, operation: p.description)
        case let .success(n)?: return n
        }
    }

    private static func notOpen(_ n: Int32, purpose: String) -> SysError {
        SysError(errno: EBADF, operation: "descriptor \(n) is not open: the launcher must open the file for "
            + "\(purpose) and leave it open across exec (no O_CLOEXEC)")
    }

    /// Owners of the descriptors taken so far (weakly: one closed, or gone,
    /// frees its number for another purpose).
    // @unchecked Sendable: a weak reference to a Sendable class (FileDescriptor),
    // only read and written under `owners`' lock.
    private struct Owner: @unchecked Sendable {
        weak var fd: FileDescriptor?
        let purpose: String
    }
    private static let owners = Mutex<[Int32: Owner]>([:])

    /// Takes "fd:N" for `purpose` (e.g. "KVM (/dev/kvm)"), which needs to
    /// write to it when `write`. The error names N and says what the launcher
    /// must do.
    public static func take(_ text: String, purpose: String, write: Bool) throws -> FileDescriptor {
        let n = try number(text)
        let flags = fcntl(n, F_GETFL)
        guard flags >= 0 else { throw notOpen(n, purpose: purpose) }
        let access = flags & O_ACCMODE
        if write, access == O_RDONLY {
            throw SysError(errno: EBADF, operation: "descriptor \(n) is open read-only, and \(purpose) needs it read-write (O_RDWR)")
        }
        if !write, access == O_WRONLY {
            throw SysError(errno: EBADF, operation: "descriptor \(n) is open write-only, and \(purpose) needs to read it")
        }
        return try owners.withLock { o in
            if let owner = o[n], let fd = owner.fd, !fd.isClosed {
                throw SysError(errno: EINVAL, operation: "descriptor \(n) is already \(owner.purpose); "
                    + "a passed descriptor serves one purpose")
            }
            guard fcntl(n, F_SETFD, FD_CLOEXEC) == 0 else { throw SysError.last("descriptor \(n): set FD_CLOEXEC") }
            let fd = FileDescriptor(adopting: n)
            o[n] = Owner(fd: fd, purpose: purpose)
            return fd
        }
    }
}
