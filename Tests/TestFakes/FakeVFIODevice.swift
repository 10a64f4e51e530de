import CShim
import HostSys
import Synchronization
import VFIO

/// Region reads, writes and mmaps of a fake device fd: reads return
/// `content(offset)`, everything is recorded, mmaps return made-up pointers.
/// Its state is behind a Mutex.
public final class FakeDeviceIO: VFIODeviceIO {
    private struct State {
        var reads = [(offset: UInt64, count: Int)]()
        var writes = [(offset: UInt64, bytes: [UInt8])]()
        var maps = [(offset: UInt64, length: UInt64)]()
        /// Pointers as bit patterns.
        var unmaps = [(address: UInt, length: UInt64)]()
        var content: @Sendable (UInt64) -> UInt8 = { UInt8(truncatingIfNeeded: $0) }
        var mapErrno: Int32?
    }
    private let state = Mutex(State())

    public var reads: [(offset: UInt64, count: Int)] { state.withLock { $0.reads } }
    public var writes: [(offset: UInt64, bytes: [UInt8])] { state.withLock { $0.writes } }
    public var maps: [(offset: UInt64, length: UInt64)] { state.withLock { $0.maps } }
    public var unmaps: [(pointer: UnsafeMutableRawPointer, length: UInt64)] {
        state.withLock { $0.unmaps }.compactMap { u in UnsafeMutableRawPointer(bitPattern: u.address).map { ($0, u.length) } }
    }
    public var content: @Sendable (UInt64) -> UInt8 {
        get { state.withLock { $0.content } }
        set { state.withLock { $0.content = newValue } }
    }
    public var mapErrno: Int32? {
        get { state.withLock { $0.mapErrno } }
        set { state.withLock { $0.mapErrno = newValue } }
    }

    public init() {}

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        let content = state.withLock { s in
            s.reads.append((offset, buffer.count))
            return s.content
        }
        for i in 0..<buffer.count { buffer[i] = content(offset + UInt64(i)) }
        return true
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        state.withLock { $0.writes.append((offset, Array(buffer))) }
        return true
    }

    public func map(length: UInt64, at offset: UInt64) throws -> UnsafeMutableRawPointer {
        let n: Int = try state.withLock { s in
            if let e = s.mapErrno { throw SysError(errno: e, operation: "mmap") }
            s.maps.append((offset, length))
            return s.maps.count
        }
        // Never dereferenced: a distinct made-up address per mapping.
        return UnsafeMutableRawPointer(bitPattern: UInt(0x7000_0000_0000) + UInt(n) << 36)!
    }

    public func unmap(_ pointer: UnsafeMutableRawPointer, length: UInt64) {
        state.withLock { $0.unmaps.append((UInt(bitPattern: pointer), length)) }
    }
}

/// A vfio-pci device as the kernel describes it, answering the device ioctls.
/// What it reports is behind a Mutex, so tests may change it between calls.
public final class FakeVFIODevice: Sendable {
    public struct Region: Sendable {
        public var flags: UInt32
        public var size: UInt64
        public var offset: UInt64
        public var caps: [(id: UInt16, body: [UInt8])]

        public init(flags: UInt32, size: UInt64, offset: UInt64, caps: [(id: UInt16, body: [UInt8])] = []) {
            self.flags = flags
            self.size = size
            self.offset = offset
            self.caps = caps
        }
    }
    public static let rw = SHIM_VFIO_REGION_INFO_FLAG_READ | SHIM_VFIO_REGION_INFO_FLAG_WRITE
    public static let mmap = rw | SHIM_VFIO_REGION_INFO_FLAG_MMAP
    public static let gib: UInt64 = 1 << 30
    /// Region i lives at fd offset i << 40, as vfio-pci lays them out.
    public static func at(_ i: UInt64) -> UInt64 { i << 40 }

