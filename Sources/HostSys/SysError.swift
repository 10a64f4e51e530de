import CShim
import Glibc

/// A failed system call: the errno and what we were doing.
public struct SysError: Error, CustomStringConvertible, Equatable {
    public let errno: Int32
    public let operation: String

    public init(errno: Int32, operation: String) {
        self.errno = errno
        self.operation = operation
    }

    /// Captures the current errno.
    public static func last(_ operation: String) -> SysError {
        SysError(errno: shim_errno(), operation: operation)
    }

    public var errnoName: String {
        switch errno {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EINTR: return "EINTR"
        case EIO: return "EIO"
        case EBADF: return "EBADF"
        case EAGAIN: return "EAGAIN"
        case ENOMEM: return "ENOMEM"
        case EACCES: return "EACCES"
        case EFAULT: return "EFAULT"
        case EBUSY: return "EBUSY"
        case EEXIST: return "EEXIST"
        case ENODEV: return "ENODEV"
        case EINVAL: return "EINVAL"
        case ENOSPC: return "ENOSPC"
        case ENOTTY: return "ENOTTY"
        case E2BIG: return "E2BIG"
        case ENXIO: return "ENXIO"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        default: return "errno \(errno)"
        }
    }

    /// What the C library says about the errno (strerror(3)).
    public var message: String { Self.message(errno: errno) }

    /// strerror(3) of `errno`, for layers that do not call libc themselves.
    public static func message(errno: Int32) -> String {
        String(cString: strerror(errno))
    }

    public var description: String {
        "\(operation): \(message) (\(errnoName))"
    }
}

/// The errno values the layers above HostSys test `SysError.errno` against
/// (asm-generic/errno-base.h, asm-generic/errno.h), so that only HostSys
/// imports the C library.
public enum Errno {
    public static let EPERM: Int32 = Glibc.EPERM
    public static let ENOENT: Int32 = Glibc.ENOENT
    public static let EINTR: Int32 = Glibc.EINTR
    public static let ENOTTY: Int32 = Glibc.ENOTTY
    public static let EIO: Int32 = Glibc.EIO
    public static let ENXIO: Int32 = Glibc.ENXIO
    public static let EAGAIN: Int32 = Glibc.EAGAIN
    public static let ENOMEM: Int32 = Glibc.ENOMEM
    public static let EACCES: Int32 = Glibc.EACCES
    public static let EBUSY: Int32 = Glibc.EBUSY
    public static let ETXTBSY: Int32 = Glibc.ETXTBSY
    public static let EROFS: Int32 = Glibc.EROFS
    public static let ENODEV: Int32 = Glibc.ENODEV
    public static let EINVAL: Int32 = Glibc.EINVAL
    public static let ERANGE: Int32 = Glibc.ERANGE
    public static let EMSGSIZE: Int32 = Glibc.EMSGSIZE
}

/// Runs `body` until it does not fail with EINTR. For ordinary calls only:
/// never for KVM_RUN, where EINTR means "the vCPU was kicked".
@inline(__always)
func retryingEINTR(_ body: () -> Int) -> Int {
    while true {
        let r = body()
        if r == -1 && shim_errno() == EINTR { continue }
        return r
    }
}
