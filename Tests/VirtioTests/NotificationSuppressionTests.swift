import GuestMemory
import TestFakes
import Virtio
import XCTest

/// §2.7.7 (device -> driver) and §2.7.10 (driver -> device) notification
/// suppression, with and without VIRTIO_F_EVENT_IDX.
final class NotificationSuppressionTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x10_0000)
    let eventIdx = VirtioSpec.Feature.eventIndex

    /// Pops one chain and returns it used.
    private func cycle(_ d: FakeDriver, _ q: inout SplitVirtqueue) throws {
        d.post([(0x8000, 4, true)])
        let chain = try XCTUnwrap(q.popAvailable(memory: memory))
        try q.addUsed(head: chain.head, len: 4, memory: memory)
    }

    func testWithoutEventIndexTheNoInterruptFlagDecides() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        XCTAssertFalse(try q.needsNotification(memory: memory), "nothing used yet")
        try cycle(d, &q)
        XCTAssertTrue(try q.needsNotification(memory: memory))
        XCTAssertFalse(try q.needsNotification(memory: memory), "nothing new since")

        d.availFlags = VirtioSpec.SplitRing.availFlagNoInterrupt
        try cycle(d, &q)
        XCTAssertFalse(try q.needsNotification(memory: memory), "driver asked for no interrupts")
        d.usedEvent = 0 // ignored without the feature (§2.7.7.2)
        d.availFlags = 0
        try cycle(d, &q)
        XCTAssertTrue(try q.needsNotification(memory: memory))
    }

    func testWithEventIndexUsedEventDecides() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue(features: eventIdx)
        d.availFlags = VirtioSpec.SplitRing.availFlagNoInterrupt // ignored with the feature (§2.7.7.2)

        // used_event 0: notify when the entry at index 0 is written (§2.7.7.2 note).
        d.usedEvent = 0
        try cycle(d, &q) // used.idx 0 -> 1
        XCTAssertTrue(try q.needsNotification(memory: memory))
        try cycle(d, &q) // 1 -> 2: used_event 0 was already passed
        XCTAssertFalse(try q.needsNotification(memory: memory))

        // "Wake me after 3 more": used_event = 4 fires when idx goes 4 -> 5.
        d.usedEvent = 4
        try cycle(d, &q) // 2 -> 3
        XCTAssertFalse(try q.needsNotification(memory: memory))
        try cycle(d, &q) // 3 -> 4
        XCTAssertFalse(try q.needsNotification(memory: memory))
        try cycle(d, &q) // 4 -> 5
        XCTAssertTrue(try q.needsNotification(memory: memory))

        // Several entries added between checks: one notification if the span crossed used_event.
        d.usedEvent = 6
        try cycle(d, &q) // 5 -> 6
        try cycle(d, &q) // 6 -> 7 (crosses 6)
        try cycle(d, &q) // 7 -> 8
        XCTAssertTrue(try q.needsNotification(memory: memory))
        XCTAssertFalse(try q.needsNotification(memory: memory))
    }

    func testEventIndexArithmeticWrapsAt16Bits() throws {
        let d = FakeDriver(memory: memory, size: 2)
        var q = try d.makeQueue(features: eventIdx)
        d.usedEvent = 0xFFFF // never reached in the first 65535 entries
        var notified = 0
        for _ in 0..<0xFFFF {
            try cycle(d, &q)
            if try q.needsNotification(memory: memory) { notified += 1 }
        }
        XCTAssertEqual(notified, 0)
        try cycle(d, &q) // used.idx 0xFFFF -> 0: the entry at index 0xFFFF
        XCTAssertTrue(try q.needsNotification(memory: memory))
    }

    func testDevicePublishesAvailEventSoTheDriverKnowsWhenToKick() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue(features: eventIdx)
        XCTAssertTrue(d.mustNotify(old: 0, new: 1), "avail_event starts at 0: the first buffer is kicked")
        d.post([(0x8000, 4, true)])
        _ = try q.popAvailable(memory: memory)
        XCTAssertEqual(d.availEvent, 1, "after taking entry 0 the device waits for entry 1")
        XCTAssertTrue(d.mustNotify(old: 1, new: 2))

        // With notifications disabled avail_event stays put, so the driver's
        // later buffers do not need a kick.
        try q.disableNotifications(memory: memory)
        d.post([(0x8000, 4, true)]) // idx 1 -> 2, kicks (avail_event 1)
        _ = try q.popAvailable(memory: memory)
        XCTAssertEqual(d.availEvent, 1)
        XCTAssertFalse(d.mustNotify(old: 2, new: 3), "suppressed")
        d.post([(0x8000, 4, true)]) // idx 2 -> 3, no kick

        // Re-enabling publishes the current position and reports the buffer
        // that slipped in meanwhile.
        XCTAssertTrue(try q.enableNotifications(memory: memory))
        XCTAssertEqual(d.availEvent, 2)
        _ = try q.popAvailable(memory: memory)
        XCTAssertEqual(d.availEvent, 3)
        XCTAssertFalse(try q.enableNotifications(memory: memory), "nothing pending")
    }

    func testWithoutEventIndexTheNoNotifyFlagIsUsed() throws {
        let d = FakeDriver(memory: memory, size: 8)
        var q = try d.makeQueue()
        XCTAssertEqual(d.usedFlags, 0)
        try q.disableNotifications(memory: memory)
        XCTAssertEqual(d.usedFlags, VirtioSpec.SplitRing.usedFlagNoNotify)
        d.post([(0x8000, 4, true)])
        XCTAssertTrue(try q.enableNotifications(memory: memory), "a buffer arrived while disabled")
        XCTAssertEqual(d.usedFlags, 0)
        _ = try q.popAvailable(memory: memory)
        XCTAssertEqual(d.availEvent, 0, "avail_event is not written without the feature")
    }
}