    private struct State {
        var deviceFlags = SHIM_VFIO_DEVICE_FLAGS_PCI | SHIM_VFIO_DEVICE_FLAGS_RESET
        var numRegions: UInt32 = 9
        var numIRQs: UInt32 = 5
        var regions: [UInt32: Region] = [
            // BAR0: 64 KiB with the MSI-X table page trapped (sparse areas).
            0: Region(flags: mmap, size: 0x1_0000, offset: at(0), caps: [(UInt16(1), FakeVFIODevice.sparseBody([(0, 0x1000), (0x3000, 0xD000)]))]),
            1: Region(flags: 0, size: 0, offset: at(1)),
            // BAR2: an 8 GiB 64-bit BAR, MSI-X table mappable; BAR3 is its upper half.
            2: Region(flags: mmap, size: 8 * gib, offset: at(2), caps: [(UInt16(3), [UInt8]())]),
            3: Region(flags: 0, size: 0, offset: at(3)),
            4: Region(flags: rw, size: 0x100, offset: at(4)),
            5: Region(flags: 0, size: 0, offset: at(5)),
            6: Region(flags: SHIM_VFIO_REGION_INFO_FLAG_READ, size: 0x2_0000, offset: at(6)),
            7: Region(flags: rw, size: 0x1000, offset: at(7)),
            // 8 (VGA) absent: EINVAL.
        ]
        var irqs: [UInt32: (UInt32, UInt32)] = [
            0: (SHIM_VFIO_IRQ_INFO_EVENTFD | SHIM_VFIO_IRQ_INFO_MASKABLE | SHIM_VFIO_IRQ_INFO_AUTOMASKED, 1),
            2: (SHIM_VFIO_IRQ_INFO_EVENTFD | SHIM_VFIO_IRQ_INFO_NORESIZE, 16),
            3: (SHIM_VFIO_IRQ_INFO_EVENTFD, 1),
        ]
        var bindErrno: Int32?
        var attachErrno: Int32?
        var hotResetErrno: Int32? = Errno.ENODEV
    }
    private let state = Mutex(State())

    public var deviceFlags: UInt32 {
        get { state.withLock { $0.deviceFlags } }
        set { state.withLock { $0.deviceFlags = newValue } }
    }
    public var numRegions: UInt32 {
        get { state.withLock { $0.numRegions } }
        set { state.withLock { $0.numRegions = newValue } }
    }
    public var numIRQs: UInt32 {
        get { state.withLock { $0.numIRQs } }
        set { state.withLock { $0.numIRQs = newValue } }
    }
    public var regions: [UInt32: Region] {
        get { state.withLock { $0.regions } }
        set { state.withLock { $0.regions = newValue } }
    }
    /// index -> (flags, count); absent: EINVAL.
    public var irqs: [UInt32: (UInt32, UInt32)] {
        get { state.withLock { $0.irqs } }
        set { state.withLock { $0.irqs = newValue } }
    }
    public var bindErrno: Int32? {
        get { state.withLock { $0.bindErrno } }
        set { state.withLock { $0.bindErrno = newValue } }
    }
    public var attachErrno: Int32? {
        get { state.withLock { $0.attachErrno } }
        set { state.withLock { $0.attachErrno = newValue } }
    }
    /// VFIO_DEVICE_PCI_HOT_RESET's answer: ENODEV as for a device on a root bus.
    public var hotResetErrno: Int32? {
        get { state.withLock { $0.hotResetErrno } }
        set { state.withLock { $0.hotResetErrno = newValue } }
    }
    public let performer = FakePerformer()

    public init() {
        performer.descriptor = 50
        // A cycle on purpose: the device must live as long as its performer.
        performer.reply = { req, arg in self.answer(req, arg) }
    }

