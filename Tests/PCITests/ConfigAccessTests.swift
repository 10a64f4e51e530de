import Devices
import XCTest
@testable import PCI

final class ConfigAccessTests: XCTestCase {
    var bus: PCIRootBus!
    var dev: TestDevice!

    override func setUp() {
        bus = PCIRootBus(windows: testWindows)
        var c = PCIConfigSpace.type0(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0x02_00_00, revision: 0x01,
                                     subsystemVendorID: 0x1AF4, subsystemID: 0x0001, interruptPin: .intA)
        XCTAssertNoThrow(try c.setBar(0, size: 0x1000, kind: .memory32))
        dev = try? TestDevice(config: c)
        XCTAssertEqual(try bus.attach(dev), PCIAddress(device: 1))
    }

    func testConfigAddressLatchAndReadBack() {
        let io = bus.configIO
        XCTAssertEqual(read(io, 0, 4), 0)
        write(io, 0, 0x8000_0000, 4)
        XCTAssertEqual(read(io, 0, 4), 0x8000_0000, "Linux pci_check_type1 expects this read-back")
        write(io, 0, 0xFFFF_FFFF, 4)
        XCTAssertEqual(read(io, 0, 4), 0x80FF_FFFC, "reserved bits 30:24 and 1:0 read 0")
        // Narrow accesses to 0xCF8-0xCFB are not CONFIG_ADDRESS.
        write(io, 0, 0x12, 1)
        write(io, 3, 0x00, 1)
        write(io, 1, 0x00, 2)
        XCTAssertEqual(read(io, 0, 4), 0x80FF_FFFC)
        XCTAssertEqual(read(io, 0, 2), 0xFFFF)
        XCTAssertEqual(read(io, 2, 1), 0xFF)
        XCTAssertEqual(read(io, 1, 4), 0xFFFF_FFFF)
    }

