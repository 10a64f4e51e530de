import GuestMemory
import XCTest
@testable import Boot

final class CPUStateTests: XCTestCase {
    func testGDTBytes() {
        XCTAssertEqual(BootGDT.bytes,
                       [UInt8](repeating: 0, count: 8)
                       + [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9B, 0xCF, 0x00]     // 0x08 code32
                       + [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9B, 0xAF, 0x00]     // 0x10 __BOOT_CS
                       + [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x93, 0xCF, 0x00]     // 0x18 __BOOT_DS
                       + [0x67, 0x00, 0x00, 0x00, 0x00, 0x8B, 0x00, 0x00]     // 0x20 TSS
                       + [UInt8](repeating: 0, count: 8))                    // TSS upper half
        XCTAssertEqual(BootGDT.register, .init(base: 0x500, limit: 0x2F))
        XCTAssertEqual(BootGDT.idtRegister.base, 0x530)
        // The IDT does not overlap the GDT.
        XCTAssertGreaterThanOrEqual(BootLayout.idtAddress, BootLayout.gdtAddress + UInt64(BootGDT.bytes.count))
    }

    func testSegmentDecoding() {
        let code = BootCPUState.Segment(descriptor: 0x00AF_9B00_0000_FFFF, selector: 0x10)
        XCTAssertEqual(code, .init(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xB, present: true, dpl: 0,
                                   db: false, s: true, l: true, g: true, avl: false))
        // base 0xABCDEF01 (bytes 7, 4..2), limit 0xF2345 (nibble in byte 6, bytes 1..0),
        // access 0xF2 (P=1, DPL=3, S=1, type 2), flags 0x1 (AVL only).
        let d: UInt64 = 0xAB_1F_F2_CD_EF_01_23_45
        let seg = BootCPUState.Segment(descriptor: d, selector: 0x2B)
        XCTAssertEqual(seg.base, 0xABCD_EF01)
        XCTAssertEqual(seg.limit, 0xF_2345)
        XCTAssertEqual(seg.type, 0x2)
        XCTAssertTrue(seg.present)
        XCTAssertEqual(seg.dpl, 3)
        XCTAssertTrue(seg.s)
        XCTAssertFalse(seg.g)
        XCTAssertTrue(seg.avl)
        XCTAssertFalse(seg.l)
        XCTAssertFalse(seg.db)
        XCTAssertFalse(BootCPUState.Segment(descriptor: 0, selector: 0).present)
        XCTAssertTrue(BootCPUState.Segment(descriptor: 0, selector: 0).unusable)
    }

