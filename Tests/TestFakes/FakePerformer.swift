import HostSys
import VFIO

/// A kernel stand-in for the VFIO layer's ioctls: records every request and
/// its argument bytes, and lets the test write the reply (or fail with an errno).
public final class FakePerformer: IOCTLPerformer, @unchecked Sendable {
    public struct Call {
        public let request: UInt
        public let bytes: [UInt8]
        public let name: String
    }
    public var calls = [Call]()
    public var descriptor: Int32 = 42
    /// Gets the request and the argument; returns an errno to fail, or nil.
    public var reply: (UInt, UnsafeMutableRawBufferPointer) -> Int32? = { _, _ in nil }

    public init() {}

    public func ioctl(_ request: UInt, _ argument: UnsafeMutableRawBufferPointer, _ name: String) throws -> Int32 {
        calls.append(Call(request: request, bytes: Array(argument), name: name))
        if let e = reply(request, argument) { throw SysError(errno: e, operation: name) }
        return 0
    }

    public func ioctl(_ request: UInt, integer: UInt, _ name: String) throws -> Int32 {
        calls.append(Call(request: request, bytes: [], name: name))
        if let e = reply(request, UnsafeMutableRawBufferPointer(start: nil, count: 0)) { throw SysError(errno: e, operation: name) }
        return 0
    }
}

/// Little-endian fields of recorded ioctl arguments, and stores into replies.
public func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
public func u64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
public func put32(_ p: UnsafeMutableRawBufferPointer, _ o: Int, _ v: UInt32) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }
public func put64(_ p: UnsafeMutableRawBufferPointer, _ o: Int, _ v: UInt64) {
    withUnsafeBytes(of: v.littleEndian) { for i in 0..<8 { p[o + i] = $0[i] } }
}
