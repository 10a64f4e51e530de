import XCTest
@testable import VMM

/// The kernel-free parts of the passthrough glue.
final class PassthroughGlueTests: XCTestCase {
    func testMemorySlotsStartAboveRAMAndAreReused() throws {
        let pool = MemorySlotPool(first: 2)
        let a = try pool.take(), b = try pool.take()
        XCTAssertEqual([a, b], [2, 3])
        pool.give(a)
        XCTAssertEqual(try pool.take(), 2, "a freed slot is used again before a new one")
        XCTAssertEqual(try pool.take(), 4)
    }

    func testMemorySlotsRunOutWithAnError() {
        let pool = MemorySlotPool(first: MemorySlotPool.limit - 1)
        XCTAssertNoThrow(try pool.take())
        XCTAssertThrowsError(try pool.take()) { e in
            XCTAssertTrue("\(e)".contains("out of KVM memory slots"), "\(e)")
        }
    }

    func testSizesInTheLog() {
        XCTAssertEqual(formatBytes(512 << 20), "512 MiB")
        XCTAssertEqual(formatBytes(8 << 30), "8 GiB")
        XCTAssertEqual(formatBytes(3 << 29), "1536 MiB")
        XCTAssertEqual(formatBytes(128 << 10), "128 KiB")
        XCTAssertEqual(formatBytes(100), "100 bytes")
    }

    func testPassthroughSetupErrorsExit69() {
        // Host-side problems with an assigned device are EX_UNAVAILABLE, like a host without KVM.
        XCTAssertEqual(VMMRunner.status(of: .passthrough("x")), ExitStatus.hostUnsupported)
        XCTAssertEqual(VMMRunner.status(of: .kernel("x")), ExitStatus.badConfig)
        XCTAssertEqual(VMMRunner.status(of: .setup("x")), ExitStatus.vmmError)
        XCTAssertEqual(VMMRunner.status(of: .hostUnsupported("x")), ExitStatus.hostUnsupported)
    }
}
