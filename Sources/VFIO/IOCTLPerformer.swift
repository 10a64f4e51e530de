import Bits
import CShim
import HostSys

/// Where the VFIO layer's ioctls go. The real one is a file descriptor; tests
/// inject a fake that records each request and writes the kernel's reply into
/// the argument, so every wrapper runs without a kernel (the idea of rust-vmm's
/// vfio-ioctls real/mock twins).
public protocol IOCTLPerformer: AnyObject, Sendable {
    /// The fd number handed to other ioctls (VFIO_DEVICE_BIND_IOMMUFD, kvm-vfio).
    var descriptor: Int32 { get }
    /// ioctl with a pointer to `argument`; throws `SysError` on failure.
    @discardableResult
    func ioctl(_ request: UInt, _ argument: UnsafeMutableRawBufferPointer, _ name: String) throws -> Int32
    /// ioctl with an integer argument.
    @discardableResult
    func ioctl(_ request: UInt, integer: UInt, _ name: String) throws -> Int32
}

/// The real performer: an owned fd, closed when the performer goes away.
public final class FileDescriptorPerformer: IOCTLPerformer {
    public let fd: FileDescriptor

    public init(_ fd: FileDescriptor) { self.fd = fd }

    public var descriptor: Int32 { fd.raw }

    public func ioctl(_ request: UInt, _ argument: UnsafeMutableRawBufferPointer, _ name: String) throws -> Int32 {
        try fd.ioctl(request, pointer: argument.baseAddress, name)
    }

    public func ioctl(_ request: UInt, integer: UInt, _ name: String) throws -> Int32 {
        try fd.ioctl(request, integer, name)
    }

    /// Opens `path` (or takes the passed "fd:N") read-write; errors keep the
    /// errno for the caller to explain.
    static func open(_ path: String, purpose: String) throws -> FileDescriptorPerformer {
        FileDescriptorPerformer(try FileDescriptor.openReadWrite(path, purpose: purpose))
    }
}

extension IOCTLPerformer {
    /// ioctl with a pointer to `value`, mapped into `VFIOError.ioctl`.
    @discardableResult
    func call<T>(_ request: UInt, _ value: inout T, _ name: String) throws -> Int32 {
        try vfioCall { try withUnsafeMutableBytes(of: &value) { try ioctl(request, $0, name) } }
    }

    /// ioctl on a byte buffer (flexible-array structs), mapped into `VFIOError.ioctl`.
    @discardableResult
    func call(_ request: UInt, bytes: inout [UInt8], _ name: String) throws -> Int32 {
        try vfioCall { try bytes.withUnsafeMutableBytes { try ioctl(request, $0, name) } }
    }
}

/// A zeroed buffer of `size` bytes with `argsz` (the first u32) set: the one
/// place VFIO's variable-size arguments get their size.
func argszBuffer(_ size: Int) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: size)
    LE.put(UInt32(truncatingIfNeeded: size), into: &b, at: 0)
    return b
}
