import HostSys
import Synchronization
import VFIO

/// A kernel stand-in for the VFIO layer's ioctls: records every request and
/// its argument bytes, and lets the test write the reply (or fail with an errno).
/// Its state is behind a Mutex; `reply` runs outside it.
public final class FakePerformer: IOCTLPerformer {
    public struct Call: Sendable {
        public let request: UInt
        public let bytes: [UInt8]
        public let name: String
    }
    /// Gets the request and the argument; returns an errno to fail, or nil.
    public typealias Reply = @Sendable (UInt, UnsafeMutableRawBufferPointer) -> Int32?

    private struct State {
        var calls = [Call]()
        var descriptor: Int32 = 42
        var reply: Reply = { _, _ in nil }
    }
    private let state = Mutex(State())

    public var calls: [Call] {
        get { state.withLock { $0.calls } }
        set { state.withLock { $0.calls = newValue } }
    }
    public var descriptor: Int32 {
        get { state.withLock { $0.descriptor } }
        set { state.withLock { $0.descriptor = newValue } }
    }
    public var reply: Reply {
        get { state.withLock { $0.reply } }
        set { state.withLock { $0.reply = newValue } }
    }

    public init() {}

    /// Records the call and returns the reply to run (outside the lock).
    private func record(_ call: Call) -> Reply {
        state.withLock { s in
            s.calls.append(call)
            return s.reply
        }
    }

    public func ioctl(_ request: UInt, _ argument: UnsafeMutableRawBufferPointer, _ name: String) throws -> Int32 {
        let reply = record(Call(request: request, bytes: Array(argument), name: name))
        if let e = reply(request, argument) { throw SysError(errno: e, operation: name) }
        return 0
    }

    public func ioctl(_ request: UInt, integer: UInt, _ name: String) throws -> Int32 {
        let reply = record(Call(request: request, bytes: [], name: name))
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