    func testConfigDataAtEachByteAndWordOffset() {
        let io = bus.configIO
        // Host bridge 00.0: 8086:0D57, class 060000.
        write(io, 0, cf8(dev: 0, reg: 0x00), 4)
        XCTAssertEqual(read(io, 4, 4), 0x0D57_8086)
        XCTAssertEqual(read(io, 4, 1), 0x86)
        XCTAssertEqual(read(io, 5, 1), 0x80)
        XCTAssertEqual(read(io, 6, 1), 0x57)
        XCTAssertEqual(read(io, 7, 1), 0x0D)
        XCTAssertEqual(read(io, 4, 2), 0x8086)
        XCTAssertEqual(read(io, 5, 2), 0x5780)
        XCTAssertEqual(read(io, 6, 2), 0x0D57)
        write(io, 0, cf8(dev: 0, reg: 0x08), 4)
        XCTAssertEqual(read(io, 4, 4), 0x0600_0000)
        // Device 00:01.0; register bits 1:0 of CONFIG_ADDRESS are ignored.
        write(io, 0, cf8(dev: 1, reg: 0x08) | 3, 4)
        XCTAssertEqual(read(io, 4, 4), 0x0200_0001)
        write(io, 0, cf8(dev: 1, reg: 0x2C), 4)
        XCTAssertEqual(read(io, 4, 4), 0x0001_1AF4)
        XCTAssertEqual(read(io, 6, 2), 0x0001)
        // Accesses that leave the DWORD read all ones.
        XCTAssertEqual(read(io, 5, 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(io, 7, 2), 0xFFFF)
        XCTAssertEqual(read(io, 4, 8), 0xFFFF_FFFF_FFFF_FFFF)
    }

    func testConfigDataWritesAtByteOffsets() {
        let io = bus.configIO
        write(io, 0, cf8(dev: 1, reg: 0x3C), 4)
        XCTAssertEqual(read(io, 4, 4), 0x0000_0111, "line = GSI 17 (slot 1, INTA), pin INTA")
        write(io, 5, 0x7F, 1) // pin is read-only
        write(io, 4, 0x0A, 1)
        XCTAssertEqual(read(io, 4, 4), 0x0000_010A)
        write(io, 0, cf8(dev: 1, reg: 0x04), 4)
        write(io, 4, 0x0000, 2)
        XCTAssertEqual(read(io, 4, 2), 0)
        write(io, 5, 0x04, 1) // INTX_DISABLE via the high byte of Command
        XCTAssertEqual(read(io, 4, 2), 0x0400)
        write(io, 6, 0xFFFF, 2) // status: RW1C bits, nothing set
        XCTAssertEqual(read(io, 6, 2), 0x0000)
        write(io, 4, 0x0002_0002, 4)
        XCTAssertEqual(read(io, 4, 4), 0x0000_0002)
    }

    func testResetControlRegister() {
        let io = bus.configIO
        let resets = CallbackLog<Void>()
        io.onReset = { resets.append(()) }
        XCTAssertEqual(read(io, 1, 1), 0x00)
        // Linux's BOOT_CF9_FORCE: cf9 = inb(0xcf9) & ~6; outb(cf9|2); outb(cf9|6).
        write(io, 1, 0x02, 1)
        XCTAssertEqual(resets.all.count, 0)
        XCTAssertEqual(read(io, 1, 1), 0x02)
        write(io, 1, 0x06, 1)
        XCTAssertEqual(resets.all.count, 1)
        write(io, 1, 0xF1, 1)
        XCTAssertEqual(read(io, 1, 1), 0x00, "only bits 1-3 are kept")
        write(io, 1, 0x0404, 2)
        XCTAssertEqual(resets.all.count, 1, "only byte writes reach RST_CNT")
        XCTAssertEqual(read(io, 0, 4), 0, "CONFIG_ADDRESS untouched")
    }

    func testDisabledEnableBitReadsOnes() {
        let io = bus.configIO
        write(io, 0, cf8(dev: 0, reg: 0, enable: false), 4)
        XCTAssertEqual(read(io, 4, 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(io, 6, 2), 0xFFFF)
        XCTAssertEqual(read(io, 7, 1), 0xFF)
        write(io, 0, cf8(dev: 1, reg: 0x3C, enable: false), 4)
        write(io, 4, 0x55, 1)
        XCTAssertEqual(cfgRead(dev, 0x3C, 1), 0x11, "write with enable clear dropped")
    }

    func testNonexistentFunctionsReadOnes() {
        let io = bus.configIO
        for (b, d, f) in [(0, 2, 0), (0, 31, 0), (0, 1, 1), (0, 0, 7), (1, 0, 0), (255, 1, 0)] as [(UInt32, UInt32, UInt32)] {
            write(io, 0, cf8(bus: b, dev: d, fn: f, reg: 0), 4)
            XCTAssertEqual(read(io, 4, 4), 0xFFFF_FFFF, "\(b):\(d).\(f)")
            XCTAssertEqual(read(io, 4, 2), 0xFFFF)
            XCTAssertEqual(read(io, 5, 1), 0xFF)
            write(io, 4, 0, 4) // dropped, no crash
        }
    }

    func testECAMDecoding() {
        let m = bus.configMMIO
        XCTAssertEqual(read(m, ecam(dev: 0, reg: 0), 4), 0x0D57_8086)
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 0), 4), 0x1041_1AF4)
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 2), 2), 0x1041)
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 0x0B), 1), 0x02)
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 0x3D), 1), 0x01)
        // Conventional device: offsets 0x100-0xFFF are beyond its config space.
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 0x100), 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(m, ecam(dev: 1, reg: 0xFFC), 4), 0xFFFF_FFFF)
        // Missing device, function, bus.
        XCTAssertEqual(read(m, ecam(dev: 2, reg: 0), 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(m, ecam(dev: 1, fn: 1, reg: 0), 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(m, ecam(bus: 1, dev: 0, reg: 0), 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(m, ecam(bus: 255, dev: 31, fn: 7, reg: 0xFFC), 4), 0xFFFF_FFFF)
        XCTAssertEqual(read(m, 1 << 28, 4), 0xFFFF_FFFF, "beyond 256 buses")
        XCTAssertEqual(read(m, UInt64.max, 1), 0xFF)
        // An access crossing into the next function reads ones.
        XCTAssertEqual(read(m, ecam(dev: 0, reg: 0xFFE), 4), 0xFFFF_FFFF)
        // Writes through ECAM.
        write(m, ecam(dev: 1, reg: 0x3C), 0x05, 1)
        XCTAssertEqual(cfgRead(dev, 0x3C, 1), 0x05)
        write(m, ecam(bus: 1, dev: 1, reg: 0x3C), 0x06, 1)
        XCTAssertEqual(cfgRead(dev, 0x3C, 1), 0x05, "bus 1 write dropped")
    }

    func testECAMDecodeFunction() {
        XCTAssertEqual(PCIConfigMMIO.decode(0x0FFF_FFFF).map { [$0.bus, $0.device, $0.function] }, [255, 31, 7])
        XCTAssertEqual(PCIConfigMMIO.decode(0x0FFF_FFFF)?.register, 0xFFF)
        XCTAssertEqual(PCIConfigMMIO.decode(0x0012_B1A4).map { [$0.bus, $0.device, $0.function] }, [1, 5, 3])
        XCTAssertEqual(PCIConfigMMIO.decode(0x0012_B1A4)?.register, 0x1A4)
        XCTAssertNil(PCIConfigMMIO.decode(0x1000_0000))
    }

    func testInstallInsertsEverything() throws {
        let mmio = Bus(), pio = Bus()
        try bus.install(mmioBus: mmio, pioBus: pio)
        XCTAssertTrue(pio.resolve(0xCF8, size: 4)?.0 === bus.configIO)
        XCTAssertTrue(pio.resolve(0xCFF, size: 1)?.0 === bus.configIO)
        XCTAssertNil(pio.resolve(0xCFF, size: 2))
        XCTAssertTrue(mmio.resolve(0xE000_0000, size: 4)?.0 === bus.configMMIO)
        XCTAssertTrue(mmio.resolve(0xE00F_FFFC, size: 4)?.0 === bus.configMMIO)
        XCTAssertTrue(mmio.resolve(0xC000_0000, size: 4)?.0 === bus.mmio32Router)
        XCTAssertTrue(mmio.resolve(0x1_0000_0000, size: 4)?.0 === bus.mmio64Router)
        XCTAssertTrue(pio.resolve(0xC000, size: 4)?.0 === bus.ioRouter)
        XCTAssertThrowsError(try bus.install(mmioBus: mmio, pioBus: Bus()), "second install overlaps")
    }

    func testLinuxStyleBusScan() {
        // Linux scans devfn 0..255 reading the vendor ID, skipping functions
        // 1-7 of single-function devices.
        let io = bus.configIO
        var found: [String] = []
        for d: UInt32 in 0..<32 {
            write(io, 0, cf8(dev: d, reg: 0), 4)
            let id = read(io, 4, 4)
            if id == 0xFFFF_FFFF { continue }
            write(io, 0, cf8(dev: d, reg: 0x0C), 4)
            let headerType = read(io, 6, 1)
            found.append("\(d):\(String(id, radix: 16)) ht=\(headerType)")
        }
        XCTAssertEqual(found, ["0:d578086 ht=0", "1:10411af4 ht=0"])
    }
}
