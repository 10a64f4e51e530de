import XCTest
@testable import ACPI

/// Each table byte for byte. Expected bytes are written from the ACPI 6.5
/// tables, checksums recomputed here, independently of the code under test.
final class TableTests: XCTestCase {
    let machine = ACPIMachine(vcpus: 1)

    // MARK: RSDP (§5.2.5.3)

    func testRSDPExactBytes() {
        let bytes = RSDP.build(xsdtAddress: 0xE0028)
        var expected = cat(.ascii("RSD PTR "), [0x00], .ascii("SWVMM "), [0x02],
                           [0x00, 0x00, 0x00, 0x00],                           // no RSDT
                           [0x24, 0x00, 0x00, 0x00],                           // length 36
                           [0x28, 0x00, 0x0E, 0x00, 0x00, 0x00, 0x00, 0x00],   // XSDT
                           [0x00, 0x00, 0x00, 0x00])                           // extended checksum, reserved
        expected = fixChecksum(expected, at: 8, over: 0..<20)
        expected = fixChecksum(expected, at: 32)
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(bytes.count, 36)
        assertSumsToZero(bytes[0..<20], "RSDP first 20 bytes")
        assertSumsToZero(bytes[...], "RSDP extended")
    }

    // MARK: XSDT (§5.2.8)

    func testXSDTExactBytes() throws {
        let bytes = try XSDT.build(entries: [0xE0060, 0x1_2345_6789])
        let expected = fixChecksum(cat(sdtHeader("XSDT", length: 52, revision: 1),
                                       .le(UInt64(0xE0060)), .le(UInt64(0x1_2345_6789))), at: 9)
        XCTAssertEqual(bytes, expected)
        assertSumsToZero(bytes[...], "XSDT")
    }

    // MARK: FADT (§5.2.9)

    func testFADTFieldOffsets() throws {
        let bytes = try FADT.build(dsdtAddress: 0xE01C0, machine: machine)
        XCTAssertEqual(bytes.count, 276)
        XCTAssertEqual(Array(bytes[0..<4]), .ascii("FACP"))
        XCTAssertEqual(bytes.u32(at: 4), 276)
        XCTAssertEqual(bytes[8], 6, "major version")
        XCTAssertEqual(bytes[131], 5, "minor version")
        assertSumsToZero(bytes[...], "FADT")

        XCTAssertEqual(bytes.u32(at: 36), 0, "FIRMWARE_CTRL: no FACS")
        XCTAssertEqual(bytes.u32(at: 40), 0, "DSDT (32-bit) unused")
        XCTAssertEqual(bytes.u16(at: 46), 0, "SCI_INT")
        XCTAssertEqual(bytes[108], 0x32, "CENTURY")
        XCTAssertEqual(bytes.u16(at: 109), 0x0006, "IAPC_BOOT_ARCH: 8042 | VGA not present")
        XCTAssertEqual(bytes.u32(at: 112), 0x0010_0031, "flags: WBINVD | PWR_BUTTON | SLP_BUTTON | HW_REDUCED_ACPI")
        XCTAssertEqual(Array(bytes[116..<129]), [UInt8](repeating: 0, count: 13), "RESET_REG, RESET_VALUE unused")
        XCTAssertEqual(bytes.u64(at: 132), 0, "X_FIRMWARE_CTRL")
        XCTAssertEqual(bytes.u64(at: 140), 0xE01C0, "X_DSDT")
        XCTAssertEqual(Array(bytes[148..<244]), [UInt8](repeating: 0, count: 96), "no PM1/PM2/PM_TMR/GPE blocks")
        XCTAssertEqual(Array(bytes[244..<256]), cat([0x01, 0x08, 0x00, 0x01], .le(UInt64(0x600))), "SLEEP_CONTROL_REG")
        XCTAssertEqual(Array(bytes[256..<268]), cat([0x01, 0x08, 0x00, 0x01], .le(UInt64(0x601))), "SLEEP_STATUS_REG")
        XCTAssertEqual(Array(bytes[268..<276]), .ascii("SWIFTVMM"), "hypervisor vendor identity")
    }

