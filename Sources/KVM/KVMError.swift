import HostSys

/// Errors of the KVM layer, each saying what the user can do about it.
public enum KVMError: Error, CustomStringConvertible, Equatable {
    case deviceMissing(path: String)
    case permissionDenied(path: String)
    case openFailed(path: String, SysError)
    case apiVersion(found: Int32, expected: Int32)
    case missingCapability(String)
    case ioctl(SysError)
    case runPageTooSmall(Int)

    public var description: String {
        switch self {
        case let .deviceMissing(p):
            return "\(p) does not exist: KVM is not available on this host (load kvm_intel or kvm_amd, enable VT-x/AMD-V in firmware, or run inside a VM with nested virtualization)"
        case let .permissionDenied(p):
            return "no permission to open \(p): add your user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again) or run as root"
        case let .openFailed(p, e):
            return "cannot open \(p): \(e)"
        case let .apiVersion(found, expected):
            return "KVM API version \(found) is not supported (SwiftVMM needs \(expected))"
        case let .missingCapability(name):
            return "KVM on this host lacks the required capability \(name)"
        case let .ioctl(e):
            return "\(e)"
        case let .runPageTooSmall(n):
            return "KVM reported a vCPU mmap size of \(n) bytes, smaller than struct kvm_run"
        }
    }
}

@inline(__always)
@discardableResult
func kvmCall<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as SysError { throw KVMError.ioctl(e) }
}
