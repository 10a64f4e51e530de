import TestFakes
import XCTest
@testable import PCI

final class MSITests: XCTestCase {
    func make(perVectorMasking: Bool) throws -> (TestDevice, RecordingRouter, PCIAddress, Int) {
        let router = RecordingRouter()
        let bus = PCIRootBus(windows: testWindows, msiRouter: router)
        let c = PCIConfigSpace.type0(vendorID: 0x8086, deviceID: 0x10D3, classCode: 0x02_00_00, interruptPin: .intA)
        let dev = try TestDevice(config: c, msi: MSIConfiguration(perVectorMasking: perVectorMasking))
        let addr = try bus.attach(dev, slot: 4)
        return (dev, router, addr, try XCTUnwrap(dev.msi?.offset))
    }

    func testCapabilityBytesWithMasking() throws {
        let (dev, _, _, cap) = try make(perVectorMasking: true)
        XCTAssertEqual(cap, 0x40)
        var b = [UInt8](repeating: 0, count: 24)
        b.withUnsafeMutableBytes { dev.readConfig(offset: cap, data: $0) }
        XCTAssertEqual(b, [0x05, 0x00, 0x80, 0x01] + [UInt8](repeating: 0, count: 20))
        for off in stride(from: 0, to: 24, by: 4) { cfgWrite(dev, cap + off, 0xFFFF_FFFF, 4) }
        b.withUnsafeMutableBytes { dev.readConfig(offset: cap, data: $0) }
        XCTAssertEqual(b, [0x05, 0x00, 0xF1, 0x01,   // enable + MME writable, 64-bit and mask-capable read-only
                           0xFC, 0xFF, 0xFF, 0xFF,   // address bits 1:0 read 0
                           0xFF, 0xFF, 0xFF, 0xFF,
                           0xFF, 0xFF, 0x00, 0x00,   // 16-bit data
                           0x01, 0x00, 0x00, 0x00,   // one mask bit
                           0x00, 0x00, 0x00, 0x00])  // pending, read-only
    }

    func testCapabilityBytesWithoutMasking() throws {
        let (dev, _, _, cap) = try make(perVectorMasking: false)
        XCTAssertEqual(cfgRead(dev, cap, 4), 0x0080_0005)
        cfgWrite(dev, cap + 0x10, 0xFFFF_FFFF, 4)
        XCTAssertEqual(cfgRead(dev, cap + 0x10, 4), 0, "no mask register: the capability ends at 16 bytes")
        XCTAssertEqual(cfgRead(dev, cap + 0x0C, 4), 0, "data and the unimplemented extended data read 0")
    }

    func testDeliveryMaskAndPending() throws {
        let (dev, router, addr, cap) = try make(perVectorMasking: true)
        let msi = try XCTUnwrap(dev.msi)
        XCTAssertFalse(msi.trigger(), "disabled: the caller falls back to INTx")
        XCTAssertEqual(router.take(), [])
        cfgWrite(dev, cap + 4, 0xFEE0_0000, 4)
        cfgWrite(dev, cap + 8, 0, 4)
        cfgWrite(dev, cap + 12, 0x4025, 2)
        cfgWrite(dev, cap + 16, 1, 4) // mask before enabling
        cfgWrite(dev, cap + 2, 0x0001, 2)
        XCTAssertEqual(router.take(), [])
        XCTAssertTrue(msi.trigger())
        XCTAssertEqual(router.take(), [])
        XCTAssertEqual(cfgRead(dev, cap + 20, 4), 1, "pending bit visible in config space")
        cfgWrite(dev, cap + 16, 0, 4)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x4025)), .signal(addr, 0)])
        XCTAssertEqual(cfgRead(dev, cap + 20, 4), 0)
        XCTAssertTrue(msi.trigger())
        XCTAssertEqual(router.take(), [.signal(addr, 0)])
        cfgWrite(dev, cap + 2, 0x0000, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 0, nil)])
        XCTAssertEqual(msi.message, MSIMessage(address: 0xFEE0_0000, data: 0x4025))
    }

    func testUnmaskableMSI() throws {
        let (dev, router, addr, cap) = try make(perVectorMasking: false)
        cfgWrite(dev, cap + 4, 0x0000_0001_FEE0_1003, 4) // bits 1:0 dropped
        cfgWrite(dev, cap + 12, 0x0000_0031, 4)         // upper 16 bits read-only
        cfgWrite(dev, cap, 0x0001_0000, 4)              // enable via a DWORD write at the capability start
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_1000, data: 0x31))])
        XCTAssertTrue(dev.msi?.trigger() ?? false)
        XCTAssertEqual(router.take(), [.signal(addr, 0)])
    }
}

