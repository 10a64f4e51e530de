import Bits
import HostSys

/// Where a VFIO device's region accesses go: positioned reads and writes and
/// shared mappings of the device fd (each region at its `VFIORegionInfo.offset`).
/// The real one is the cdev's fd; tests inject a fake, as with `IOCTLPerformer`.
public protocol VFIODeviceIO: AnyObject, Sendable {
    /// Reads all of `buffer` at fd offset `offset`; false on any error.
    /// Called on vCPU threads: must not allocate or block for long.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    /// Writes all of `buffer` at fd offset `offset`; false on any error.
    func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool
    /// mmap(MAP_SHARED, PROT_READ | PROT_WRITE) of `length` bytes at fd offset
    /// `offset`; throws `SysError`.
    func map(length: UInt64, at offset: UInt64) throws -> UnsafeMutableRawPointer
    /// munmap of a pointer `map` returned.
    func unmap(_ pointer: UnsafeMutableRawPointer, length: UInt64)
}

/// The real `VFIODeviceIO`: pread/pwrite/mmap on a device fd owned elsewhere
/// (the `VFIODeviceCdev`'s performer).
public final class FileDeviceIO: VFIODeviceIO {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        DeviceIO.read(fd: fd, into: buffer, at: offset)
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        DeviceIO.write(fd: fd, from: buffer, at: offset)
    }

    public func map(length: UInt64, at offset: UInt64) throws -> UnsafeMutableRawPointer {
        try DeviceIO.mapShared(fd: fd, length: length, offset: offset, what: "VFIO device fd \(fd) at \(hex(offset))")
    }

    public func unmap(_ pointer: UnsafeMutableRawPointer, length: UInt64) {
        DeviceIO.unmap(pointer, length: length)
    }
}
