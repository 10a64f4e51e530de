import Foundation
import GuestMemory
@testable import HostSys
import Synchronization
import TestFakes
import Virtio
import XCTest

/// An image in an array, with switches for read-only and failures. Its
/// state is behind a Mutex, as the device may call it from any thread.
final class MemoryDisk: BlockBackend {
    private struct State {
        var bytes: [UInt8]
        var flushes = 0
        var failIO = false
        /// Each `zero` call: (offset, length, deallocate).
        var zeroed: [(UInt64, UInt64, Bool)] = []
    }
    private let state: Mutex<State>
    let isReadOnly: Bool
    /// The image's size, fixed at creation.
    let capacity: UInt64
    struct Failure: Error {}

    init(size: Int, readOnly: Bool = false) {
        state = Mutex(State(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }))
        isReadOnly = readOnly
        capacity = UInt64(size)
    }

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var flushes: Int { state.withLock { $0.flushes } }
    var zeroed: [(UInt64, UInt64, Bool)] { state.withLock { $0.zeroed } }
    var failIO: Bool {
        get { state.withLock { $0.failIO } }
        set { state.withLock { $0.failIO = newValue } }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try state.withLock { s in
            if s.failIO { throw Failure() }
            let o = Int(offset)
            XCTAssertLessThanOrEqual(o + buffer.count, s.bytes.count, "the device checked the range")
            for i in 0..<buffer.count { buffer[i] = s.bytes[o + i] }
        }
    }

    func write(at offset: UInt64, from data: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            if s.failIO { throw Failure() }
            XCTAssertFalse(isReadOnly, "the device never writes a read-only backend")
            let o = Int(offset)
            XCTAssertLessThanOrEqual(o + data.count, s.bytes.count, "the device checked the range")
            for i in 0..<data.count { s.bytes[o + i] = data[i] }
        }
    }

    func flush() throws {
        try state.withLock { s in
            if s.failIO { throw Failure() }
            s.flushes += 1
        }
    }

    func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {
        try state.withLock { s in
            if s.failIO { throw Failure() }
            XCTAssertFalse(isReadOnly, "the device never zeroes a read-only backend")
            let o = Int(offset)
            XCTAssertLessThanOrEqual(o + Int(length), s.bytes.count, "the device checked the range")
            for i in o..<(o + Int(length)) { s.bytes[i] = 0 }
            s.zeroed.append((offset, length, deallocate))
        }
    }
}

