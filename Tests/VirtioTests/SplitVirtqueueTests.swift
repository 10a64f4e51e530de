import GuestMemory
import TestFakes
@testable import Virtio
import XCTest

final class SplitVirtqueueTests: XCTestCase {
    let ram = 0x10_0000 // 1 MiB at 0
    var memory: ArrayGuestMemory!

    override func setUp() {
        memory = ArrayGuestMemory(size: ram)
    }

    // MARK: configuration checks at activation

    func testRingLayoutSizesMatchTheSpecTable() {
        // §2.7 table: 16*N, 6+2*N, 6+8*N.
        XCTAssertEqual(VirtioSpec.SplitRing.descriptorTableBytes(size: 256), 4096)
        XCTAssertEqual(VirtioSpec.SplitRing.availRingBytes(size: 256), 518)
        XCTAssertEqual(VirtioSpec.SplitRing.usedRingBytes(size: 256), 2054)
    }

    func testQueueSizeMustBeAPowerOfTwoWithinTheMaximum() throws {
        for bad: UInt16 in [0, 3, 6, 100, 65535] {
            XCTAssertVirtqueueError(.invalidQueueSize(bad),
                try SplitVirtqueue(size: bad, descriptorTable: GuestAddress(0x1000), availRing: GuestAddress(0x2000),
                                   usedRing: GuestAddress(0x3000), features: 0, memory: memory), "size \(bad)")
        }
        XCTAssertVirtqueueError(.invalidQueueSize(512),
            try SplitVirtqueue(size: 512, maxSize: 256, descriptorTable: GuestAddress(0x1000),
                               availRing: GuestAddress(0x3000), usedRing: GuestAddress(0x4000), features: 0, memory: memory))
        // 65536 does not fit; 32768 is the largest (§2.7), and needs 512 KiB of table.
        let big = FakeDriver(memory: memory, size: 32768, base: 0)
        XCTAssertNoThrow(try big.makeQueue())
        XCTAssertNoThrow(try FakeDriver(memory: memory, size: 1).makeQueue())
    }

    func testMisalignedRingsAreRefused() {
        func make(_ d: UInt64, _ a: UInt64, _ u: UInt64) throws -> SplitVirtqueue {
            try SplitVirtqueue(size: 8, descriptorTable: GuestAddress(d), availRing: GuestAddress(a),
                               usedRing: GuestAddress(u), features: 0, memory: memory)
        }
        XCTAssertVirtqueueError(.misalignedRing(part: .descriptorTable, address: 0x1008), try make(0x1008, 0x2000, 0x3000))
        XCTAssertVirtqueueError(.misalignedRing(part: .availRing, address: 0x2001), try make(0x1000, 0x2001, 0x3000))
        XCTAssertVirtqueueError(.misalignedRing(part: .usedRing, address: 0x3002), try make(0x1000, 0x2000, 0x3002))
        XCTAssertNoThrow(try make(0x1010, 0x2002, 0x3004), "minimum alignments 16, 2, 4")
    }

    func testRingsOutsideMemoryOrOverflowingAreRefused() throws {
        func make(_ d: UInt64, _ a: UInt64, _ u: UInt64, _ m: GuestMemoryAccess) throws -> SplitVirtqueue {
            try SplitVirtqueue(size: 8, descriptorTable: GuestAddress(d), availRing: GuestAddress(a),
                               usedRing: GuestAddress(u), features: 0, memory: m)
        }
        let end = UInt64(ram)
        XCTAssertVirtqueueError(.ringOutsideMemory(part: .descriptorTable, address: end - 0x70, length: 128),
                                try make(end - 0x70, 0x2000, 0x3000, memory))
        XCTAssertVirtqueueError(.ringOutsideMemory(part: .availRing, address: end - 20, length: 22),
                                try make(0x1000, end - 20, 0x3000, memory))
        XCTAssertVirtqueueError(.ringOutsideMemory(part: .usedRing, address: 0xFFFF_FFFF_FFFF_FFF0, length: 70),
                                try make(0x1000, 0x2000, 0xFFFF_FFFF_FFFF_FFF0, memory))
        // A used ring that starts in one region and runs into a hole.
        let holey = try ArrayGuestMemory(regions: [(base: 0, size: 0x4000), (base: 0x5000, size: 0x1000)])
        XCTAssertVirtqueueError(.ringOutsideMemory(part: .usedRing, address: 0x3FE0, length: 70),
                                try make(0x1000, 0x2000, 0x3FE0, holey))
    }

