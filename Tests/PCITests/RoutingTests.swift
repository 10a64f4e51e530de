import Bits
import Devices
import XCTest
@testable import PCI

final class RoutingTests: XCTestCase {
    var bus: PCIRootBus!
    var a: TestDevice!
    var b: TestDevice!
    let movesLog = CallbackLog<String>()
    var moves: [String] { movesLog.all }

    override func setUpWithError() throws {
        bus = PCIRootBus(windows: testWindows)
        bus.onBarMoved = { [movesLog] addr, index, old, new in
            movesLog.append("\(addr) \(index) \(old.map { hex($0) } ?? "nil")->\(new.map { hex($0) } ?? "nil")")
        }
        var c = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 1, classCode: 0xFF_00_00)
        try c.setBar(0, size: 0x1000, kind: .memory32)
        try c.setBar(1, size: 0x10, kind: .io)
        try c.setBar(2, size: 0x4000, kind: .memory64, prefetchable: true)
        a = try TestDevice(config: c)
        var d = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 2, classCode: 0xFF_00_00)
        try d.setBar(0, size: 0x2000, kind: .memory32)
        b = try TestDevice(config: d)
        try bus.attach(a)
        try bus.attach(b)
    }

    func testAttachReportsInitialPlacement() {
        XCTAssertEqual(moves, [
            "0000:00:01.0 0 nil->0xc0000000",
            "0000:00:01.0 1 nil->0xc000",
            "0000:00:01.0 2 nil->0x100000000",
            "0000:00:02.0 0 nil->0xc0002000",
        ])
        XCTAssertEqual(bus.decodedBars(slot: 1).map { $0.index }, [0, 1, 2])
    }

    func testDispatchToDecodingBars() {
        write(bus.mmio32Router, 0x10, 0xDEAD_BEEF, 4)
        XCTAssertEqual(a.storage[0]?[0x10..<0x14].map { $0 }, [0xEF, 0xBE, 0xAD, 0xDE])
        XCTAssertEqual(read(bus.mmio32Router, 0x10, 4), 0xDEAD_BEEF)
        write(bus.mmio32Router, 0x2004, 0x55, 1)
        XCTAssertEqual(b.storage[0]?[4], 0x55)
        write(bus.mmio64Router, 0x3FF8, 0x0102_0304_0506_0708, 8)
        XCTAssertEqual(read(bus.mmio64Router, 0x3FF8, 8), 0x0102_0304_0506_0708)
        XCTAssertEqual(a.barLog.last?.index, 2)
        XCTAssertEqual(a.barLog.last?.offset, 0x3FF8)
        write(bus.ioRouter, 0x0E, 0xABCD, 2)
        XCTAssertEqual(read(bus.ioRouter, 0x0E, 2), 0xABCD)
        XCTAssertEqual(a.barLog.last?.index, 1)
        // Nothing decodes: a hole between BARs, a straddling access, past the last BAR.
        let logged = a.barLog.count + b.barLog.count
        XCTAssertEqual(read(bus.mmio32Router, 0x1000, 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(bus.mmio32Router, 0xFFE, 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(bus.mmio32Router, 0x1FFF_FFFC, 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(bus.ioRouter, 0x10, 1), 0xFF)
        XCTAssertEqual(read(bus.mmio64Router, 0x4000, 4), 0xFFFF_FFFF)
        write(bus.mmio32Router, 0x1000, 0, 4)
        XCTAssertEqual(a.barLog.count + b.barLog.count, logged)
    }

    func testRouterFollowsBarMove() {
        let io = bus.configIO
        // The guest moves BAR 0 of 00:01.0 from 0xC0000000 to 0xC0100000 the
        // way Linux does: decode off, write, decode on.
        write(io, 0, cf8(dev: 1, reg: 0x04), 4)
        write(io, 4, 0x0001, 2)
        write(io, 0, cf8(dev: 1, reg: 0x10), 4)
        write(io, 4, 0xC010_0000, 4)
        write(io, 0, cf8(dev: 1, reg: 0x04), 4)
        write(io, 4, 0x0003, 2)
        XCTAssertEqual(Array(moves.dropFirst(4)), [
            "0000:00:01.0 0 0xc0000000->nil",
            "0000:00:01.0 2 0x100000000->nil",
            "0000:00:01.0 0 nil->0xc0100000",
            "0000:00:01.0 2 nil->0x100000000",
        ])
        write(bus.mmio32Router, 0x10_0008, 0x77, 1)
        XCTAssertEqual(a.barLog.last?.index, 0)
        XCTAssertEqual(a.barLog.last?.offset, 8)
        XCTAssertEqual(read(bus.mmio32Router, 0x8, 1), 0xFF, "old address no longer decodes")
    }

    func testMoveWhileDecodingAndOverlap() {
        // Move B's BAR onto A's, with decoding left on (hostile or careless).
        write(bus.configMMIO, ecam(dev: 2, reg: 0x10), 0xC000_0000, 4)
        XCTAssertEqual(moves.last, "0000:00:02.0 0 0xc0002000->0xc0000000")
        write(bus.mmio32Router, 0x0, 0x11, 1)
        XCTAssertEqual(a.storage[0]?[0], 0x11, "the lower slot wins an overlap")
        // Byte-wise 64-bit BAR update: each step is reported.
        write(bus.configMMIO, ecam(dev: 1, reg: 0x1C), 0x2, 1)
        XCTAssertEqual(moves.last, "0000:00:01.0 2 0x100000000->0x200000000")
        write(bus.mmio64Router, 0x1_0000_0000, 0x22, 1)
        XCTAssertEqual(a.storage[2]?[0], 0x22)
    }

    func testSizingIsReportedAndRestored() {
        let m = bus.configMMIO
        // Linux sizes with decoding off; with it on, the sizing value decodes
        // briefly (outside every window) and the restore brings it back.
        write(m, ecam(dev: 2, reg: 0x10), 0xFFFF_FFFF, 4)
        XCTAssertEqual(read(m, ecam(dev: 2, reg: 0x10), 4), 0xFFFF_E000)
        write(m, ecam(dev: 2, reg: 0x10), 0xC000_2000, 4)
        XCTAssertEqual(Array(moves.dropFirst(4)), [
            "0000:00:02.0 0 0xc0002000->0xffffe000",
            "0000:00:02.0 0 0xffffe000->0xc0002000",
        ])
        XCTAssertEqual(read(bus.mmio32Router, 0x2000, 4), 0)
    }

    func testROMDecodesOnlyWhenEnabled() throws {
        var c = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 3, classCode: 0xFF_00_00)
        try c.setExpansionROM(size: 0x800)
        let r = try TestDevice(config: c)
        XCTAssertEqual(try bus.attach(r), PCIAddress(device: 3))
        XCTAssertEqual(cfgRead(r, 0x30, 4), 0xC000_1000, "first free page, between A's and B's BARs")
        XCTAssertEqual(read(bus.mmio32Router, 0x1000, 4), 0xFFFF_FFFF)
        write(bus.configMMIO, ecam(dev: 3, reg: 0x30), 0xC000_1001, 4)
        XCTAssertEqual(moves.last, "0000:00:03.0 6 nil->0xc0001000")
        r.storage[6] = [1, 2, 3, 4]
        XCTAssertEqual(read(bus.mmio32Router, 0x1000, 4), 0x0403_0201)
    }
}