final class INTxTests: XCTestCase {
    func testSwizzleAndPRT() {
        let bus = PCIRootBus(windows: testWindows)
        XCTAssertEqual(bus.intxGSI(slot: 0, pin: .intA), 16)
        XCTAssertEqual(bus.intxGSI(slot: 1, pin: .intA), 17)
        XCTAssertEqual(bus.intxGSI(slot: 3, pin: .intA), 19)
        XCTAssertEqual(bus.intxGSI(slot: 4, pin: .intA), 16)
        XCTAssertEqual(bus.intxGSI(slot: 1, pin: .intD), 16)
        XCTAssertEqual(bus.intxGSI(slot: 31, pin: .intC), 16 + (31 + 2) % 4)
        let prt = bus.prtEntries
        XCTAssertEqual(prt.count, 124)
        XCTAssertEqual(prt.first, PCIRoutingEntry(slot: 1, pin: .intA, gsi: 17))
        XCTAssertEqual(prt.first?.acpiAddress, 0x0001_FFFF)
        XCTAssertEqual(prt.first?.acpiPin, 0)
        XCTAssertEqual(prt.last, PCIRoutingEntry(slot: 31, pin: .intD, gsi: 18))
        XCTAssertEqual(prt.last?.acpiAddress, 0x001F_FFFF)
        XCTAssertEqual(prt.last?.acpiPin, 3)
        XCTAssertTrue(prt.allSatisfy { (16...19).contains($0.gsi) })
    }

    func testSharedLineIsWiredOR() throws {
        let created = CallbackLog<RecordingLine>()
        let bus = PCIRootBus(windows: testWindows, intxLine: { gsi in
            let l = RecordingLine(gsi: gsi)
            created.append(l)
            return l
        })
        let c = PCIConfigSpace.type0(vendorID: 1, deviceID: 1, classCode: 0, interruptPin: .intA)
        let a = try TestDevice(config: c), b = try TestDevice(config: c), other = try TestDevice(config: c)
        try bus.attach(a, slot: 1)
        try bus.attach(b, slot: 5) // 16 + 5 % 4 = 17, shared with slot 1
        try bus.attach(other, slot: 2)
        XCTAssertEqual(a.attachContext?.intxGSI, 17)
        XCTAssertEqual(b.attachContext?.intxGSI, 17)
        XCTAssertEqual(other.attachContext?.intxGSI, 18)
        XCTAssertEqual(created.all.map(\.gsi).sorted(), [17, 18], "one line per GSI in use")
        let lines = Dictionary(uniqueKeysWithValues: created.all.map { ($0.gsi, $0) })
        let l17 = try XCTUnwrap(lines[17])
        a.setINTx(true)
        b.setINTx(true)
        a.setINTx(false)
        XCTAssertEqual(l17.levels, [true], "still high while b asserts")
        b.setINTx(false)
        XCTAssertEqual(l17.levels, [true, false])
        XCTAssertEqual(lines[18]?.levels, [])
    }

    func testInterruptDisableAndStatus() throws {
        let created = CallbackLog<RecordingLine>()
        let bus = PCIRootBus(windows: testWindows, intxLine: { gsi in
            let l = RecordingLine(gsi: gsi)
            created.append(l)
            return l
        })
        let dev = try TestDevice(config: .type0(vendorID: 1, deviceID: 1, classCode: 0, interruptPin: .intB))
        try bus.attach(dev, slot: 7)
        XCTAssertEqual(created.all.count, 1)
        let line = created.all.last
        XCTAssertEqual(line?.gsi, 16 + (7 + 1) % 4)
        XCTAssertEqual(cfgRead(dev, 0x3C, 2), 0x0210)
        dev.setINTx(true)
        XCTAssertEqual(cfgRead(dev, 0x06, 2) & 0x08, 0x08, "PCI_STATUS_INTERRUPT")
        XCTAssertEqual(line?.levels, [true])
        write(bus.configMMIO, ecam(dev: 7, reg: 0x05), 0x04, 1) // INTX_DISABLE
        XCTAssertEqual(line?.levels, [true, false])
        XCTAssertEqual(cfgRead(dev, 0x06, 2) & 0x08, 0x08, "status still shows the device's request")
        dev.setINTx(false)
        dev.setINTx(true)
        XCTAssertEqual(line?.levels, [true, false])
        write(bus.configMMIO, ecam(dev: 7, reg: 0x05), 0x00, 1)
        XCTAssertEqual(line?.levels, [true, false, true])
        dev.setINTx(false)
        XCTAssertEqual(line?.levels, [true, false, true, false])
        XCTAssertEqual(cfgRead(dev, 0x06, 2) & 0x08, 0)
    }
}