    public func answer(_ req: UInt, _ arg: UnsafeMutableRawBufferPointer) -> Int32? {
        let (bindErrno, attachErrno, hotResetErrno) = state.withLock { ($0.bindErrno, $0.attachErrno, $0.hotResetErrno) }
        let (deviceFlags, numRegions, numIRQs) = state.withLock { ($0.deviceFlags, $0.numRegions, $0.numIRQs) }
        let (regions, irqs) = state.withLock { ($0.regions, $0.irqs) }
        switch req {
        case SHIM_VFIO_DEVICE_BIND_IOMMUFD:
            if let e = bindErrno { return e }
            put32(arg, 12, 4)
        case SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT:
            if let e = attachErrno { return e }
            put32(arg, 8, 11)
        case SHIM_VFIO_DEVICE_GET_INFO:
            put32(arg, 4, deviceFlags); put32(arg, 8, numRegions); put32(arg, 12, numIRQs)
        case SHIM_VFIO_DEVICE_GET_REGION_INFO:
            guard let r = regions[u32(Array(arg), 8)] else { return Errno.EINVAL }
            let needed = 32 + r.caps.reduce(0) { $0 + 8 + $1.body.count }
            put32(arg, 0, UInt32(needed))
            put32(arg, 4, r.flags | (r.caps.isEmpty ? 0 : SHIM_VFIO_REGION_INFO_FLAG_CAPS))
            put32(arg, 12, r.caps.isEmpty ? 0 : 32)
            put64(arg, 16, r.size)
            put64(arg, 24, r.offset)
            guard arg.count >= needed else { return nil }
            var at = 32
            for (i, c) in r.caps.enumerated() {
                let len = 8 + c.body.count
                arg.storeBytes(of: c.id.littleEndian, toByteOffset: at, as: UInt16.self)
                arg.storeBytes(of: UInt16(1).littleEndian, toByteOffset: at + 2, as: UInt16.self)
                put32(arg, at + 4, i == r.caps.count - 1 ? 0 : UInt32(at + len))
                for (j, x) in c.body.enumerated() { arg[at + 8 + j] = x }
                at += len
            }
        case SHIM_VFIO_DEVICE_PCI_HOT_RESET:
            return hotResetErrno
        case SHIM_VFIO_DEVICE_GET_IRQ_INFO:
            guard let (flags, count) = irqs[u32(Array(arg), 8)] else { return Errno.EINVAL }
            put32(arg, 4, flags); put32(arg, 12, count)
        default:
            break
        }
        return nil
    }

    /// The SET_IRQS calls made so far as (index, action|data flags, count).
    public var irqCalls: [(index: UInt32, flags: UInt32, count: UInt32)] {
        performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_SET_IRQS }.map { (u32($0.bytes, 8), u32($0.bytes, 4), u32($0.bytes, 16)) }
    }

    /// The SET_IRQS calls made so far with their eventfds (the `int32` data
    /// after the 20-byte `vfio_irq_set` header when DATA_EVENTFD is set).
    public var irqSets: [(index: UInt32, flags: UInt32, count: UInt32, eventfds: [Int32])] {
        performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_SET_IRQS }.map { c in
            let count = u32(c.bytes, 16)
            let fds = u32(c.bytes, 4) & SHIM_VFIO_IRQ_SET_DATA_EVENTFD == 0 ? [] :
                (0..<Int(count)).map { Int32(bitPattern: u32(c.bytes, 20 + 4 * $0)) }
            return (u32(c.bytes, 8), u32(c.bytes, 4), count, fds)
        }
    }

    /// The body of a VFIO_REGION_INFO_CAP_SPARSE_MMAP capability with `areas` (offset, size).
    public static func sparseBody(_ areas: [(UInt64, UInt64)]) -> [UInt8] {
        var b = [UInt8]()
        withUnsafeBytes(of: UInt32(areas.count).littleEndian) { b += $0 }
        b += [0, 0, 0, 0]
        for (o, s) in areas {
            withUnsafeBytes(of: o.littleEndian) { b += $0 }
            withUnsafeBytes(of: s.littleEndian) { b += $0 }
        }
        return b
    }
}
