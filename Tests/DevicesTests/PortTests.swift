import Devices
import TestFakes
import XCTest

final class PortTests: XCTestCase {
    func testBootComplete() {
        let sink = RecordingSink()
        let port = BootCompletePort(events: sink)
        XCTAssertEqual(BootCompletePort.port, 0x3F0)
        port.writeByte(0, 122)
        port.writeByte(0, 0)
        port.write(0, [123, 0]) // a wider write does not count
        XCTAssertEqual(sink.events, [])
        port.writeByte(0, 123)
        XCTAssertEqual(sink.events, [.bootComplete])
        XCTAssertEqual(port.read(0, width: 2), [0xFF, 0xFF])
    }

    func testDebugExitSendsTheByteAsVerdict() {
        let sink = RecordingSink()
        let port = DebugExitPort(events: sink)
        XCTAssertEqual(DebugExitPort.port, 0x501)
        port.writeByte(0, 0)
        port.writeByte(0, 1)
        port.writeByte(0, 255)
        XCTAssertEqual(sink.events, [.guestVerdict(0), .guestVerdict(1), .guestVerdict(255)])
        port.write(0, [7, 0])
        port.write(0, [])
        port.writeByte(1, 7)
        XCTAssertEqual(sink.events.count, 3, "only one-byte writes at the port count")
        XCTAssertEqual(port.readByte(0), 0xFF)
    }

    func testPVPanic() {
        let sink = RecordingSink()
        let port = PVPanicPort(events: sink)
        XCTAssertEqual(PVPanicPort.port, 0x505)
        XCTAssertEqual(port.readByte(0), 0x03, "PANICKED | CRASH_LOADED supported")
        XCTAssertEqual(port.read(0, width: 2), [0x03, 0xFF])
        port.writeByte(0, 0x02) // crash kernel loaded: not a panic (yet)
        port.writeByte(0, 0x00)
        XCTAssertEqual(sink.events, [])
        port.writeByte(0, 0x01)
        port.writeByte(0, 0x03)
        XCTAssertEqual(sink.events, [.guestPanic, .guestPanic])
        port.write(0, [0x01, 0x01])
        XCTAssertEqual(sink.events.count, 2)
    }

    func testIgnoredPortsAbsorbWritesAndReadOpenBus() {
        let post = IgnoredPorts()
        XCTAssertEqual(IgnoredPorts.postCodePort, 0x80)
        post.write(0, [1, 2, 3, 4])
        XCTAssertEqual(post.read(0, width: 4), [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(IgnoredPorts(readValue: 0).read(5, width: 2), [0, 0])
        XCTAssertEqual(post.read(0xFFFF_FFFF_FFFF_FFFF, width: 1), [0xFF])
    }

    func testDevicesOnABus() throws {
        let sink = RecordingSink()
        let bus = Bus()
        try bus.insert(IgnoredPorts(), base: IgnoredPorts.postCodePort, length: 1)
        try bus.insert(I8042(events: sink), base: I8042.base, length: I8042.length)
        try bus.insert(BootCompletePort(events: sink), base: BootCompletePort.port, length: BootCompletePort.length)
        try bus.insert(DebugExitPort(events: sink), base: DebugExitPort.port, length: DebugExitPort.length)
        try bus.insert(PVPanicPort(events: sink), base: PVPanicPort.port, length: PVPanicPort.length)
        let uart = Serial16550(interrupt: RecordingLine(), console: RecordingConsole())
        try bus.insert(uart, base: Serial16550.com1Base, length: Serial16550.registerCount)

        func out(_ port: UInt64, _ v: UInt8) -> Bool { [v].withUnsafeBytes { bus.write(port, data: $0) } }
        XCTAssertTrue(out(0x80, 0x12))
        XCTAssertTrue(out(0x3F0, 123))
        XCTAssertTrue(out(0x501, 42))
        XCTAssertTrue(out(0x505, 1))
        XCTAssertTrue(out(0x64, 0xFE))
        XCTAssertTrue(out(0x3FF, 0x99)) // COM1 scratch
        XCTAssertFalse(out(0x2F8, 0)) // nothing there
        XCTAssertEqual(sink.events, [.bootComplete, .guestVerdict(42), .guestPanic, .reset])
        XCTAssertEqual(uart.readByte(7), 0x99)
    }
}