    func testFADTExactBytes() throws {
        var body = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ b: [UInt8], _ at: Int) { body.replaceSubrange((at - 36)..<(at - 36 + b.count), with: b) }
        put([0x32], 108)
        put([0x06, 0x00], 109)
        put([0x31, 0x00, 0x10, 0x00], 112)
        put([0x05], 131)
        put(.le(UInt64(0xE01C0)), 140)
        put([0x01, 0x08, 0x00, 0x01, 0x00, 0x06, 0, 0, 0, 0, 0, 0], 244)
        put([0x01, 0x08, 0x00, 0x01, 0x01, 0x06, 0, 0, 0, 0, 0, 0], 256)
        put(.ascii("SWIFTVMM"), 268)
        let expected = fixChecksum(cat(sdtHeader("FACP", length: 276, revision: 6), body), at: 9)
        XCTAssertEqual(try FADT.build(dsdtAddress: 0xE01C0, machine: machine), expected)
    }

    func testFADTWithoutRTCOrI8042() throws {
        let bare = ACPIMachine(vcpus: 1, sleepControlPort: 0x3C0, sleepStatusPort: 0x3C0, rtc: nil, i8042: nil)
        let bytes = try FADT.build(dsdtAddress: 0x1234, machine: bare)
        XCTAssertEqual(bytes[108], 0, "CENTURY")
        XCTAssertEqual(bytes.u16(at: 109), 0x0024, "IAPC_BOOT_ARCH: VGA not present | CMOS RTC not present")
        XCTAssertEqual(bytes.u64(at: 248), 0x3C0)
        XCTAssertEqual(bytes.u64(at: 260), 0x3C0)
        assertSumsToZero(bytes[...], "FADT")
    }

    // MARK: MADT (§5.2.12)

    func testMADTOneCPUExactBytes() throws {
        let expected = fixChecksum(cat(
            sdtHeader("APIC", length: 70, revision: 6),
            [0x00, 0x00, 0xE0, 0xFE],                                       // local APIC 0xFEE00000
            [0x01, 0x00, 0x00, 0x00],                                       // PCAT_COMPAT
            [0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00],               // CPU 0: UID 0, APIC 0, enabled
            [0x01, 0x0C, 0x01, 0x00, 0x00, 0x00, 0xC0, 0xFE, 0x00, 0x00, 0x00, 0x00], // I/O APIC 1 @ 0xFEC00000, GSI 0
            [0x04, 0x06, 0xFF, 0x00, 0x00, 0x01]),                          // NMI: all CPUs, LINT1
            at: 9)
        XCTAssertEqual(try MADT.build(vcpus: 1), expected)
    }

    /// Walks the interrupt controller structures by their own type/length bytes.
    func entries(_ madt: [UInt8]) -> [(type: UInt8, bytes: [UInt8])] {
        var out: [(UInt8, [UInt8])] = []
        var offset = 44
        while offset < madt.count {
            let length = Int(madt[offset + 1])
            out.append((madt[offset], Array(madt[offset..<(offset + length)])))
            offset += length
        }
        XCTAssertEqual(offset, madt.count, "entries end exactly at the table's end")
        return out
    }

    func testMADTEntriesForOneTwoAndEightCPUs() throws {
        for (vcpus, length) in [(1, 70), (2, 78), (8, 126)] {
            let madt = try MADT.build(vcpus: vcpus)
            XCTAssertEqual(madt.count, length)
            XCTAssertEqual(MADT.length(vcpus: vcpus), length)
            XCTAssertEqual(madt.u32(at: 4), UInt32(length))
            assertSumsToZero(madt[...], "MADT \(vcpus)")
            let list = entries(madt)
            let cpus = list.filter { $0.type == 0 }
            XCTAssertEqual(cpus.count, vcpus)
            for (i, cpu) in cpus.enumerated() {
                XCTAssertEqual(cpu.bytes, [0x00, 0x08, UInt8(i), UInt8(i), 0x01, 0x00, 0x00, 0x00])
            }
            let ioapics = list.filter { $0.type == 1 }
            XCTAssertEqual(ioapics.count, 1)
            XCTAssertEqual(ioapics.first?.bytes[2], UInt8(vcpus), "I/O APIC ID = vCPU count")
            XCTAssertEqual(list.filter { $0.type == 4 }.map(\.bytes), [[0x04, 0x06, 0xFF, 0x00, 0x00, 0x01]])
            XCTAssertEqual(list.count, vcpus + 2, "no interrupt source overrides")
        }
    }

    func testMADTVCPULimits() throws {
        XCTAssertEqual(try MADT.build(vcpus: 254).count, 44 + 8 * 254 + 12 + 6)
        for bad in [0, 255, -1] {
            XCTAssertThrowsError(try MADT.build(vcpus: bad)) {
                XCTAssertEqual($0 as? ACPIError, .invalidVCPUCount(bad))
            }
        }
    }

    // MARK: DSDT (§5.2.11.1)

    static let sta: [UInt8] = [0x14, 0x09, 0x5F, 0x53, 0x54, 0x41, 0x00, 0xA4, 0x0A, 0x0F]
    static let nameHID: [UInt8] = [0x08, 0x5F, 0x48, 0x49, 0x44]
    static let nameCRS: [UInt8] = [0x08, 0x5F, 0x43, 0x52, 0x53]

    static let s5: [UInt8] = [0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00]

    static let com1 = cat([0x5B, 0x82, 0x35], .ascii("COM1"),
        nameHID, [0x0C, 0x41, 0xD0, 0x05, 0x01],
        [0x08, 0x5F, 0x55, 0x49, 0x44, 0x00],
        sta,
        nameCRS, [0x11, 0x10, 0x0A, 0x0D, 0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00])

    static let rtc = cat([0x5B, 0x82, 0x2C], .ascii("RTC_"),
        nameHID, [0x0C, 0x41, 0xD0, 0x0B, 0x00],
        sta,
        nameCRS, [0x11, 0x0D, 0x0A, 0x0A, 0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02, 0x79, 0x00])

    static let kbd = cat([0x5B, 0x82, 0x37], .ascii("KBD_"),
        nameHID, [0x0C, 0x41, 0xD0, 0x03, 0x03],
        sta,
        nameCRS, [0x11, 0x18, 0x0A, 0x15,
                  0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01,
                  0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01,
                  0x22, 0x02, 0x00, 0x79, 0x00])

    static let pevt = cat([0x5B, 0x82, 0x31], .ascii("PEVT"),
        nameHID, [0x0D], .ascii("QEMU0001"), [0x00],
        sta,
        nameCRS, [0x11, 0x0D, 0x0A, 0x0A, 0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01, 0x79, 0x00])

    func testDSDTExactBytes() throws {
        let devices = cat(Self.com1, Self.rtc, Self.kbd, Self.pevt)
        XCTAssertEqual([Self.com1.count, Self.rtc.count, Self.kbd.count, Self.pevt.count], [55, 46, 57, 51])
        // Scope body: "\_SB_" + 209 bytes of devices = 214; PkgLength 216 = 0x48 0x0D.
        let scope = cat([0x10, 0x48, 0x0D, 0x5C, 0x5F, 0x53, 0x42, 0x5F], devices)
        let aml = cat(Self.s5, scope)
        XCTAssertEqual(try DSDT.aml(for: machine), aml)
        let expected = fixChecksum(cat(sdtHeader("DSDT", length: 267, revision: 2), aml), at: 9)
        XCTAssertEqual(try DSDT.build(machine: machine), expected)
    }

    func testDSDTOptionalDevicesAndIRQs() throws {
        let minimal = ACPIMachine(vcpus: 1, serialPort: 0x2F8, serialIRQ: 3, pvpanicPort: nil, rtc: nil, i8042: nil)
        let com = cat([0x5B, 0x82, 0x35], .ascii("COM1"),
            Self.nameHID, [0x0C, 0x41, 0xD0, 0x05, 0x01],
            [0x08, 0x5F, 0x55, 0x49, 0x44, 0x00],
            Self.sta,
            Self.nameCRS, [0x11, 0x10, 0x0A, 0x0D, 0x47, 0x01, 0xF8, 0x02, 0xF8, 0x02, 0x01, 0x08, 0x22, 0x08, 0x00, 0x79, 0x00])
        // Scope body: 5 + 55 = 60, PkgLength 61 = 0x3D.
        XCTAssertEqual(try DSDT.aml(for: minimal), cat(Self.s5, [0x10, 0x3D, 0x5C, 0x5F, 0x53, 0x42, 0x5F], com))

        var withIRQs = machine
        withIRQs.rtc?.irq = 8
        withIRQs.i8042?.irq = nil
        let aml = try DSDT.aml(for: withIRQs)
        let rtcCRS: [UInt8] = [0x11, 0x10, 0x0A, 0x0D, 0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02, 0x22, 0x00, 0x01, 0x79, 0x00]
        XCTAssertNotNil(aml.firstRange(of: rtcCRS), "RTC _CRS lists IRQ 8")
        XCTAssertNil(aml.firstRange(of: [0x22, 0x02, 0x00]), "no IRQ 1 for the i8042")
    }
}
