import GuestMemory
import TestFakes
import Virtio
import XCTest

/// §2.7.5.3: indirect descriptor tables, good and hostile.
final class IndirectDescriptorTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x10_0000)
    let indirect = VirtioSpec.Feature.indirectDescriptors
    let table: UInt64 = 0x20000
    let next = FakeDriver.flagNext, write = FakeDriver.flagWrite, ind = FakeDriver.flagIndirect

    private func queue(_ d: FakeDriver, features: UInt64? = nil) throws -> SplitVirtqueue {
        try d.makeQueue(features: features ?? indirect)
    }

    func testIndirectTableIsFlattenedInChainOrder() throws {
        let d = FakeDriver(memory: memory, size: 8)
        // Entries chained 0 -> 2 -> 1: order follows `next`, not table position.
        d.writeIndirectTable(at: table, [(0x8000, 16, next, 2), (0x9000, 32, write, 0), (0x8800, 8, next, 1)])
        d.setDescriptor(5, addr: table, len: 48, flags: ind | write) // WRITE on the pointer is ignored
        d.publish(5)
        var q = try queue(d)
        let chain = try XCTUnwrap(q.popAvailable(memory: memory))
        XCTAssertEqual(chain.head, 5)
        XCTAssertEqual(chain.segments, [
            DescriptorSegment(address: GuestAddress(0x8000), length: 16, isWritable: false),
            DescriptorSegment(address: GuestAddress(0x8800), length: 8, isWritable: false),
            DescriptorSegment(address: GuestAddress(0x9000), length: 32, isWritable: true),
        ])
        try q.addUsed(head: 5, len: 32, memory: memory)
        XCTAssertEqual(d.takeUsed().map(\.id), [5])
    }

    func testDirectDescriptorsThenAnIndirectTableAreAllowed() throws {
        // "zero or more normal chained descriptors followed by a single
        // descriptor with VIRTQ_DESC_F_INDIRECT" (§2.7.5.3.2).
        let d = FakeDriver(memory: memory, size: 8)
        d.writeIndirectTable(at: table, [(0x9000, 4, write, 0)])
        d.setDescriptor(0, addr: 0x8000, len: 4, flags: next, next: 1)
        d.setDescriptor(1, addr: table, len: 16, flags: ind)
        d.publish(0)
        var q = try queue(d)
        XCTAssertEqual(try q.popAvailable(memory: memory)?.segments.map(\.isWritable), [false, true])
    }

    func testIndirectWithoutTheFeatureIsAnError() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.writeIndirectTable(at: table, [(0x9000, 4, write, 0)])
        d.setDescriptor(0, addr: table, len: 16, flags: ind)
        d.publish(0)
        var q = try queue(d, features: 0)
        XCTAssertVirtqueueError(.indirectNotNegotiated(head: 0), try q.popAvailable(memory: memory))
    }

    func testIndirectWithNextIsAnError() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.writeIndirectTable(at: table, [(0x9000, 4, write, 0)])
        d.setDescriptor(0, addr: table, len: 16, flags: ind | next, next: 1)
        d.setDescriptor(1, addr: 0x8000, len: 4)
        d.publish(0)
        var q = try queue(d)
        XCTAssertVirtqueueError(.indirectWithNext(head: 0), try q.popAvailable(memory: memory))
    }

    func testTableLengthMustBeANonZeroMultipleOf16() throws {
        for bad: UInt32 in [0, 8, 17, 40, 0xFFFF_FFFF] {
            let d = FakeDriver(memory: memory, size: 8)
            d.writeIndirectTable(at: table, [(0x9000, 4, write, 0), (0x9000, 4, write, 0), (0x9000, 4, write, 0)])
            d.setDescriptor(0, addr: table, len: bad, flags: ind)
            d.publish(0)
            var q = try queue(d)
            XCTAssertVirtqueueError(.badIndirectTableLength(head: 0, length: bad), try q.popAvailable(memory: memory), "len \(bad)")
        }
    }

    func testTableOfMoreThan32768EntriesIsRefused() throws {
        let big = SparseMemory(size: 1 << 30)
        let d = FakeDriver(memory: big, size: 8)
        d.setDescriptor(0, addr: table, len: 16 * 32769, flags: ind)
        d.publish(0)
        var q = try d.makeQueue(features: indirect)
        XCTAssertVirtqueueError(.badIndirectTableLength(head: 0, length: 16 * 32769), try q.popAvailable(memory: big))
    }

    func testNestedIndirectIsAnError() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.writeIndirectTable(at: table + 0x100, [(0x9000, 4, write, 0)])
        d.writeIndirectTable(at: table, [(0x8000, 4, next, 1), (table + 0x100, 16, ind, 0)])
        d.setDescriptor(0, addr: table, len: 32, flags: ind)
        d.publish(0)
        var q = try queue(d)
        XCTAssertVirtqueueError(.nestedIndirect(head: 0), try q.popAvailable(memory: memory))
    }

    func testIndirectTableOutsideMemoryOrOverflowing() throws {
        let d = FakeDriver(memory: memory, size: 8)
        d.setDescriptor(0, addr: 0xFFFF0, len: 32, flags: ind)
        d.publish(0)
        d.setDescriptor(1, addr: 0xFFFF_FFFF_FFFF_FFF0, len: 32, flags: ind)
        d.publish(1)
        var q = try queue(d)
        XCTAssertVirtqueueError(.bufferOutsideMemory(address: 0xFFFF0, length: 32), try q.popAvailable(memory: memory))
        var q2 = try queue(d) // same rings, from the start: slot 0 now holds head 1
        d.setAvailIndex(0)
        d.publish(1)
        XCTAssertVirtqueueError(.addressOverflow(address: 0xFFFF_FFFF_FFFF_FFF0, length: 32), try q2.popAvailable(memory: memory))
    }

    func testIndirectEntriesAreCheckedLikeDirectOnes() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try queue(d)

        // `next` past the end of the table.
        d.writeIndirectTable(at: table, [(0x8000, 4, next, 2), (0x8000, 4, 0, 0)])
        d.setDescriptor(0, addr: table, len: 32, flags: ind)
        d.publish(0)
        XCTAssertVirtqueueError(.descriptorIndexOutOfRange(index: 2, tableSize: 2), try q.popAvailable(memory: memory))

        // A loop inside the table.
        var q2 = try queue(d)
        d.setAvailIndex(0)
        d.writeIndirectTable(at: table, [(0x8000, 4, next, 1), (0x8000, 4, next, 0)])
        d.publish(0)
        XCTAssertVirtqueueError(.chainTooLong(head: 0, limit: 2), try q2.popAvailable(memory: memory))

        // A buffer outside memory.
        var q3 = try queue(d)
        d.setAvailIndex(0)
        d.writeIndirectTable(at: table, [(0x8000, 4, next, 1), (0x200000, 4, write, 0)])
        d.publish(0)
        XCTAssertVirtqueueError(.bufferOutsideMemory(address: 0x200000, length: 4), try q3.popAvailable(memory: memory))

        // Readable after writable is reported, not thrown.
        var q4 = try queue(d)
        d.setAvailIndex(0)
        d.writeIndirectTable(at: table, [(0x8000, 4, write | next, 1), (0x8100, 4, 0, 0)])
        d.publish(0)
        XCTAssertEqual(try q4.popAvailable(memory: memory)?.hasReadableAfterWritable, true)
    }

    func testIndirectTableLongerThanTheQueueIsAllowed() throws {
        // Linux puts up to its segment count in one table, which may exceed
        // a small queue's size; the table's own entry count bounds the walk.
        let d = FakeDriver(memory: memory, size: 2)
        var entries: [(UInt64, UInt32, UInt16, UInt16)] = []
        for i in 0..<40 {
            let flags: UInt16 = i == 39 ? write : next | write
            entries.append((UInt64(0x8000 + 16 * i), 16, flags, UInt16(i + 1)))
        }
        d.writeIndirectTable(at: table, entries)
        d.setDescriptor(0, addr: table, len: 40 * 16, flags: ind)
        d.publish(0)
        var q = try queue(d)
        XCTAssertEqual(try q.popAvailable(memory: memory)?.writableLength, 640)
    }
}