    func testLinux64State() {
        let cpu = BootCPUState.linux64(entry: 0x10_0200, zeroPage: 0x7000)
        XCTAssertEqual(cpu.rip, 0x10_0200)
        XCTAssertEqual(cpu.rsi, 0x7000)
        XCTAssertEqual(cpu.rsp, 0x8FF0)
        XCTAssertEqual(cpu.rbp, 0x8FF0)
        XCTAssertEqual(cpu.rbx, 0)
        XCTAssertEqual(cpu.rflags, 0x2)
        XCTAssertEqual(cpu.cr0, 0x8000_0031)                             // PG | NE | ET | PE
        XCTAssertEqual(cpu.cr3, 0x9000)
        XCTAssertEqual(cpu.cr4, 0x20)                                    // PAE
        XCTAssertEqual(cpu.efer, 0x500)                                  // LMA | LME
        XCTAssertEqual(cpu.cs, .init(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xB, present: true, dpl: 0,
                                     db: false, s: true, l: true, g: true, avl: false))
        let data = BootCPUState.Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x18, type: 0x3, present: true,
                                        dpl: 0, db: true, s: true, l: false, g: true, avl: false)
        XCTAssertEqual([cpu.ds, cpu.es, cpu.fs, cpu.gs, cpu.ss], Array(repeating: data, count: 5))
        XCTAssertEqual(cpu.tr, .init(base: 0, limit: 0x67, selector: 0x20, type: 0xB, present: true, dpl: 0,
                                     db: false, s: false, l: false, g: false, avl: false))
        XCTAssertEqual(cpu.ldt, .init(base: 0, limit: 0, selector: 0, type: 2, present: false, dpl: 0, db: false,
                                      s: false, l: false, g: false, avl: false, unusable: true))
        XCTAssertEqual(cpu.gdt, .init(base: 0x500, limit: 47))
        XCTAssertEqual(cpu.idt, .init(base: 0x530, limit: 0))
        XCTAssertEqual(cpu.fpu, .init(fcw: 0x37F, mxcsr: 0x1F80))
    }

    func testBootMSRs() {
        let msrs = BootCPUState.linux64(entry: 0, zeroPage: 0).msrs
        XCTAssertEqual(msrs.map(\.index), [0x174, 0x175, 0x176, 0xC000_0081, 0xC000_0083, 0xC000_0102, 0xC000_0084,
                                           0xC000_0082, 0x10, 0x1A0, 0x2FF])
        XCTAssertEqual(msrs.map(\.value), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x806])
        XCTAssertEqual(BootCPUState.pvh(entry: 0, startInfo: 0).msrs, msrs)
    }

    func testPageTablesIdentityMapFourGiB() {
        let bytes = PageTables.bytes
        XCTAssertEqual(bytes.count, 6 * 4096)
        XCTAssertEqual(bytes.le(UInt64.self, at: 0), 0xA003)                     // PML4[0] -> PDPT
        XCTAssertEqual(bytes[8..<4096].allSatisfy { $0 == 0 }, true)
        XCTAssertEqual((0..<4).map { bytes.le(UInt64.self, at: 4096 + $0 * 8) }, [0xB003, 0xC003, 0xD003, 0xE003])
        XCTAssertEqual(bytes[(4096 + 32)..<8192].allSatisfy { $0 == 0 }, true)
        XCTAssertEqual(bytes.le(UInt64.self, at: 8192), 0x83)                    // 0 -> 0, 2 MiB page
        XCTAssertEqual(bytes.le(UInt64.self, at: 8192 + 8), 0x20_0083)
        XCTAssertEqual(bytes.le(UInt64.self, at: 8192 + 4096), 0x4000_0083)      // second PD starts at 1 GiB
        XCTAssertEqual(bytes.le(UInt64.self, at: bytes.count - 8), 0xFFE0_0083)  // last 2 MiB below 4 GiB
        for i in 0..<2048 {
            XCTAssertEqual(bytes.le(UInt64.self, at: 8192 + i * 8), UInt64(i) << 21 | 0x83)
        }
    }

    func testLayoutDoesNotOverlap() {
        // [start, end) of every structure the loader writes below 1 MiB.
        let ranges: [(String, UInt64, UInt64)] = [
            ("GDT+IDT", BootLayout.gdtAddress, BootLayout.idtAddress + 16),
            ("PVH start info page", BootLayout.pvhStartInfoAddress, BootLayout.pvhStartInfoAddress + 4096),
            ("zero page", BootLayout.zeroPageAddress, BootLayout.zeroPageAddress + 4096),
            ("stack", BootLayout.zeroPageAddress + 4096, BootLayout.bootStackPointer + 16),
            ("page tables", BootLayout.pml4Address, BootLayout.pageTablesEnd),
            ("cmdline", BootLayout.cmdlineAddress, BootLayout.cmdlineAreaEnd),
            ("MP table", BootLayout.mpTableAddress, BootLayout.mpTableAddress + UInt64(MPTable.size(vcpus: 254))),
        ]
        for (a, b) in zip(ranges, ranges.dropFirst()) {
            XCTAssertLessThanOrEqual(a.2, b.1, "\(a.0) overlaps \(b.0)")
        }
        XCTAssertLessThanOrEqual(BootLayout.mpTableAddress + UInt64(MPTable.size(vcpus: 254)),
                                 BootLayout.highMemoryStart)
    }
}
