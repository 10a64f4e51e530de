import GuestMemory
import XCTest
@testable import Boot

/// Loading an ELF vmlinux through the PVH entry: hvm_start_info, the module
/// list and memory map, PT_LOAD segments and their zeroed tails.
final class PVHBootTests: XCTestCase {
    let mib = TestMemory.mib

    func testStartInfoModlistMemmapAndSegments() throws {
        let builder = ELFBuilder()
        let memory = try TestMemory.withHoles([(0, 20 * mib), (30 * mib, 32 * mib)])
        // Garbage where the zeroed tails (bss) will go, to see them cleared.
        try memory.writeBytes([UInt8](repeating: 0xEE, count: 0x2000), at: GuestAddress(0x100_0000))
        try memory.writeBytes([UInt8](repeating: 0xEE, count: 0x1000), at: GuestAddress(0x100_4000))
        let initrd: [UInt8] = Array(repeating: 0x42, count: 5000)
        let result = try LinuxLoader.load(kernel: try KernelImage.parse(builder.build()), initrd: initrd,
                                          cmdline: "console=hvc0", vcpus: 2,
                                          memoryMap: GuestMemoryMap(ramBytes: 32 * mib), into: memory)

        // struct hvm_start_info at 0x6000.
        let expectedStartInfo: [UInt8] =
            [0x78, 0xC5, 0x6E, 0x33]                 // magic 0x336ec578
            + [1, 0, 0, 0]                           // version
            + [0, 0, 0, 0]                           // flags
            + [1, 0, 0, 0]                           // nr_modules
            + [0x40, 0x60, 0, 0, 0, 0, 0, 0]         // modlist_paddr 0x6040
            + [0x00, 0x00, 0x02, 0, 0, 0, 0, 0]      // cmdline_paddr 0x20000
            + [0, 0, 0, 0, 0, 0, 0, 0]               // rsdp_paddr
            + [0x80, 0x60, 0, 0, 0, 0, 0, 0]         // memmap_paddr 0x6080
            + [3, 0, 0, 0]                           // memmap_entries
            + [0, 0, 0, 0]                           // reserved
        XCTAssertEqual(try memory.bytes(0x6000, 64), expectedStartInfo + [UInt8](repeating: 0, count: 8))
        // hvm_modlist_entry at 0x6040: the initramfs at the top of low RAM.
        XCTAssertEqual(try memory.bytes(0x6040, 32),
                       [0x00, 0xE0, 0xFF, 0x01, 0, 0, 0, 0]  // paddr 0x1ffe000
                       + [0x88, 0x13, 0, 0, 0, 0, 0, 0]      // size 5000
                       + [UInt8](repeating: 0, count: 16))   // cmdline_paddr, reserved
        // hvm_memmap_table_entry array at 0x6080.
        XCTAssertEqual(try memory.bytes(0x6080, 96),
                       [0, 0, 0, 0, 0, 0, 0, 0] + [0x00, 0xFC, 0x09, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0]
                       + [0x00, 0xFC, 0x09, 0, 0, 0, 0, 0] + [0x00, 0x04, 0x06, 0, 0, 0, 0, 0] + [2, 0, 0, 0, 0, 0, 0, 0]
                       + [0x00, 0x00, 0x10, 0, 0, 0, 0, 0] + [0x00, 0x00, 0xF0, 0x01, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0]
                       + [UInt8](repeating: 0, count: 24))
        // Segments at p_paddr, zero-filled up to p_memsz.
        XCTAssertEqual(try memory.bytes(0x100_0000, 0x300), builder.segments[0].data)
        XCTAssertEqual(try memory.bytes(0x100_0300, 0x1D00), [UInt8](repeating: 0, count: 0x1D00))
        XCTAssertEqual(try memory.bytes(0x100_4000, 4), [0xC3, 0xC3, 0xC3, 0xC3])
        XCTAssertEqual(try memory.bytes(0x100_4004, 0xFFC), [UInt8](repeating: 0, count: 0xFFC))
        XCTAssertEqual(try memory.bytes(0x1FF_E000, 5000), initrd)
        XCTAssertEqual(try memory.bytes(0x2_0000, 13), Array("console=hvc0\0".utf8))
        // No zero page and no page tables for PVH.
        XCTAssertEqual(try memory.bytes(0x7000, 4096), [UInt8](repeating: 0, count: 4096))
        XCTAssertEqual(try memory.bytes(0x9000, 8), [UInt8](repeating: 0, count: 8))

        XCTAssertEqual(result.bootProtocol, .pvh)
        XCTAssertEqual(result.entryPoint, 0x100_0010)
        XCTAssertEqual(result.kernelRange, 0x100_0000..<0x100_5000)
        XCTAssertEqual(result.initrdRange, 0x1FF_E000..<0x1FF_F388)
        XCTAssertEqual(result.bootInfoAddress, 0x6000)
        XCTAssertEqual(result.cpu.rbx, 0x6000)
        XCTAssertTrue(result.summary.contains("boot protocol: PVH (ELF vmlinux)"))
        XCTAssertTrue(result.summary.contains("hvm_start_info: 0x6000"))
    }

