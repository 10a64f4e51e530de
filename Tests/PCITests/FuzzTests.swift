import Devices
import TestFakes
import XCTest
@testable import PCI

/// Random offsets, widths and values on every guest-facing entry point. The
/// test passes when nothing traps and the invariants hold afterwards.
final class FuzzTests: XCTestCase {
    func makeBus() throws -> (PCIRootBus, [TestDevice], RecordingRouter) {
        let router = RecordingRouter()
        let bus = PCIRootBus(windows: testWindows, msiRouter: router, intxLine: { RecordingLine(gsi: $0) })
        var devices: [TestDevice] = []
        var c = PCIConfigSpace.type0(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0x02_00_00, interruptPin: .intA)
        try c.setBar(0, size: 0x1000, kind: .memory32)
        try c.setBar(1, size: 0x20, kind: .io)
        try c.setBar(2, size: 0x4000, kind: .memory64, prefetchable: true)
        try c.setExpansionROM(size: 0x800)
        devices.append(try TestDevice(config: c, msix: MSIXConfiguration(vectors: 8, tableBar: 2, tableOffset: 0x2000,
                                                                        pbaBar: 2, pbaOffset: 0x3000),
                                      msi: MSIConfiguration()))
        var e = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 0x11, classCode: 0x01_08_02, extended: true)
        try e.setBar(4, size: 1 << 32, kind: .memory64)
        _ = try e.addExtendedCapability(id: 1, version: 1, bytes: [UInt8](repeating: 0, count: 16),
                                        writableMask: [UInt8](repeating: 0xFF, count: 16))
        devices.append(try TestDevice(config: e))
        for d in devices { try bus.attach(d) }
        return (bus, devices, router)
    }

    func width(_ rng: inout SplitMix64) -> Int {
        [0, 1, 1, 2, 2, 4, 4, 4, 3, 8, 16][Int(rng.next() % 11)]
    }

    func offset(_ rng: inout SplitMix64, _ limit: UInt64) -> UInt64 {
        switch rng.next() % 8 {
        case 0: return UInt64.max - rng.next() % 16
        case 1: return rng.next()
        default: return rng.next() % limit
        }
    }

    func testConfigSpaceNeverTraps() {
        var rng = SplitMix64(seed: 1)
        var c = PCIConfigSpace.type0(vendorID: 1, deviceID: 2, classCode: 3, interruptPin: .intA)
        XCTAssertNoThrow(try c.setBar(0, size: 0x1000, kind: .memory64))
        for _ in 0..<20_000 {
            let off = Int(truncatingIfNeeded: offset(&rng, 300))
            var b = (0..<width(&rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if rng.next() % 2 == 0 {
                b.withUnsafeBytes { c.write(offset: off, data: $0) }
            } else {
                b.withUnsafeMutableBytes { c.read(offset: off, data: $0) }
            }
        }
        XCTAssertEqual(c.vendorID, 1)
        XCTAssertEqual(c.deviceID, 2)
        XCTAssertEqual(c.command & ~PCICommand.writable, 0)
    }

    func testBusAccessesNeverTrap() throws {
        let (bus, devices, _) = try makeBus()
        let mmio = Bus(), pio = Bus()
        try bus.install(mmioBus: mmio, pioBus: pio)
        var rng = SplitMix64(seed: 0x5EED)
        let targets: [(BusDevice, UInt64)] = [
            (bus.configIO, 8), (bus.configMMIO, testWindows.ecam.size), (bus.mmio32Router, testWindows.mmio32.size),
            (bus.mmio64Router, testWindows.mmio64.size), (bus.ioRouter, testWindows.io.size),
        ]
        for round in 0..<40_000 {
            let (target, size) = targets[Int(rng.next() % UInt64(targets.count))]
            var off = offset(&rng, size)
            // Aim a third of the ECAM accesses at the attached devices.
            if target === bus.configMMIO, rng.next() % 3 == 0 {
                off = ecam(dev: rng.next() % 3, reg: rng.next() % 0x1000)
            }
            if target === bus.configIO, rng.next() % 4 == 0 {
                write(bus.configIO, 0, cf8(dev: UInt32(rng.next() % 3), reg: UInt32(rng.next() % 256)), 4)
            }
            // Aim a quarter of the window accesses at the assigned BARs.
            if target === bus.mmio64Router, rng.next() % 4 == 0 { off = rng.next() % 0x1_0001_0000 }
            if target === bus.mmio32Router, rng.next() % 4 == 0 { off = rng.next() % 0x4000 }
            var b = (0..<width(&rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if rng.next() % 2 == 0 {
                b.withUnsafeBytes { target.write(offset: off, data: $0) }
            } else {
                b.withUnsafeMutableBytes { target.read(offset: off, data: $0) }
            }
            if round % 1000 == 0 {
                devices[0].signalMSIX(vector: Int(rng.next() % 10))
                devices[0].msi?.trigger()
                devices[0].setINTx(rng.next() % 2 == 0)
            }
        }
        // Identity registers survived.
        XCTAssertEqual(read(bus.configMMIO, ecam(dev: 0, reg: 0), 4), 0x0D57_8086)
        XCTAssertEqual(read(bus.configMMIO, ecam(dev: 1, reg: 0), 4), 0x1041_1AF4)
        XCTAssertEqual(read(bus.configMMIO, ecam(dev: 2, reg: 0), 4), 0x0011_1234)
        XCTAssertEqual(read(bus.configMMIO, ecam(dev: 2, reg: 0x100), 2), 0x0001)
        // The router's view matches the devices' registers.
        for (i, d) in devices.enumerated() {
            let cmd = UInt16(cfgRead(d, 4, 2))
            let expected = d.barRegions.filter { cmd & ($0.kind == .io ? 1 : 2) != 0 }
            XCTAssertEqual(bus.decodedBars(slot: i + 1), expected)
        }
    }

    func testDirectDeviceAccessesNeverTrap() throws {
        let (_, devices, _) = try makeBus()
        var rng = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            let d = devices[Int(rng.next() % 2)]
            let index = Int(truncatingIfNeeded: Int64(bitPattern: rng.next() % 10) - 2)
            let off = offset(&rng, 0x5000)
            var b = (0..<width(&rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            switch rng.next() % 4 {
            case 0: b.withUnsafeBytes { d.writeBar(index, offset: off, data: $0) }
            case 1: b.withUnsafeMutableBytes { d.readBar(index, offset: off, data: $0) }
            case 2: b.withUnsafeBytes { d.writeConfig(offset: Int(truncatingIfNeeded: off), data: $0) }
            default: b.withUnsafeMutableBytes { d.readConfig(offset: Int(truncatingIfNeeded: off), data: $0) }
            }
        }
        XCTAssertEqual(cfgRead(devices[0], 0, 4), 0x1041_1AF4)
    }
}
