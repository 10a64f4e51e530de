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

    public var description: String {
        "\(operation): \(String(cString: strerror(errno))) (\(errnoName))"
    }
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