    // MARK: the happy path

    func testPopsAChainAndReturnsItThroughTheUsedRing() throws {
        let d = FakeDriver(memory: memory, size: 16)
        var q = try d.makeQueue()
        XCTAssertNil(try q.popAvailable(memory: memory), "nothing available yet")

        let head = d.post([(0x8000, 12, false), (0x9000, 100, false), (0xA000, 64, true)])
        XCTAssertEqual(try q.availableCount(memory: memory), 1)
        let chain = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertEqual(chain.head, head)
        XCTAssertEqual(chain.segments, [
            DescriptorSegment(address: GuestAddress(0x8000), length: 12, isWritable: false),
            DescriptorSegment(address: GuestAddress(0x9000), length: 100, isWritable: false),
            DescriptorSegment(address: GuestAddress(0xA000), length: 64, isWritable: true),
        ])
        XCTAssertEqual(chain.readableLength, 112)
        XCTAssertEqual(chain.writableLength, 64)
        XCTAssertFalse(chain.hasReadableAfterWritable)
        XCTAssertNoThrow(try chain.requireReadableBeforeWritable())
        XCTAssertNil(try q.popAvailable(memory: memory))

        try q.addUsed(head: chain.head, len: 64, memory: memory)
        XCTAssertEqual(d.usedIndex, 1)
        let used = d.takeUsed()
        XCTAssertEqual(used.map(\.id), [UInt32(head)])
        XCTAssertEqual(used.map(\.len), [64])
    }

