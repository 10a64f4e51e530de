import XCTest
@testable import PCI

final class MSIXTests: XCTestCase {
    var bus: PCIRootBus!
    var router: RecordingRouter!
    var dev: TestDevice!
    var addr: PCIAddress!
    var cap = 0

    let layout = MSIXConfiguration(vectors: 3, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000)

    override func setUpWithError() throws {
        router = RecordingRouter()
        bus = PCIRootBus(windows: testWindows, msiRouter: router)
        var c = PCIConfigSpace.type0(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0x02_00_00, interruptPin: .intA)
        try c.setBar(0, size: 0x4000, kind: .memory64, prefetchable: true)
        _ = try c.addCapability(id: 0x09, bytes: [0, 0, 4, 0]) // a vendor cap first
        dev = try TestDevice(config: c, msix: layout)
        addr = try bus.attach(dev)
        cap = try XCTUnwrap(dev.msixCapabilityOffset)
        XCTAssertEqual(router.take(), [], "nothing configured before the guest enables MSI-X")
    }

    func entryOffset(_ v: UInt64, _ field: UInt64) -> UInt64 { 0x2000 + 16 * v + field }

    func program(_ v: UInt64, address: UInt64, data: UInt32) {
        barWrite(dev, 0, entryOffset(v, 0), address & 0xFFFF_FFFF, 4)
        barWrite(dev, 0, entryOffset(v, 4), address >> 32, 4)
        barWrite(dev, 0, entryOffset(v, 8), UInt64(data), 4)
    }

    func setMask(_ v: UInt64, _ masked: Bool) { barWrite(dev, 0, entryOffset(v, 12), masked ? 1 : 0, 4) }
    func control(_ value: UInt16) { cfgWrite(dev, cap + 2, UInt64(value), 2) }

    func testCapabilityBytes() {
        XCTAssertEqual(cap, 0x44)
        var b = [UInt8](repeating: 0, count: 12)
        b.withUnsafeMutableBytes { dev.readConfig(offset: cap, data: $0) }
        XCTAssertEqual(b, [0x11, 0x00, 0x02, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00])
        XCTAssertEqual(cfgRead(dev, 0x41, 1), 0x44, "vendor cap links to MSI-X")
        // Only Enable and Function Mask are writable.
        cfgWrite(dev, cap, 0xFFFF_FFFF, 4)
        cfgWrite(dev, cap + 4, 0xFFFF_FFFF, 4)
        cfgWrite(dev, cap + 8, 0xFFFF_FFFF, 4)
        XCTAssertEqual(cfgRead(dev, cap, 4), 0xC002_0011)
        XCTAssertEqual(cfgRead(dev, cap + 4, 4), 0x0000_2000)
        XCTAssertEqual(cfgRead(dev, cap + 8, 4), 0x0000_3000)
        XCTAssertTrue(dev.msix?.isEnabled ?? false)
        XCTAssertTrue(dev.msix?.isFunctionMasked ?? false)
    }

    func testTableResetStateAndLayout() {
        // Every entry resets masked: Vector Control reads 1, the rest 0.
        for v: UInt64 in 0..<3 {
            XCTAssertEqual(barRead(dev, 0, entryOffset(v, 0), 8), 0)
            XCTAssertEqual(barRead(dev, 0, entryOffset(v, 8), 8), 0x0000_0001_0000_0000)
        }
        program(1, address: 0x1_FEE0_1000, data: 0x4041)
        barWrite(dev, 0, entryOffset(1, 12), 0xFFFF_FFFE, 4) // reserved bits stay 0, unmask
        XCTAssertEqual(barRead(dev, 0, entryOffset(1, 0), 8), 0x0000_0001_FEE0_1000)
        XCTAssertEqual(barRead(dev, 0, entryOffset(1, 8), 4), 0x4041)
        XCTAssertEqual(barRead(dev, 0, entryOffset(1, 12), 4), 0)
        XCTAssertEqual(dev.msix?.entry(1), MSIXEntry(message: MSIMessage(address: 0x1_FEE0_1000, data: 0x4041), masked: false))
        XCTAssertNil(dev.msix?.entry(3))
        // Byte writes and a QWORD write of address lo/hi.
        barWrite(dev, 0, entryOffset(2, 0), 0x0000_0000_FEE0_2000, 8)
        barWrite(dev, 0, entryOffset(2, 8), 0x99, 1)
        XCTAssertEqual(dev.msix?.entry(2)?.message, MSIMessage(address: 0xFEE0_2000, data: 0x99))
        // Non-table offsets in BAR 0 still reach the device.
        barWrite(dev, 0, 0x10, 0xAB, 1)
        XCTAssertEqual(dev.storage[0]?[0x10], 0xAB)
        XCTAssertEqual(barRead(dev, 0, 0x2030, 4), 0, "past the last entry (3 vectors end at 0x2030)")
    }

