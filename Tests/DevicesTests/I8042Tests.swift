import Devices
import XCTest

private let DATA: UInt64 = 0    // port 0x60
private let STATUS: UInt64 = 4  // port 0x64 (read: status, write: command)

final class I8042Tests: XCTestCase {
    var sink: RecordingSink!
    var kbc: I8042!

    override func setUp() {
        sink = RecordingSink()
        kbc = I8042(events: sink)
    }

    func testLayout() {
        XCTAssertEqual(I8042.base, 0x60)
        XCTAssertEqual(I8042.length, 5)
    }

    func testIdleStatusHasNoData() {
        let st = kbc.readByte(STATUS)
        XCTAssertEqual(st & 0x01, 0, "OBF clear")
        XCTAssertEqual(st & 0x02, 0, "IBF clear: the guest never waits to write")
    }

    func testRebootKSendsReset() {
        kbc.writeByte(STATUS, 0xFE)
        XCTAssertEqual(sink.events, [.reset])
    }

    func testOtherPulseCommands() {
        kbc.writeByte(STATUS, 0xFF) // pulses nothing
        kbc.writeByte(STATUS, 0xF1) // pulses bits 1-3, not reset
        XCTAssertEqual(sink.events, [])
        kbc.writeByte(STATUS, 0xF0) // pulses bits 0-3, including reset
        XCTAssertEqual(sink.events, [.reset])
    }

    func testWriteOutputPortWithResetLow() {
        kbc.writeByte(STATUS, 0xD0)
        XCTAssertEqual(kbc.readByte(DATA), 0x03, "reset line high, A20 on")
        kbc.writeByte(STATUS, 0xD1)
        kbc.writeByte(DATA, 0xDF) // the A20-enable value: no reset
        XCTAssertEqual(sink.events, [])
        kbc.writeByte(STATUS, 0xD1)
        kbc.writeByte(DATA, 0xDE)
        XCTAssertEqual(sink.events, [.reset])
    }

    func testCommandByteReadWrite() {
        kbc.writeByte(STATUS, 0x20)
        XCTAssertEqual(kbc.readByte(STATUS) & 0x01, 0x01, "reply waiting")
        XCTAssertEqual(kbc.readByte(DATA), 0x45)
        XCTAssertEqual(kbc.readByte(STATUS) & 0x01, 0x00)
        kbc.writeByte(STATUS, 0x60)
        XCTAssertEqual(kbc.readByte(STATUS) & 0x08, 0x08, "last write was a command")
        kbc.writeByte(DATA, 0x74)
        XCTAssertEqual(kbc.readByte(STATUS) & 0x08, 0x00)
        kbc.writeByte(STATUS, 0x20)
        XCTAssertEqual(kbc.readByte(DATA), 0x74)
        XCTAssertEqual(sink.events, [])
    }

    func testEnableDisableCommandsEditTheCommandByte() {
        kbc.writeByte(STATUS, 0xAD)
        kbc.writeByte(STATUS, 0xA7)
        kbc.writeByte(STATUS, 0x20)
        XCTAssertEqual(kbc.readByte(DATA), 0x45 | 0x10 | 0x20)
        kbc.writeByte(STATUS, 0xAE)
        kbc.writeByte(STATUS, 0xA8)
        kbc.writeByte(STATUS, 0x20)
        XCTAssertEqual(kbc.readByte(DATA), 0x45)
    }

    func testSelfTestsAnswer() {
        kbc.writeByte(STATUS, 0xAA)
        XCTAssertEqual(kbc.readByte(DATA), 0x55)
        kbc.writeByte(STATUS, 0xAB)
        XCTAssertEqual(kbc.readByte(DATA), 0x00)
        kbc.writeByte(STATUS, 0xA9)
        XCTAssertEqual(kbc.readByte(DATA), 0x00)
    }

    func testRepliesQueueInOrderAndEmptyReadsRepeatTheLast() {
        kbc.writeByte(STATUS, 0xAA)
        kbc.writeByte(STATUS, 0x20)
        XCTAssertEqual(kbc.readByte(DATA), 0x55)
        XCTAssertEqual(kbc.readByte(DATA), 0x45)
        XCTAssertEqual(kbc.readByte(DATA), 0x45)
        XCTAssertEqual(kbc.readByte(STATUS) & 0x01, 0)
    }

    func testUnreadRepliesAreBounded() {
        for _ in 0..<10_000 { kbc.writeByte(STATUS, 0xAA) }
        var n = 0
        while kbc.readByte(STATUS) & 0x01 != 0 && n < 100_000 { _ = kbc.readByte(DATA); n += 1 }
        XCTAssertEqual(n, 16)
    }

    func testKeyboardAndAuxWritesGetNoAnswer() {
        kbc.writeByte(DATA, 0xFF) // keyboard reset: no keyboard
        kbc.writeByte(STATUS, 0xD4)
        kbc.writeByte(DATA, 0xF4) // to the mouse: none
        kbc.writeByte(STATUS, 0xD3)
        kbc.writeByte(DATA, 0x5A) // aux loopback: not echoed
        XCTAssertEqual(kbc.readByte(STATUS) & 0x01, 0)
        kbc.writeByte(STATUS, 0xD2)
        kbc.writeByte(DATA, 0x5A) // keyboard loopback is echoed
        XCTAssertEqual(kbc.readByte(DATA), 0x5A)
        XCTAssertEqual(sink.events, [])
    }

    func testAPendingCommandIsCancelledByAnotherCommand() {
        kbc.writeByte(STATUS, 0xD1)
        kbc.writeByte(STATUS, 0x20)
        kbc.writeByte(DATA, 0x00) // keyboard data now, not the output port
        XCTAssertEqual(sink.events, [])
    }

    func testUnusedPortsAndOddWidths() {
        for off: UInt64 in 1...3 {
            XCTAssertEqual(kbc.readByte(off), 0xFF)
            kbc.writeByte(off, 0xFE)
        }
        XCTAssertEqual(sink.events, [])
        for off: UInt64 in [0, 3, 4, 5, 0xFFFF_FFFF_FFFF_FFFE, 0xFFFF_FFFF_FFFF_FFFF] {
            for w in [0, 1, 2, 4, 8] {
                _ = kbc.read(off, width: w)
                kbc.write(off, [UInt8](repeating: 0x01, count: w))
            }
        }
        // A 2-byte write at 0x63 reaches 0x64 with its second byte.
        kbc.write(3, [0x00, 0xFE])
        XCTAssertEqual(sink.events, [.reset])
    }
}