    func testChainDataHelpersReadAndWriteInChainOrder() throws {
        let d = FakeDriver(memory: memory, size: 8)
        try memory.writeBytes([1, 2, 3], at: GuestAddress(0x8000))
        try memory.writeBytes([4, 5], at: GuestAddress(0x8100))
        d.post([(0x8000, 3, false), (0x8100, 2, false), (0x9000, 2, true), (0x9100, 4, true)])
        var q = try d.makeQueue()
        let chain = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertEqual(try chain.readReadable(memory: memory), [1, 2, 3, 4, 5])
        XCTAssertEqual(try chain.readReadable(memory: memory, limit: 4), [1, 2, 3, 4])
        XCTAssertEqual(try chain.writeWritable([9, 8, 7, 6, 5, 4, 3], memory: memory), 6, "6 bytes of room")
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 2), [9, 8])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9100), count: 4), [7, 6, 5, 4])
    }

    func testManyChainsWrapTheFreeRunningIndicesPast65535() throws {
        let d = FakeDriver(memory: memory, size: 4)
        var q = try d.makeQueue()
        for i in 0..<(65536 + 10) {
            d.nextDescriptor = UInt16(i % 4)
            d.post([(0x8000, 8, true)])
            let chain = try XCTUnwrap(q.popAvailable(memory: memory), "iteration \(i)")
            try q.addUsed(head: chain.head, len: 8, memory: memory)
        }
        XCTAssertEqual(q.nextAvail, 10)
        XCTAssertEqual(q.nextUsed, 10)
        XCTAssertEqual(d.usedIndex, 10)
    }

    func testZeroLengthBuffersAreAcceptedWithoutAMemoryCheck() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.post([(0xFFFF_FFFF_0000, 0, true)])
        var q = try d.makeQueue()
        let chain = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertEqual(chain.writableLength, 0)
        XCTAssertEqual(try chain.writeWritable([1, 2], memory: memory), 0)
    }

    // MARK: hostile drivers

    func testHeadIndexOutOfRange() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        d.publishRaw(head: 8)
        XCTAssertVirtqueueError(.descriptorIndexOutOfRange(index: 8, tableSize: 8), try q.popAvailable(memory: memory))
        XCTAssertEqual(q.nextAvail, 0, "a failed pop leaves the queue where it was")
        d.setAvailIndex(0)
        d.publishRaw(head: 0xFFFF)
        XCTAssertVirtqueueError(.descriptorIndexOutOfRange(index: 0xFFFF, tableSize: 8), try q.popAvailable(memory: memory))
    }

    func testNextIndexOutOfRange() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.setDescriptor(0, addr: 0x8000, len: 4, flags: FakeDriver.flagNext, next: 9)
        d.publish(0)
        var q = try d.makeQueue()
        XCTAssertVirtqueueError(.descriptorIndexOutOfRange(index: 9, tableSize: 8), try q.popAvailable(memory: memory))
    }

    func testLoopingChainIsCaught() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.setDescriptor(0, addr: 0x8000, len: 4, flags: FakeDriver.flagNext, next: 1)
        d.setDescriptor(1, addr: 0x8000, len: 4, flags: FakeDriver.flagNext, next: 0)
        d.publish(0)
        var q = try d.makeQueue()
        XCTAssertVirtqueueError(.chainTooLong(head: 0, limit: 8), try q.popAvailable(memory: memory))

        let selfLoop = FakeDriver(memory: memory, size: 4, base: 0x4000)
        selfLoop.setDescriptor(2, addr: 0x8000, len: 4, flags: FakeDriver.flagNext, next: 2)
        selfLoop.publish(2)
        var q2 = try selfLoop.makeQueue()
        XCTAssertVirtqueueError(.chainTooLong(head: 2, limit: 4), try q2.popAvailable(memory: memory))
    }

    func testChainOfExactlyQueueSizeIsFineOneMoreIsNot() throws {
        let d = FakeDriver(memory: memory, size: 4)
        // 0 -> 1 -> 2 -> 3: all four descriptors.
        d.post([(0x8000, 1, false), (0x8001, 1, false), (0x8002, 1, true), (0x8003, 1, true)])
        var q = try d.makeQueue()
        XCTAssertEqual(try q.popAvailable(memory: memory)?.segments.count, 4)
        // 3 -> 0 -> 1 -> 2 -> 3: the fifth visit is one too many.
        d.setDescriptor(3, addr: 0x8000, len: 1, flags: FakeDriver.flagNext, next: 0)
        d.setDescriptor(2, addr: 0x8000, len: 1, flags: FakeDriver.flagNext, next: 3)
        d.publish(3)
        XCTAssertVirtqueueError(.chainTooLong(head: 3, limit: 4), try q.popAvailable(memory: memory))
    }

    func testBuffersOutsideGuestMemory() throws {
        let holey = try ArrayGuestMemory(regions: [(base: 0, size: 0x10000), (base: 0x20000, size: 0x10000)])
        let d = FakeDriver(memory: holey, size: 8)
        var q = try d.makeQueue()
        d.post([(0x30000, 1, false)]) // past the end of RAM
        XCTAssertVirtqueueError(.bufferOutsideMemory(address: 0x30000, length: 1), try q.popAvailable(memory: holey))

        var q2 = try d.makeQueue()
        d.setAvailIndex(0)
        d.nextDescriptor = 0
        d.post([(0xFFF0, 0x20, true)]) // runs from the first region into the hole
        XCTAssertVirtqueueError(.bufferOutsideMemory(address: 0xFFF0, length: 0x20), try q2.popAvailable(memory: holey))

        var q3 = try d.makeQueue()
        d.setAvailIndex(0)
        d.nextDescriptor = 0
        d.post([(0x18000, 0x10, true)]) // inside the hole
        XCTAssertVirtqueueError(.bufferOutsideMemory(address: 0x18000, length: 0x10), try q3.popAvailable(memory: holey))

        var q4 = try d.makeQueue()
        d.setAvailIndex(0)
        d.nextDescriptor = 0
        d.post([(0xF000, 0x1000, false), (0x20000, 0x1000, true)]) // each in a region: fine
        XCTAssertEqual(try q4.popAvailable(memory: holey)?.segments.count, 2)
    }

    func testAddressPlusLengthOverflow() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.post([(0xFFFF_FFFF_FFFF_FF00, 0x200, true)])
        var q = try d.makeQueue()
        XCTAssertVirtqueueError(.addressOverflow(address: 0xFFFF_FFFF_FFFF_FF00, length: 0x200), try q.popAvailable(memory: memory))
    }

    func testChainLargerThan4GiB() throws {
        let big = SparseMemory(size: 16 << 30)
        let d = FakeDriver(memory: big, size: 8)
        d.post([(0x1_0000_0000, 0xFFFF_FFFF, true), (0x2_0000_0000, 1, true)])
        var q = try d.makeQueue()
        // Exactly 2^32 bytes is allowed...
        XCTAssertEqual(try q.popAvailable(memory: big)?.writableLength, 1 << 32)
        d.post([(0x1_0000_0000, 0xFFFF_FFFF, true), (0x2_0000_0000, 2, true)])
        // ...one byte more is not (§2.7.5.2).
        XCTAssertVirtqueueError(.chainTooLarge(head: 2), try q.popAvailable(memory: big))
    }

    func testAvailIndexJumpBeyondQueueSize() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        d.setAvailIndex(9)
        XCTAssertVirtqueueError(.availIndexJump(availIndex: 9, nextAvail: 0, queueSize: 8), try q.popAvailable(memory: memory))
        XCTAssertVirtqueueError(.availIndexJump(availIndex: 9, nextAvail: 0, queueSize: 8), try q.availableCount(memory: memory))
        // A driver that moved the index backwards looks like a jump of ~65535.
        d.setAvailIndex(0xFFFF)
        XCTAssertVirtqueueError(.availIndexJump(availIndex: 0xFFFF, nextAvail: 0, queueSize: 8), try q.popAvailable(memory: memory))
        // Exactly a full queue is fine.
        for i: UInt16 in 0..<8 { d.setDescriptor(i, addr: 0x8000, len: 1, flags: FakeDriver.flagWrite) }
        d.setAvailIndex(0)
        for i: UInt16 in 0..<8 { d.publish(i) }
        XCTAssertEqual(try q.availableCount(memory: memory), 8)
        for _ in 0..<8 { XCTAssertNotNil(try q.popAvailable(memory: memory)) }
        XCTAssertNil(try q.popAvailable(memory: memory))
    }

    func testDirectionRules() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        d.post([(0x8000, 4, true), (0x8100, 4, false)])
        let misordered = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertTrue(misordered.hasReadableAfterWritable)
        XCTAssertVirtqueueError(.readableAfterWritable(head: misordered.head), try misordered.requireReadableBeforeWritable())

        d.post([(0x8000, 4, false), (0x8100, 4, true)])
        let mixed = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertVirtqueueError(.wrongDirection(head: mixed.head, expectedWritable: true), try mixed.requireWritableOnly())
        XCTAssertVirtqueueError(.wrongDirection(head: mixed.head, expectedWritable: false), try mixed.requireReadableOnly())

        d.post([(0x8000, 4, true)])
        XCTAssertNoThrow(try XCTUnwrap(q.popAvailable(memory: memory)).requireWritableOnly())
    }

    func testAddUsedRefusesAHeadOutsideTheQueue() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        XCTAssertVirtqueueError(.usedHeadOutOfRange(head: 8, queueSize: 8), try q.addUsed(head: 8, len: 0, memory: memory))
        XCTAssertEqual(d.usedIndex, 0)
    }

    func testDisabledQueueYieldsNothing() throws {
        var q = SplitVirtqueue.disabled()
        XCTAssertFalse(q.isEnabled)
        XCTAssertNil(try q.popAvailable(memory: memory))
        XCTAssertFalse(try q.needsNotification(memory: memory))
        XCTAssertVirtqueueError(.queueNotReady, try q.addUsed(head: 0, len: 0, memory: memory))
    }

    func testErrorDescriptionsNameTheProblem() {
        XCTAssertEqual(VirtqueueError.availIndexJump(availIndex: 9, nextAvail: 0, queueSize: 8).description,
                       "available index 9 is more than the queue size 8 ahead of 0")
        XCTAssertTrue(VirtqueueError.bufferOutsideMemory(address: 0x30000, length: 1).description.contains("0x30000+0x1"))
        XCTAssertTrue(VirtqueueError.chainTooLong(head: 3, limit: 4).description.contains("loop"))
    }
}