    func testMaskPendingUnmaskDelivery() throws {
        let t = try XCTUnwrap(dev.msix)
        program(0, address: 0xFEE0_0000, data: 0x30)
        control(0x8000) // enable, entries still masked
        XCTAssertEqual(router.take(), [])
        t.trigger(vector: 0)
        XCTAssertEqual(router.take(), [], "masked vector is not delivered")
        XCTAssertTrue(t.isPending(0))
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0x1, "PBA bit 0")
        setMask(0, false)
        XCTAssertEqual(router.take(), [
            .configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x30)),
            .signal(addr, 0),
        ], "configured, then the pending interrupt delivered")
        XCTAssertFalse(t.isPending(0))
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0)
        t.trigger(vector: 0)
        XCTAssertEqual(router.take(), [.signal(addr, 0)])
        // Masking reconfigures to nil; a trigger while masked is held.
        setMask(0, true)
        XCTAssertEqual(router.take(), [.configure(addr, 0, nil)])
        t.trigger(vector: 0)
        t.trigger(vector: 0)
        XCTAssertEqual(router.take(), [])
        setMask(0, false)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x30)), .signal(addr, 0)],
                       "two triggers while masked: one pending bit, one delivery")
        // Rewriting the same mask value reports nothing.
        setMask(0, false)
        XCTAssertEqual(router.take(), [])
    }

    func testFunctionMask() throws {
        let t = try XCTUnwrap(dev.msix)
        program(0, address: 0xFEE0_0000, data: 0x30)
        program(2, address: 0xFEE0_0000, data: 0x32)
        setMask(0, false)
        setMask(2, false)
        control(0xC000) // enable + function mask
        XCTAssertEqual(router.take(), [])
        t.trigger(vector: 2)
        t.trigger(vector: 1) // vector 1 is masked itself
        XCTAssertEqual(router.take(), [])
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0b110)
        control(0x8000) // function unmasked
        XCTAssertEqual(router.take(), [
            .configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x30)),
            .configure(addr, 2, MSIMessage(address: 0xFEE0_0000, data: 0x32)),
            .signal(addr, 2),
        ])
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0b010, "vector 1 still pending behind its own mask")
        control(0xC000)
        XCTAssertEqual(router.take(), [.configure(addr, 0, nil), .configure(addr, 2, nil)])
    }

    func testEnableBit() throws {
        let t = try XCTUnwrap(dev.msix)
        program(0, address: 0xFEE0_0000, data: 0x30)
        setMask(0, false)
        XCTAssertEqual(router.take(), [], "unmasked but MSI-X disabled")
        t.trigger(vector: 0)
        XCTAssertEqual(router.take(), [])
        XCTAssertTrue(t.isPending(0))
        // Enable through a byte write to the high byte of Message Control.
        cfgWrite(dev, cap + 3, 0x80, 1)
        XCTAssertTrue(t.isEnabled)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x30)), .signal(addr, 0)])
        // A change of address while enabled and unmasked is re-reported.
        barWrite(dev, 0, entryOffset(0, 8), 0x31, 4)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x31))])
        // Disable.
        cfgWrite(dev, cap + 2, 0x0000, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 0, nil)])
        XCTAssertFalse(t.isEnabled)
        // Out-of-range vectors are ignored.
        t.trigger(vector: 3)
        t.trigger(vector: -1)
        XCTAssertEqual(router.take(), [])
    }

    func testPBAIsReadOnly() throws {
        let t = try XCTUnwrap(dev.msix)
        t.trigger(vector: 1)
        barWrite(dev, 0, 0x3000, 0, 8)
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0b10)
        XCTAssertEqual(barRead(dev, 0, 0x3000, 1), 0b10)
        XCTAssertEqual(barRead(dev, 0, 0x3001, 2), 0)
    }

    func testThroughTheBus() throws {
        // The guest programs the table through the 64-bit window and enables
        // MSI-X through ECAM, as Linux does.
        let bar = try XCTUnwrap(dev.barRegions.first)
        let off = bar.address - testWindows.mmio64.base
        write(bus.mmio64Router, off + 0x2000, 0xFEE0_0000, 4)
        write(bus.mmio64Router, off + 0x2008, 0x41, 4)
        write(bus.mmio64Router, off + 0x200C, 0, 4)
        write(bus.configMMIO, ecam(dev: UInt64(addr.device), reg: UInt64(cap + 2)), 0x8002, 2)
        dev.signalMSIX(vector: 0)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_0000, data: 0x41)), .signal(addr, 0)])
        XCTAssertEqual(read(bus.mmio64Router, off + 0x3000, 8), 0)
    }

    func testLayoutValidation() {
        let c = { () -> PCIConfigSpace in
            var c = PCIConfigSpace.type0(vendorID: 1, deviceID: 1, classCode: 0)
            try? c.setBar(0, size: 0x1000, kind: .memory32)
            try? c.setBar(1, size: 0x10, kind: .io)
            return c
        }()
        let bad: [MSIXConfiguration] = [
            MSIXConfiguration(vectors: 0, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 2049, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 4, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 4, tableBar: 1, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 4, tableBar: 2, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 0xFF8, pbaBar: 0, pbaOffset: 0x800),
            MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x38),
            MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0xFFFF_FFF8),
        ]
        for m in bad {
            XCTAssertThrowsError(try TestDevice(config: c, msix: m), "\(m)")
        }
        XCTAssertNoThrow(try TestDevice(config: c, msix: MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 0,
                                                                          pbaBar: 0, pbaOffset: 0x40)))
        XCTAssertEqual(MSIXConfiguration(vectors: 65, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0).pbaSize, 16)
    }
}