    func testWithoutInitrdThereAreNoModules() throws {
        let memory = TestMemory.flat(24 * mib)
        let result = try LinuxLoader.load(kernel: try KernelImage.parse(ELFBuilder().build()), initrd: nil,
                                          cmdline: "", vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 24 * mib),
                                          into: memory)
        XCTAssertNil(result.initrdRange)
        XCTAssertEqual(try memory.u32(0x6000 + 12), 0)                  // nr_modules
        XCTAssertEqual(try memory.u64(0x6000 + 16), 0)                  // modlist_paddr
        XCTAssertEqual(try memory.bytes(0x6040, 32), [UInt8](repeating: 0, count: 32))
    }

    func testSegmentOutsideRAM() throws {
        let kernel = try KernelImage.parse(ELFBuilder().build())
        let error = BootError.segmentOutsideRAM(index: 0, start: 0x100_0000, end: 0x100_2000, ramEnd: 16 * mib)
        assertThrows(error) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 16 * mib), into: TestMemory.flat(16 * mib))
        }
        XCTAssertEqual(error.description,
                       "ELF PT_LOAD segment 0 at [0x1000000, 0x1002000) is outside guest RAM [0, 0x1000000)")
        // Ends exactly at the end of RAM: fits.
        XCTAssertNoThrow(try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "", vcpus: 1,
                                              memoryMap: GuestMemoryMap(ramBytes: 0x100_5000),
                                              into: TestMemory.flat(0x100_5000)))
    }

    func testSegmentInTheMMIOHoleIsOutsideRAM() throws {
        var builder = ELFBuilder()
        builder.segments = [.init(paddr: 0xC000_0000, data: [0x90], memsz: 0x1000)]
        builder.notes = [ELFBuilder.pvhNote(0xC000_0000)]
        let kernel = try KernelImage.parse(builder.build())
        // 4 GiB of RAM: 3 GiB low, 1 GiB at 4 GiB; 0xC0000000 is the hole.
        assertThrows(.segmentOutsideRAM(index: 0, start: 0xC000_0000, end: 0xC000_1000, ramEnd: 0xC000_0000)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 4096 * mib), into: TestMemory.flat(mib))
        }
    }

    func testInitrdMustFitAboveTheKernel() throws {
        let kernel = try KernelImage.parse(ELFBuilder().build())
        assertThrows(.initrdDoesNotFit(size: 0x10_0000, ceiling: 0x108_0000, floor: 0x100_5000)) {
            try LinuxLoader.load(kernel: kernel, initrd: [UInt8](repeating: 1, count: 0x10_0000), cmdline: "",
                                 vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 0x108_0000),
                                 into: TestMemory.flat(0x108_0000))
        }
    }

    func testPVHCommandLineLimitIsCOMMAND_LINE_SIZE() throws {
        let kernel = try KernelImage.parse(ELFBuilder().build())
        assertThrows(.cmdlineTooLong(length: 2048, limit: 2047)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: String(repeating: "x", count: 2048), vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 24 * mib), into: TestMemory.flat(24 * mib))
        }
        XCTAssertNoThrow(try LinuxLoader.load(kernel: kernel, initrd: nil,
                                              cmdline: String(repeating: "x", count: 2047), vcpus: 1,
                                              memoryMap: GuestMemoryMap(ramBytes: 24 * mib),
                                              into: TestMemory.flat(24 * mib)))
    }

    func testPVHCPUState() throws {
        let result = try LinuxLoader.load(kernel: try KernelImage.parse(ELFBuilder().build()), initrd: nil,
                                          cmdline: "", vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 24 * mib),
                                          into: TestMemory.flat(24 * mib))
        let cpu = result.cpu
        XCTAssertEqual(cpu.rip, 0x100_0010)
        XCTAssertEqual(cpu.rbx, 0x6000)
        XCTAssertEqual(cpu.rsi, 0)
        XCTAssertEqual(cpu.rflags, 0x2)
        XCTAssertEqual(cpu.cr0, 0x11)                                    // PE | ET, paging off
        XCTAssertEqual(cpu.cr3, 0)
        XCTAssertEqual(cpu.cr4, 0)
        XCTAssertEqual(cpu.efer, 0)
        XCTAssertEqual(cpu.cs, .init(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, present: true, dpl: 0,
                                     db: true, s: true, l: false, g: true, avl: false))
        let data = BootCPUState.Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x18, type: 0x3, present: true,
                                        dpl: 0, db: true, s: true, l: false, g: true, avl: false)
        XCTAssertEqual([cpu.ds, cpu.es, cpu.fs, cpu.gs, cpu.ss], Array(repeating: data, count: 5))
        XCTAssertEqual(cpu.tr, .init(base: 0, limit: 0x67, selector: 0x20, type: 0xB, present: true, dpl: 0,
                                     db: false, s: false, l: false, g: false, avl: false))
        XCTAssertTrue(cpu.ldt.unusable)
        XCTAssertEqual(cpu.gdt, .init(base: 0x500, limit: 47))
        XCTAssertEqual(cpu.idt, .init(base: 0x530, limit: 0))
    }
}