/// virtio-blk driven end to end: a fake driver posts requests (§5.2.6) into
/// fake guest memory, the device serves them from a backend.
final class BlockTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x20_0000)
    // Where requests live in guest memory.
    let headerAt: UInt64 = 0x8000, dataAt: UInt64 = 0x10000, statusAt: UInt64 = 0xF000

    // §5.2.6 values, written independently of the device's constants.
    let tIn: UInt32 = 0, tOut: UInt32 = 1, tFlush: UInt32 = 4, tGetID: UInt32 = 8, tDiscard: UInt32 = 11,
        tWriteZeroes: UInt32 = 13
    let sOK: UInt8 = 0, sIOErr: UInt8 = 1, sUnsupp: UInt8 = 2

    struct Rig {
        let block: VirtioBlock
        let driver: FakeDriver
        let irq: RecordingInterrupt
    }

    func rig(_ backend: BlockBackend, serial: String = "") throws -> Rig {
        try memory.zero(at: GuestAddress(0x1000), length: 0x7000) // fresh rings
        let block = VirtioBlock(backend: backend, serial: serial)
        let driver = FakeDriver(memory: memory, size: 16)
        let irq = RecordingInterrupt()
        try block.activate(memory: memory, features: VirtioSpec.Feature.version1,
                           queues: [driver.makeQueue()], interrupt: irq)
        return Rig(block: block, driver: driver, irq: irq)
    }

    /// `value`'s bytes, little-endian (how every virtio-blk field is laid out).
    func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    func header(type: UInt32, sector: UInt64, reserved: UInt32 = 0) -> [UInt8] {
        le(type) + le(reserved) + le(sector)
    }

    /// Posts header | data (readable or writable) | status, the layout Linux uses.
    @discardableResult
    func post(_ r: Rig, type: UInt32, sector: UInt64, dataLength: UInt32, dataWritable: Bool) throws -> UInt16 {
        try memory.writeBytes(header(type: type, sector: sector), at: GuestAddress(headerAt))
        try memory.writeBytes([0xEE], at: GuestAddress(statusAt)) // not a valid status: must be overwritten
        var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = [(headerAt, 16, false)]
        if dataLength > 0 { chain.append((dataAt, dataLength, dataWritable)) }
        chain.append((statusAt, 1, true))
        return r.driver.post(chain)
    }

    func status() throws -> UInt8 { try memory.readBytes(at: GuestAddress(statusAt), count: 1)[0] }

    func serve(_ r: Rig) { r.block.queueNotified(VirtioBlock.requestQueue) }

    // MARK: identity and configuration

    func testIdentityFeaturesAndConfigurationBytes() throws {
        let disk = MemoryDisk(size: 1 << 20 | 100) // 2048 sectors and a partial one
        let block = VirtioBlock(backend: disk)
        XCTAssertEqual(block.deviceType, 2, "§5.2.1")
        XCTAssertEqual(block.queueMaxSizes, [256])
        // SEG_MAX (2) | BLK_SIZE (6) | FLUSH (9) | DISCARD (13) | WRITE_ZEROES (14), §5.2.3.
        XCTAssertEqual(block.deviceFeatures, 1 << 2 | 1 << 6 | 1 << 9 | 1 << 13 | 1 << 14)
        XCTAssertEqual(block.configSize, 60)
        XCTAssertEqual(block.capacitySectors, 2048)

        var b = [UInt8](repeating: 0xAA, count: 64)
        b.withUnsafeMutableBytes { block.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [0x00, 0x08, 0, 0, 0, 0, 0, 0, // le64 capacity 2048
                           0, 0, 0, 0,                   // le32 size_max (not offered)
                           254, 0, 0, 0,                 // le32 seg_max = 256 - 2
                           0, 0, 0, 0,                   // geometry (not offered)
                           0x00, 0x02, 0, 0,             // le32 blk_size 512
                           0, 0, 0, 0, 0, 0, 0, 0,       // topology (not offered)
                           0, 0, 1, 0,                   // writeback, unused (not offered), le16 num_queues 1
                           0, 0, 0x40, 0,                // le32 max_discard_sectors 1 << 22 (2 GiB)
                           0, 1, 0, 0,                   // le32 max_discard_seg 256
                           8, 0, 0, 0,                   // le32 discard_sector_alignment 8 (4 KiB)
                           0, 0, 0x40, 0,                // le32 max_write_zeroes_sectors
                           0, 1, 0, 0,                   // le32 max_write_zeroes_seg
                           1, 0, 0, 0,                   // write_zeroes_may_unmap, unused1
                           0, 0, 0, 0])                  // past the end: zeros
        var four = [UInt8](repeating: 0, count: 4)
        four.withUnsafeMutableBytes { block.readConfig(offset: 20, data: $0) }
        XCTAssertEqual(four, [0x00, 0x02, 0, 0])
        four.withUnsafeMutableBytes { block.writeConfig(offset: 0, data: UnsafeRawBufferPointer($0)) }
        b.withUnsafeMutableBytes { block.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b[0..<2], [0x00, 0x08], "writes are ignored")

        let ro = VirtioBlock(backend: MemoryDisk(size: 4096, readOnly: true))
        XCTAssertEqual(ro.deviceFeatures, 1 << 2 | 1 << 5 | 1 << 6 | 1 << 9, "RO (5), no DISCARD or WRITE_ZEROES, for a read-only backend")
        var roLimits = [UInt8](repeating: 0xAA, count: 24)
        roLimits.withUnsafeMutableBytes { ro.readConfig(offset: 36, data: $0) }
        XCTAssertEqual(roLimits, [UInt8](repeating: 0, count: 24), "no discard limits without the features")
    }

    // MARK: requests

    func testReadCopiesSectorsIntoTheDriverBuffer() throws {
        let disk = MemoryDisk(size: 64 * 512)
        let r = try rig(disk)
        let head = try post(r, type: tIn, sector: 3, dataLength: 1024, dataWritable: true)
        serve(r)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 1024), Array(disk.bytes[1536..<2560]))
        XCTAssertEqual(try status(), sOK)
        let used = r.driver.takeUsed()
        XCTAssertEqual(used.map(\.id), [UInt32(head)])
        XCTAssertEqual(used.map(\.len), [1025], "data written plus the status byte")
        XCTAssertEqual(r.irq.usedQueues, [0])
        XCTAssertEqual(r.block.statistics.reads, 1)
        XCTAssertEqual(r.block.statistics.bytesRead, 1024)
    }

    func testWriteStoresDriverDataAndUsesOnlyTheStatusByte() throws {
        let disk = MemoryDisk(size: 64 * 512)
        let r = try rig(disk)
        let data = (0..<512).map { UInt8(truncatingIfNeeded: 0x5A ^ $0) }
        try memory.writeBytes(data, at: GuestAddress(dataAt))
        try post(r, type: tOut, sector: 63, dataLength: 512, dataWritable: false) // the last sector
        serve(r)
        XCTAssertEqual(Array(disk.bytes[63 * 512..<64 * 512]), data)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1])
        XCTAssertEqual(r.block.statistics.writes, 1)
        XCTAssertEqual(r.block.statistics.bytesWritten, 512)
    }

    func testLargeRequestsMoveWhole() throws {
        let disk = MemoryDisk(size: 1 << 20)
        let r = try rig(disk)
        let data = (0..<(300 * 1024)).map { UInt8(truncatingIfNeeded: $0 / 3) }
        try memory.writeBytes(data, at: GuestAddress(dataAt))
        try post(r, type: tOut, sector: 8, dataLength: UInt32(data.count), dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(Array(disk.bytes[4096..<(4096 + data.count)]), data)

        try memory.zero(at: GuestAddress(dataAt), length: UInt64(data.count))
        try post(r, type: tIn, sector: 8, dataLength: UInt32(data.count), dataWritable: true)
        serve(r)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: data.count), data)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1, UInt32(data.count) + 1])
    }

    func testFlushCallsTheBackend() throws {
        let disk = MemoryDisk(size: 4096)
        let r = try rig(disk)
        try post(r, type: tFlush, sector: 0, dataLength: 0, dataWritable: false)
        serve(r)
        XCTAssertEqual(disk.flushes, 1)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1])
        XCTAssertEqual(r.block.statistics.flushes, 1)
    }

    func testGetIDReturnsTheSerialNulPadded() throws {
        let r = try rig(MemoryDisk(size: 4096), serial: "swiftvmm-disk0")
        try memory.writeBytes([UInt8](repeating: 0xFF, count: 32), at: GuestAddress(dataAt))
        try post(r, type: tGetID, sector: 0, dataLength: 20, dataWritable: true)
        serve(r)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 21),
                       Array("swiftvmm-disk0".utf8) + [0, 0, 0, 0, 0, 0, 0xFF])
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [21])

        // 20 bytes exactly: no terminator; longer serials are cut at 20.
        let long = try rig(MemoryDisk(size: 4096), serial: "0123456789abcdefghijKLMN")
        try post(long, type: tGetID, sector: 0, dataLength: 20, dataWritable: true)
        serve(long)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 20), Array("0123456789abcdefghij".utf8))
    }

    func testGetIDWithABufferShorterThan20BytesIsAnIOError() throws {
        let r = try rig(MemoryDisk(size: 4096), serial: "abc")
        try memory.writeBytes([UInt8](repeating: 0xFF, count: 8), at: GuestAddress(dataAt))
        try post(r, type: tGetID, sector: 0, dataLength: 8, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 8), [UInt8](repeating: 0xFF, count: 8))
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1])
    }

    func testUnknownTypesAreUnsupported() throws {
        let r = try rig(MemoryDisk(size: 4096))
        // SCSI_CMD (2), SECURE_ERASE (14) and ZONE_APPEND (15) are not offered.
        for type: UInt32 in [2, 14, 15, 0xFFFF_FFFF] {
            try post(r, type: type, sector: 0, dataLength: 0, dataWritable: false)
            serve(r)
            XCTAssertEqual(try status(), sUnsupp, "type \(type)")
        }
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1, 1, 1, 1])
        XCTAssertEqual(r.block.statistics.unsupportedRequests, 4)
        XCTAssertTrue(r.irq.errors.isEmpty)
    }

    func testReadOnlyDeviceRefusesWritesButServesReads() throws {
        let disk = MemoryDisk(size: 8 * 512, readOnly: true)
        let before = disk.bytes
        let r = try rig(disk)
        try memory.writeBytes([UInt8](repeating: 0x11, count: 512), at: GuestAddress(dataAt))
        try post(r, type: tOut, sector: 0, dataLength: 512, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr, "§5.2.6.2: IOERR for a write to a read-only device")
        XCTAssertEqual(disk.bytes, before, "and no data written")

        try post(r, type: tIn, sector: 1, dataLength: 512, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 512), Array(before[512..<1024]))
        XCTAssertEqual(r.block.statistics.invalidRequests, 1)
    }

    func testRequestsPastTheCapacityAreIOErrors() throws {
        let disk = MemoryDisk(size: 16 * 512 + 511) // 16 whole sectors
        let r = try rig(disk)
        let sentinel = [UInt8](repeating: 0xC3, count: 1024)
        for (sector, length) in [(UInt64(16), UInt32(512)), (15, 1024), (1000, 512)] {
            try memory.writeBytes(sentinel, at: GuestAddress(dataAt))
            try post(r, type: tIn, sector: sector, dataLength: length, dataWritable: true)
            serve(r)
            XCTAssertEqual(try status(), sIOErr, "sector \(sector) + \(length) bytes")
            XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 1024), sentinel, "nothing read")
            XCTAssertEqual(r.driver.takeUsed().map(\.len), [1], "only the status byte")
        }
        // The partial 17th sector is not part of the device.
        try post(r, type: tOut, sector: 16, dataLength: 512, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        // The last whole sector is.
        try post(r, type: tIn, sector: 15, dataLength: 512, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(r.block.statistics.invalidRequests, 4)
    }

    func testSectorArithmeticOverflowIsAnIOErrorNotATrap() throws {
        let disk = MemoryDisk(size: 4096)
        let r = try rig(disk)
        // sector * 512 overflows; sector * 512 fits but + length overflows.
        for sector in [UInt64.max, UInt64.max / 512, UInt64(1) << 55] {
            for type in [tIn, tOut] {
                try post(r, type: type, sector: sector, dataLength: 512, dataWritable: type == tIn)
                serve(r)
                XCTAssertEqual(try status(), sIOErr, "type \(type) sector \(sector)")
            }
        }
        XCTAssertTrue(r.irq.errors.isEmpty)
        XCTAssertEqual(r.driver.takeUsed().count, 6)
    }

    func testDataLengthNotAMultipleOf512IsAnIOError() throws {
        let r = try rig(MemoryDisk(size: 4096))
        try post(r, type: tIn, sector: 0, dataLength: 100, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sIOErr, "§5.2.6.1: data is a multiple of 512 bytes")
        try post(r, type: tOut, sector: 0, dataLength: 513, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
    }

    func testDataInTheWrongDirectionIsAnIOError() throws {
        let disk = MemoryDisk(size: 4096)
        let before = disk.bytes
        let r = try rig(disk)
        // IN with a device-readable data buffer: nothing may be written into it.
        let sentinel = [UInt8](repeating: 0x77, count: 512)
        try memory.writeBytes(sentinel, at: GuestAddress(dataAt))
        try post(r, type: tIn, sector: 0, dataLength: 512, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 512), sentinel)
        // OUT with a device-writable data buffer besides the status.
        try post(r, type: tOut, sector: 0, dataLength: 512, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual(disk.bytes, before)
        // GET_ID with readable data.
        try post(r, type: tGetID, sector: 0, dataLength: 20, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1, 1, 1])
        XCTAssertTrue(r.irq.errors.isEmpty, "answered within the protocol; the device goes on")
        try post(r, type: tIn, sector: 0, dataLength: 512, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sOK)
    }

    func testMissingStatusByteNeedsReset() throws {
        let disk = MemoryDisk(size: 4096)
        let r = try rig(disk)
        try memory.writeBytes(header(type: tOut, sector: 0), at: GuestAddress(headerAt))
        r.driver.post([(headerAt, 16, false), (dataAt, 512, false)])
        serve(r)
        XCTAssertEqual(r.irq.errors.count, 1)
        if case let .device(message)? = r.irq.errors.first {
            XCTAssertTrue(message.contains("status"), message)
        } else {
            XCTFail("expected a device error, got \(r.irq.errors)")
        }
        XCTAssertEqual(r.driver.usedIndex, 0, "nothing completed")

        // Broken until reset: later requests are left alone.
        try post(r, type: tFlush, sector: 0, dataLength: 0, dataWritable: false)
        serve(r)
        XCTAssertEqual(r.driver.usedIndex, 0)
        XCTAssertEqual(disk.flushes, 0)
        XCTAssertEqual(r.irq.errors.count, 1)
    }

    func testZeroLengthStatusDescriptorCountsAsMissing() throws {
        let r = try rig(MemoryDisk(size: 4096))
        try memory.writeBytes(header(type: tFlush, sector: 0), at: GuestAddress(headerAt))
        r.driver.post([(headerAt, 16, false), (statusAt, 0, true)])
        serve(r)
        XCTAssertEqual(r.irq.errors.count, 1)
        XCTAssertEqual(r.driver.usedIndex, 0)
    }

    func testShortHeaderNeedsReset() throws {
        let r = try rig(MemoryDisk(size: 4096))
        try memory.writeBytes(header(type: tIn, sector: 0), at: GuestAddress(headerAt))
        r.driver.post([(headerAt, 15, false), (statusAt, 1, true)])
        serve(r)
        XCTAssertEqual(r.irq.errors.count, 1)
        if case let .device(message)? = r.irq.errors.first {
            XCTAssertTrue(message.contains("15-byte header"), message)
        } else {
            XCTFail("expected a device error, got \(r.irq.errors)")
        }
        XCTAssertEqual(r.driver.usedIndex, 0)
    }

    func testReadableAfterWritableNeedsReset() throws {
        let r = try rig(MemoryDisk(size: 4096))
        try memory.writeBytes(header(type: tIn, sector: 0), at: GuestAddress(headerAt))
        let head = r.driver.post([(headerAt, 16, false), (dataAt, 512, true), (statusAt, 1, true), (0x9000, 4, false)])
        serve(r)
        XCTAssertEqual(r.irq.errors, [.readableAfterWritable(head: head)])
    }

    func testHeaderDataAndStatusMaySplitAnywhere() throws {
        // §2.6.4: the header in three pieces, the last sharing its
        // descriptor with the start of the data; the status sharing the
        // last writable descriptor with the end of the data.
        let disk = MemoryDisk(size: 64 * 512)
        let r = try rig(disk)
        let h = header(type: tOut, sector: 5)
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try memory.writeBytes(Array(h[0..<5]), at: GuestAddress(0x8000))
        try memory.writeBytes(Array(h[5..<12]), at: GuestAddress(0x8100))
        try memory.writeBytes(Array(h[12..<16]) + Array(data[0..<100]), at: GuestAddress(0x8200))
        try memory.writeBytes(Array(data[100...]), at: GuestAddress(0x8400))
        r.driver.post([(0x8000, 5, false), (0x8100, 7, false), (0x8200, 104, false), (0x8400, 924, false),
                       (statusAt, 1, true)])
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(Array(disk.bytes[2560..<3584]), data)

        // IN: data in two writable pieces, the second holding the status too.
        let hin = header(type: tIn, sector: 5)
        try memory.writeBytes(Array(hin[0..<9]), at: GuestAddress(0x8000))
        try memory.writeBytes(Array(hin[9..<16]), at: GuestAddress(0x8100))
        try memory.zero(at: GuestAddress(0xA000), length: 0x1000)
        r.driver.post([(0x8000, 9, false), (0x8100, 7, false), (0xA000, 600, true), (0xB000, 0, true),
                       (0xC000, 425, true)])
        serve(r)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xA000), count: 600), Array(data[0..<600]))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xC000), count: 424), Array(data[600...]))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xC000 + 424), count: 1), [sOK])
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1, 1025])
        XCTAssertTrue(r.irq.errors.isEmpty)
    }

    func testBackendFailureIsAnIOErrorAndTheDeviceGoesOn() throws {
        let disk = MemoryDisk(size: 4096)
        let r = try rig(disk)
        disk.failIO = true
        try post(r, type: tIn, sector: 0, dataLength: 512, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        try post(r, type: tFlush, sector: 0, dataLength: 0, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual(r.block.statistics.backendErrors, 2)
        disk.failIO = false
        try post(r, type: tFlush, sector: 0, dataLength: 0, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertTrue(r.irq.errors.isEmpty)
    }

    func testRequestsPostedBeforeActivationAreServedAndResetStops() throws {
        let disk = MemoryDisk(size: 4096)
        let block = VirtioBlock(backend: disk)
        let driver = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try memory.writeBytes(header(type: tFlush, sector: 0), at: GuestAddress(headerAt))
        driver.post([(headerAt, 16, false), (statusAt, 1, true)])
        try block.activate(memory: memory, features: VirtioSpec.Feature.version1,
                           queues: [driver.makeQueue()], interrupt: irq)
        XCTAssertEqual(disk.flushes, 1)
        block.reset()
        driver.post([(headerAt, 16, false), (statusAt, 1, true)])
        block.queueNotified(0)
        XCTAssertEqual(disk.flushes, 1)
        XCTAssertThrowsError(try block.activate(memory: memory, features: 0, queues: [], interrupt: irq))
    }

    func testRandomRequestsNeverTrapAndAlwaysGetAnAnswer() throws {
        var rng = SplitMix64(seed: 0xB10C)
        let disk = MemoryDisk(size: 40 * 512)
        var r = try rig(disk)
        let types: [UInt32] = [tIn, tOut, tFlush, tGetID, tDiscard, tWriteZeroes, 0x8000_0000]
        let sectors: [UInt64] = [0, 1, 39, 40, 41, UInt64.max, UInt64.max / 512, 1 << 55]
        var statuses: [UInt8: Int] = [:]
        var resets = 0
        for iteration in 0..<600 {
            var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = []
            // Mostly well-framed requests with hostile contents; sometimes broken framing.
            let headerLength = Int.random(in: 0..<4, using: &rng) == 0 ? UInt32.random(in: 0...24, using: &rng) : 16
            try memory.writeBytes(header(type: types.randomElement(using: &rng) ?? 0,
                                         sector: sectors.randomElement(using: &rng) ?? 0), at: GuestAddress(headerAt))
            chain.append((headerAt, headerLength, Int.random(in: 0..<30, using: &rng) == 0))
            var data: [(addr: UInt64, len: UInt32, writable: Bool)] = []
            for k in 0..<Int.random(in: 0...3, using: &rng) {
                let len = [0, 1, 20, 511, 512, 1024, 4096].randomElement(using: &rng) ?? 0
                data.append((0x20000 + 0x2000 * UInt64(k), UInt32(len), Bool.random(using: &rng)))
            }
            if Int.random(in: 0..<10, using: &rng) != 0 { data.sort { !$0.writable && $1.writable } }
            chain += data
            if Int.random(in: 0..<8, using: &rng) != 0 { chain.append((statusAt, 1, true)) }
            let errorsBefore = r.irq.errors.count
            let usedBefore = r.driver.usedIndex
            r.driver.post(chain)
            serve(r)
            if r.irq.errors.count > errorsBefore {
                XCTAssertEqual(r.driver.usedIndex, usedBefore, "iteration \(iteration)")
                resets += 1
                r = try rig(disk) // broken: a fresh device, as after a reset
                continue
            }
            let used = r.driver.takeUsed()
            XCTAssertEqual(used.count, 1, "iteration \(iteration): answered")
            let writable = chain.filter { $0.writable && $0.len > 0 }
            guard let last = writable.last, let len = used.first?.len else {
                XCTFail("iteration \(iteration): answered without a status byte")
                continue
            }
            XCTAssertLessThanOrEqual(UInt64(len), writable.reduce(0) { $0 + UInt64($1.len) })
            let status = try memory.readBytes(at: GuestAddress(last.addr + UInt64(last.len) - 1), count: 1)[0]
            XCTAssertTrue([sOK, sIOErr, sUnsupp].contains(status), "iteration \(iteration): status \(status)")
            statuses[status, default: 0] += 1
        }
        // The loop reaches every outcome, so it tests something.
        XCTAssertGreaterThan(resets, 20)
        XCTAssertGreaterThan(statuses[sOK] ?? 0, 20)
        XCTAssertGreaterThan(statuses[sIOErr] ?? 0, 20)
        XCTAssertGreaterThan(statuses[sUnsupp] ?? 0, 20)
    }

    // MARK: DISCARD and WRITE_ZEROES

    /// One `struct virtio_blk_discard_write_zeroes` (§5.2.6), little-endian.
    func segment(sector: UInt64, sectors: UInt32, flags: UInt32 = 0) -> [UInt8] {
        le(sector) + le(sectors) + le(flags)
    }

    /// Posts a DISCARD or WRITE_ZEROES with `data` (segments, or anything) as
    /// its readable data; serves it; returns the status.
    func zeroRequest(_ r: Rig, type: UInt32, _ data: [UInt8], writableData: UInt32 = 0) throws -> UInt8 {
        try memory.writeBytes(data, at: GuestAddress(dataAt))
        try memory.writeBytes(header(type: type, sector: 0), at: GuestAddress(headerAt))
        try memory.writeBytes([0xEE], at: GuestAddress(statusAt))
        var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = [(headerAt, 16, false)]
        if !data.isEmpty { chain.append((dataAt, UInt32(data.count), false)) }
        if writableData > 0 { chain.append((0x40000, writableData, true)) }
        chain.append((statusAt, 1, true))
        r.driver.post(chain)
        serve(r)
        XCTAssertEqual(r.driver.takeUsed().map(\.len), [1], "only the status byte is written")
        return try status()
    }

    func testDiscardZeroesEverySegmentAndAsksForAHole() throws {
        let disk = MemoryDisk(size: 64 * 512)
        let before = disk.bytes
        let r = try rig(disk)
        let st = try zeroRequest(r, type: tDiscard, segment(sector: 2, sectors: 3) + segment(sector: 60, sectors: 4))
        XCTAssertEqual(st, sOK)
        let after = disk.bytes
        XCTAssertEqual(Array(after[1024..<2560]), [UInt8](repeating: 0, count: 1536))
        XCTAssertEqual(Array(after[30720..<32768]), [UInt8](repeating: 0, count: 2048))
        XCTAssertEqual(Array(after[0..<1024]), Array(before[0..<1024]), "nothing else changes")
        XCTAssertEqual(Array(after[2560..<30720]), Array(before[2560..<30720]))
        XCTAssertEqual(disk.zeroed.map(\.0), [1024, 30720])
        XCTAssertEqual(disk.zeroed.map(\.1), [1536, 2048])
        XCTAssertEqual(disk.zeroed.map(\.2), [true, true], "a discard may give the space back")
        XCTAssertEqual(r.block.statistics.discards, 1)
        XCTAssertEqual(r.block.statistics.bytesZeroed, 3584)
    }

    func testWriteZeroesKeepsTheSpaceUnlessUnmapIsSet() throws {
        let disk = MemoryDisk(size: 64 * 512)
        let r = try rig(disk)
        XCTAssertEqual(try zeroRequest(r, type: tWriteZeroes, segment(sector: 0, sectors: 1)), sOK)
        XCTAssertEqual(try zeroRequest(r, type: tWriteZeroes, segment(sector: 8, sectors: 8, flags: 1)), sOK)
        XCTAssertEqual(Array(disk.bytes[0..<512]), [UInt8](repeating: 0, count: 512))
        XCTAssertEqual(Array(disk.bytes[4096..<8192]), [UInt8](repeating: 0, count: 4096))
        XCTAssertNotEqual(Array(disk.bytes[512..<4096]), [UInt8](repeating: 0, count: 3584))
        XCTAssertEqual(disk.zeroed.map(\.2), [false, true])
        XCTAssertEqual(r.block.statistics.writeZeroes, 2)
    }

    func testZeroingRequestsAreCheckedWholeBeforeAnySectorChanges() throws {
        let disk = MemoryDisk(size: 64 * 512)
        let before = disk.bytes
        let r = try rig(disk)
        let good = segment(sector: 0, sectors: 8)
        let cases: [(String, UInt32, [UInt8], UInt32, UInt8)] = [
            ("an unknown flag", tWriteZeroes, good + segment(sector: 8, sectors: 1, flags: 2), 0, sUnsupp),
            ("UNMAP on a discard", tDiscard, good + segment(sector: 8, sectors: 1, flags: 1), 0, sUnsupp),
            ("no segment", tDiscard, [], 0, sIOErr),
            ("a partial segment", tDiscard, good + [1, 2, 3], 0, sIOErr),
            ("a segment past the capacity", tDiscard, good + segment(sector: 60, sectors: 5), 0, sIOErr),
            ("a segment starting at the capacity", tWriteZeroes, good + segment(sector: 64, sectors: 1), 0, sIOErr),
            ("a sector that overflows", tDiscard, good + segment(sector: UInt64.max / 256, sectors: 1), 0, sIOErr),
            ("sector + length that wraps", tWriteZeroes, good + segment(sector: UInt64.max / 512, sectors: 8), 0, sIOErr),
            ("more sectors than max_discard_sectors", tDiscard, segment(sector: 0, sectors: (1 << 22) + 1), 0, sIOErr),
            ("257 segments", tDiscard, (0..<257).flatMap { _ in segment(sector: 0, sectors: 1) }, 0, sIOErr),
            ("writable data besides the status", tDiscard, good, 512, sIOErr),
        ]
        for (what, type, data, writable, want) in cases {
            XCTAssertEqual(try zeroRequest(r, type: type, data, writableData: writable), want, what)
        }
        XCTAssertEqual(disk.bytes, before, "no sector changed")
        XCTAssertTrue(disk.zeroed.isEmpty)
        XCTAssertEqual(r.block.statistics.unsupportedRequests, 2)
        XCTAssertEqual(r.block.statistics.invalidRequests, UInt64(cases.count - 2))
        // 256 segments are allowed, and a segment of 0 sectors is a no-op.
        let many = (0..<256).flatMap { segment(sector: UInt64($0 % 64), sectors: $0 == 0 ? 0 : 1) }
        XCTAssertEqual(try zeroRequest(r, type: tDiscard, many), sOK)
        XCTAssertEqual(disk.zeroed.count, 255)
        XCTAssertEqual(disk.bytes.prefix(512), [UInt8](repeating: 0, count: 512)[...], "sector 0 by a later segment")
    }

    func testZeroingOnAReadOnlyDeviceOrAFailingBackendIsAnIOError() throws {
        let ro = try rig(MemoryDisk(size: 8 * 512, readOnly: true))
        XCTAssertEqual(try zeroRequest(ro, type: tDiscard, segment(sector: 0, sectors: 1)), sIOErr)
        XCTAssertEqual(try zeroRequest(ro, type: tWriteZeroes, segment(sector: 0, sectors: 1)), sIOErr)
        let disk = MemoryDisk(size: 8 * 512)
        let r = try rig(disk)
        disk.failIO = true
        XCTAssertEqual(try zeroRequest(r, type: tWriteZeroes, segment(sector: 0, sectors: 1)), sIOErr)
        XCTAssertEqual(r.block.statistics.backendErrors, 1)
        disk.failIO = false
        XCTAssertEqual(try zeroRequest(r, type: tWriteZeroes, segment(sector: 0, sectors: 1)), sOK, "the device goes on")
    }

    // MARK: BlockFile

    /// The host image file as a block backend. The VMM makes `BlockFile`
    /// itself conform (Virtio cannot see HostSys); this forwarding copy keeps
    /// these tests in the device layer. VMMTests checks the VMM's conformance.
    final class HostFileDisk: BlockBackend {
        let file: BlockFile
        init(_ file: BlockFile) { self.file = file }
        var capacity: UInt64 { file.capacity }
        var isReadOnly: Bool { file.isReadOnly }
        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try file.read(at: offset, into: buffer) }
        func write(at offset: UInt64, from data: UnsafeRawBufferPointer) throws { try file.write(at: offset, from: data) }
        func flush() throws { try file.flush() }
        func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {
            try file.zero(at: offset, length: length, deallocate: deallocate)
        }
    }

    private func tempImage(_ bytes: [UInt8]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-blk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("disk.img").path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    func testBlockFileEndToEndDataIsInTheFileAfterFlush() throws {
        let original = (0..<(32 * 512)).map { UInt8(truncatingIfNeeded: $0 >> 4) }
        let path = try tempImage(original)
        let file = try BlockFile(path: path)
        XCTAssertEqual(file.capacity, 32 * 512)
        XCTAssertFalse(file.isReadOnly)
        let r = try rig(HostFileDisk(file))
        XCTAssertEqual(r.block.capacitySectors, 32)

        try post(r, type: tIn, sector: 4, dataLength: 1024, dataWritable: true)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(dataAt), count: 1024), Array(original[2048..<3072]))

        let data = (0..<1536).map { UInt8(truncatingIfNeeded: 255 - $0) }
        try memory.writeBytes(data, at: GuestAddress(dataAt))
        try post(r, type: tOut, sector: 30, dataLength: 1536, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr, "sectors 30-32 run past the 32-sector image")
        try post(r, type: tOut, sector: 29, dataLength: 1536, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sOK)
        try post(r, type: tFlush, sector: 0, dataLength: 0, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sOK)

        let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(onDisk.count, original.count, "the image does not grow")
        XCTAssertEqual(Array(onDisk[(29 * 512)...]), data)
        XCTAssertEqual(Array(onDisk[..<(29 * 512)]), Array(original[..<(29 * 512)]))
    }

    func testBlockFileZeroReadsBackZerosAndKeepsTheSize() throws {
        let original = [UInt8](repeating: 0xA5, count: 256 * 1024)
        let path = try tempImage(original)
        let file = try BlockFile(path: path)
        let r = try rig(HostFileDisk(file))
        // A hole at 64 KiB (DISCARD), zeros kept allocated at 8 KiB + 512 (WRITE_ZEROES).
        XCTAssertEqual(try zeroRequest(r, type: tDiscard, segment(sector: 128, sectors: 256)), sOK)
        XCTAssertEqual(try zeroRequest(r, type: tWriteZeroes, segment(sector: 17, sectors: 3)), sOK)
        try file.flush()
        let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(onDisk.count, original.count, "the image keeps its size")
        var want = original
        for i in (128 * 512)..<(384 * 512) { want[i] = 0 }
        for i in (17 * 512)..<(20 * 512) { want[i] = 0 }
        XCTAssertEqual(onDisk, want)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        // st_blocks counts 512-byte units: the 128 KiB hole is no longer allocated
        // (ext4, xfs, btrfs and tmpfs all punch holes).
        XCTAssertLessThanOrEqual(Int(st.st_blocks) * 512, original.count - 128 * 1024)
        let ro = try BlockFile(path: try tempImage(original), readOnly: true)
        XCTAssertThrowsError(try ro.zero(at: 0, length: 512, deallocate: true))
    }

    func testBlockFileDirectServesAlignedTransfersAndBuffersTheRest() throws {
        let original = (0..<(64 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) }
        let path = try tempImage(original)
        let file = try BlockFile(path: path, direct: true)
        XCTAssertEqual(file.isDirect, file.directUnavailable == nil)
        let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: BlockFile.directAlignment)
        defer { aligned.deallocate() }
        aligned.copyBytes(from: (0..<8192).map { UInt8(truncatingIfNeeded: 7 &* $0) })
        try file.write(at: 16384, from: UnsafeRawBufferPointer(aligned))                          // aligned
        try file.write(at: 512, from: UnsafeRawBufferPointer(rebasing: aligned[0..<512]))         // 512-byte
        try file.write(at: 40960, from: UnsafeRawBufferPointer(rebasing: aligned[512..<4608]))    // unaligned address
        let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: BlockFile.directAlignment)
        defer { back.deallocate() }
        try file.read(at: 16384, into: back)
        XCTAssertEqual(Array(back), Array(aligned))
        try file.read(at: 512, into: UnsafeMutableRawBufferPointer(rebasing: back[0..<512]))
        XCTAssertEqual(Array(back[0..<512]), Array(aligned[0..<512]))
        try file.flush()
        let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(onDisk[16384..<24576]), Array(aligned))
        XCTAssertEqual(Array(onDisk[40960..<45056]), Array(aligned[512..<4608]))
        XCTAssertEqual(Array(onDisk[0..<512]), Array(original[0..<512]))
        let counts = file.transferCounts
        if file.isDirect {
            XCTAssertEqual(counts.direct, 2, "the 8 KiB write and read at 16 KiB went past the page cache")
            XCTAssertEqual(counts.buffered, 3)
        } else {
            XCTAssertEqual(counts.direct, 0, "no O_DIRECT here (\(file.directUnavailable ?? "")): all buffered")
            XCTAssertEqual(counts.buffered, 5)
        }
        let plain = try BlockFile(path: try tempImage(original), readOnly: true)
        XCTAssertFalse(plain.isDirect)
        XCTAssertNil(plain.directUnavailable, "not asked for")
    }

    func testBlockFileVectoredTransfersPastIOVMaxAndZeroLengthBuffers() throws {
        let path = try tempImage([UInt8](repeating: 0, count: 16384))
        let file = try BlockFile(path: path)
        // 1,500 buffers of 3 bytes (and empty ones among them): more than one
        // pwritev call (IOV_MAX is 1024), each piece where it belongs.
        let pieces: [[UInt8]] = (0..<1500).map { (i: Int) -> [UInt8] in
            i % 100 == 7 ? [] : [UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), 0xEE]
        }
        let flat = pieces.flatMap { $0 }
        let buffers = pieces.map { p -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: p.count, alignment: 1)
            b.copyBytes(from: p)
            return b
        }
        defer { for b in buffers { b.deallocate() } }
        try file.write(at: 100, from: buffers.map { UnsafeRawBufferPointer($0) })
        let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(onDisk[100..<(100 + flat.count)]), flat)
        for b in buffers { b.initializeMemory(as: UInt8.self, repeating: 0) }
        try file.read(at: 100, into: buffers)
        XCTAssertEqual(buffers.flatMap { Array($0) }, flat)
        XCTAssertThrowsError(try file.read(at: 16380, into: [buffers[0], buffers[1]]), "past the end of the image")
    }

    func testBlockFileReadOnlyAttachmentRefusesGuestWrites() throws {
        let original = [UInt8](repeating: 0x42, count: 4096)
        let path = try tempImage(original)
        let file = try BlockFile(path: path, readOnly: true)
        XCTAssertTrue(file.isReadOnly)
        let r = try rig(HostFileDisk(file))
        XCTAssertNotEqual(r.block.deviceFeatures & 1 << 5, 0)
        try memory.writeBytes([UInt8](repeating: 0, count: 512), at: GuestAddress(dataAt))
        try post(r, type: tOut, sector: 0, dataLength: 512, dataWritable: false)
        serve(r)
        XCTAssertEqual(try status(), sIOErr)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), original)
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try file.write(at: 0, from: $0) }) {
            XCTAssertEqual(($0 as? SysError)?.errno, EBADF)
        }
    }

    func testBlockFileRefusesAMissingImageNamingThePath() throws {
        let path = "/nonexistent-swiftvmm-dir/disk.img"
        XCTAssertThrowsError(try BlockFile(path: path)) { error in
            XCTAssertEqual((error as? SysError)?.errno, ENOENT)
            XCTAssertTrue("\(error)".contains("disk image \(path) does not exist"), "\(error)")
        }
    }

    func testBlockFileRefusesADirectory() throws {
        let dir = FileManager.default.temporaryDirectory.path
        XCTAssertThrowsError(try BlockFile(path: dir)) { error in
            XCTAssertEqual((error as? SysError)?.errno, EISDIR, "\(error)")
            XCTAssertTrue("\(error)".contains(dir), "\(error)")
        }
        XCTAssertThrowsError(try BlockFile(path: dir, readOnly: true)) { error in
            XCTAssertEqual((error as? SysError)?.errno, EINVAL, "\(error)")
            XCTAssertTrue("\(error)".contains("not a regular file or block device"), "\(error)")
        }
    }

    func testBlockFileUnwritableMessageSaysWhatToDo() {
        // Root ignores file modes, so the message is checked directly.
        let m = BlockFile.openFailure(path: "/img/a.raw", readOnly: false, errno: EACCES)
        XCTAssertEqual(m, "disk image /img/a.raw cannot be opened for writing (fix its permissions, or attach it read-only)")
        XCTAssertEqual(BlockFile.openFailure(path: "/img/a.raw", readOnly: false, errno: EROFS), m)
        XCTAssertEqual(BlockFile.openFailure(path: "/img/a.raw", readOnly: true, errno: EACCES),
                       "disk image /img/a.raw cannot be read (check its permissions)")
    }

    func testBlockFileLocksTheImageAgainstASecondWriter() throws {
        let path = try tempImage([UInt8](repeating: 0, count: 4096))
        try withExtendedLifetime(try BlockFile(path: path)) { _ in
            XCTAssertThrowsError(try BlockFile(path: path)) { error in
                XCTAssertEqual((error as? SysError)?.errno, EWOULDBLOCK)
                XCTAssertTrue("\(error)".contains("disk image \(path) is in use by another process"), "\(error)")
            }
            XCTAssertThrowsError(try BlockFile(path: path, readOnly: true), "no reader while a writer has it")
        }
        // The writer closed: readers may share the image, a writer may not join them.
        let readers = [try BlockFile(path: path, readOnly: true), try BlockFile(path: path, readOnly: true)]
        try withExtendedLifetime(readers) {
            XCTAssertThrowsError(try BlockFile(path: path))
        }
    }

    func testBlockFileReadPastTheEndIsAnError() throws {
        let path = try tempImage([UInt8](repeating: 7, count: 1000))
        let file = try BlockFile(path: path, readOnly: true)
        var buffer = [UInt8](repeating: 0, count: 100)
        try buffer.withUnsafeMutableBytes { try file.read(at: 900, into: $0) }
        XCTAssertEqual(buffer, [UInt8](repeating: 7, count: 100))
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try file.read(at: 950, into: $0) }) { error in
            XCTAssertEqual((error as? SysError)?.errno, EIO)
            XCTAssertTrue("\(error)".contains("unexpected end of file"), "\(error)")
        }
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try file.read(at: UInt64.max, into: $0) }) { error in
            XCTAssertEqual((error as? SysError)?.errno, EINVAL)
        }
        try file.flush() // fsync on a read-only descriptor is allowed
    }
}
