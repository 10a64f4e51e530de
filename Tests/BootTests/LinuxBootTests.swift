import GuestMemory
import XCTest
@testable import Boot

/// Loading a bzImage: the zero page, e820, command line, initramfs placement
/// and the errors for guests that are too small.
final class LinuxBootTests: XCTestCase {
    let mib = TestMemory.mib
    let initrd: [UInt8] = (0..<0x3005).map { UInt8(truncatingIfNeeded: $0 &* 13) }

    func image(_ edit: (inout BzImageBuilder) -> Void = { _ in }) throws -> KernelImage {
        var builder = BzImageBuilder()
        edit(&builder)
        return try KernelImage.parse(builder.build())
    }

    /// 8 MiB of guest RAM backed with a hole at [4 MiB, 6 MiB).
    func holeyMemory() throws -> ArrayGuestMemory {
        try TestMemory.withHoles([(0, 4 * mib), (6 * mib, 8 * mib)])
    }

    func testZeroPageAtExactOffsets() throws {
        let memory = try holeyMemory()
        let result = try LinuxLoader.load(kernel: try image(), initrd: initrd, cmdline: "console=ttyS0 reboot=k",
                                          vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: memory)
        let zp: UInt64 = 0x7000
        // The copied setup header, with the loader's fields patched in.
        var expectedHeader = Array(BzImageBuilder().build()[0x1F1..<0x26C])
        expectedHeader[0x210 - 0x1F1] = 0xFF                            // type_of_loader: undefined
        expectedHeader[0x211 - 0x1F1] = 0x81                            // LOADED_HIGH | CAN_USE_HEAP
        expectedHeader.put(UInt32(0x7F_C000), at: 0x218 - 0x1F1)        // ramdisk_image
        expectedHeader.put(UInt32(0x3005), at: 0x21C - 0x1F1)           // ramdisk_size
        expectedHeader.put(UInt16(0xDE00), at: 0x224 - 0x1F1)           // heap_end_ptr
        expectedHeader.put(UInt32(0x2_0000), at: 0x228 - 0x1F1)         // cmd_line_ptr
        XCTAssertEqual(try memory.bytes(zp + 0x1F1, 123), expectedHeader)
        XCTAssertEqual(try memory.u8(zp + 0x210), 0xFF)
        XCTAssertEqual(try memory.u32(zp + 0x228), 0x2_0000)
        XCTAssertEqual(try memory.u32(zp + 0x218), 0x7F_C000)
        XCTAssertEqual(try memory.u32(zp + 0x21C), 0x3005)
        // ext_ramdisk_image, ext_ramdisk_size, ext_cmd_line_ptr: high halves are zero.
        XCTAssertEqual(try memory.bytes(zp + 0xC0, 12), [UInt8](repeating: 0, count: 12))
        // Everything before e820_entries is zero (no screen_info, no ACPI RSDP).
        XCTAssertEqual(try memory.bytes(zp, 0x1E8), [UInt8](repeating: 0, count: 0x1E8))
        // e820_entries and the table at 0x2D0 (struct boot_e820_entry: addr, size, type).
        XCTAssertEqual(try memory.u8(zp + 0x1E8), 3)
        XCTAssertEqual(try memory.u8(zp + 0x1EF), 0)                    // sentinel
        let expectedE820: [UInt8] =
            [0, 0, 0, 0, 0, 0, 0, 0] + [0x00, 0xFC, 0x09, 0, 0, 0, 0, 0] + [1, 0, 0, 0]
            + [0x00, 0xFC, 0x09, 0, 0, 0, 0, 0] + [0x00, 0x04, 0x06, 0, 0, 0, 0, 0] + [2, 0, 0, 0]
            + [0x00, 0x00, 0x10, 0, 0, 0, 0, 0] + [0x00, 0x00, 0x70, 0, 0, 0, 0, 0] + [1, 0, 0, 0]
            + [UInt8](repeating: 0, count: 20)
        XCTAssertEqual(try memory.bytes(zp + 0x2D0, 80), expectedE820)
        // Nothing after the header but the e820 table.
        XCTAssertEqual(try memory.bytes(zp + 0x26C, 0x2D0 - 0x26C), [UInt8](repeating: 0, count: 0x2D0 - 0x26C))
        XCTAssertEqual(try memory.bytes(zp + 0x2D0 + 60, 4096 - 0x2D0 - 60),
                       [UInt8](repeating: 0, count: 4096 - 0x2D0 - 60))

        // The command line, NUL terminated, and the kernel and initramfs bytes.
        XCTAssertEqual(try memory.bytes(0x2_0000, 23), Array("console=ttyS0 reboot=k\0".utf8))
        XCTAssertEqual(try memory.bytes(0x10_0000, 4096), BzImageBuilder().payload)
        XCTAssertEqual(try memory.bytes(0x7F_C000, initrd.count), initrd)

        XCTAssertEqual(result.bootProtocol, .linux64)
        XCTAssertEqual(result.entryPoint, 0x10_0200)
        XCTAssertEqual(result.kernelRange, 0x10_0000..<0x10_1000)
        XCTAssertEqual(result.kernelMemoryEnd, 0x30_0000)               // max(2 MiB, pref 2 MiB) + init_size 1 MiB
        XCTAssertEqual(result.initrdRange, 0x7F_C000..<0x7F_F005)
        XCTAssertEqual(result.cmdlineAddress, 0x2_0000)
        XCTAssertEqual(result.cmdlineLength, 22)
        XCTAssertEqual(result.bootInfoAddress, 0x7000)
        XCTAssertEqual(result.mpTableAddress, 0x9_FC00)
        XCTAssertEqual(result.summary, """
            boot protocol: Linux 64-bit (bzImage)
            entry: 0x100200
            kernel: [0x100000, 0x101000), needs memory up to 0x300000
            initrd: [0x7fc000, 0x7ff005) (12293 bytes)
            cmdline: 0x20000 (22 bytes)
            zero page: 0x7000
            MP table: 0x9fc00 (1 vCPU)
            e820: [0x0, 0x9fc00) RAM
            e820: [0x9fc00, 0x100000) reserved
            e820: [0x100000, 0x800000) RAM
            """)
    }

    func testE820WithRAMAboveFourGiB() throws {
        // 3.5 GiB: 3 GiB low, 512 MiB at 4 GiB. Only the pieces written are backed.
        let memory = try TestMemory.withHoles([(0, 2 * mib), (2048 * mib - mib, 2048 * mib)])
        let map = GuestMemoryMap(ramBytes: 3584 * mib)
        let result = try LinuxLoader.load(kernel: try image(), initrd: [1, 2, 3], cmdline: "", vcpus: 2,
                                          memoryMap: map, into: memory)
        XCTAssertEqual(try memory.u8(0x7000 + 0x1E8), 4)
        XCTAssertEqual(try memory.bytes(0x7000 + 0x2D0 + 40, 40),
                       [0x00, 0x00, 0x10, 0, 0, 0, 0, 0] + [0x00, 0x00, 0xF0, 0xBF, 0, 0, 0, 0] + [1, 0, 0, 0]
                       + [0, 0, 0, 0, 1, 0, 0, 0] + [0, 0, 0, 0x20, 0, 0, 0, 0] + [1, 0, 0, 0])
        XCTAssertEqual(result.memoryMap.last, E820Entry(address: 0x1_0000_0000, size: 0x2000_0000, kind: .ram))
        // initrd_addr_max 0x7fffffff keeps the initramfs below 2 GiB, not at the top of low RAM.
        XCTAssertEqual(result.initrdRange, 0x7FFF_F000..<0x7FFF_F003)
        XCTAssertEqual(try memory.u32(0x7000 + 0x218), 0x7FFF_F000)
        XCTAssertEqual(try memory.bytes(0x7FFF_F000, 3), [1, 2, 3])
        XCTAssertEqual(try memory.bytes(0x2_0000, 1), [0])               // empty command line: just the NUL
    }

    func testInitrdStaysBelowInitrdAddrMax() throws {
        let memory = TestMemory.flat(8 * mib)
        let result = try LinuxLoader.load(kernel: try image { $0.initrdAddrMax = 0x5F_FFFF }, initrd: initrd,
                                          cmdline: "", vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 8 * mib),
                                          into: memory)
        // Highest byte must be <= 0x5FFFFF: start = alignDown(0x600000 - 0x3005, 4 KiB).
        XCTAssertEqual(result.initrdRange, 0x5F_C000..<0x5F_F005)
    }

    func testInitrdThatDoesNotFit() throws {
        let six = [UInt8](repeating: 0x11, count: Int(6 * mib))
        let error = BootError.initrdDoesNotFit(size: 6 * mib, ceiling: 8 * mib, floor: 0x30_0000)
        assertThrows(error) {
            try LinuxLoader.load(kernel: try image(), initrd: six, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        }
        XCTAssertEqual(error.description, "initramfs (6 MiB, 6291456 bytes) does not fit in guest RAM below 0x800000 "
            + "(free space starts at 0x300000, after the kernel)")
        // Larger than all of low RAM.
        let nine = [UInt8](repeating: 0x11, count: Int(9 * mib))
        assertThrows(.initrdDoesNotFit(size: 9 * mib, ceiling: 8 * mib, floor: 0x30_0000)) {
            try LinuxLoader.load(kernel: try image(), initrd: nine, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        }
        // Exactly the free space fits.
        let five = [UInt8](repeating: 0x11, count: Int(5 * mib))
        let result = try LinuxLoader.load(kernel: try image(), initrd: five, cmdline: "", vcpus: 1,
                                          memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        XCTAssertEqual(result.initrdRange, 0x30_0000..<0x80_0000)
    }

    func testMemoryTooSmallForKernel() throws {
        let error = BootError.memoryTooSmall(needed: 0x30_0000, available: 2 * mib)
        assertThrows(error) {
            try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 2 * mib), into: TestMemory.flat(2 * mib))
        }
        XCTAssertEqual(error.description,
                       "memory too small for kernel (needs 3 MiB of low RAM, guest has 2 MiB below 0x200000)")
        // Less than the 1 MiB the boot structures need.
        assertThrows(.memoryTooSmall(needed: mib, available: 512 * 1024)) {
            try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 512 * 1024), into: TestMemory.flat(512 * 1024))
        }
        // Exactly enough.
        XCTAssertNoThrow(try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: 1,
                                              memoryMap: GuestMemoryMap(ramBytes: 3 * mib),
                                              into: TestMemory.flat(3 * mib)))
    }

    func testKernelRunsAtPrefAddressAndNeedsInitSizeFromThere() throws {
        // Like Linux: LOAD_PHYSICAL_ADDR 16 MiB, init_size 32 MiB -> needs 48 MiB.
        let kernel = try image {
            $0.prefAddress = 0x100_0000
            $0.initSize = 0x200_0000
        }
        assertThrows(.memoryTooSmall(needed: 0x300_0000, available: 32 * mib)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 32 * mib), into: TestMemory.flat(2 * mib))
        }
        // A non-relocatable kernel runs at pref_address too.
        let fixed = try image {
            $0.relocatable = 0
            $0.prefAddress = 0x40_0000
        }
        guard case let .bzImage(bz) = fixed else { return XCTFail("not a bzImage") }
        XCTAssertEqual(try bz.memoryEnd(loadAddress: 0x10_0000), 0x50_0000)
        // A relocatable kernel with a large alignment rounds the load address up.
        let aligned = try image {
            $0.kernelAlignment = 0x100_0000
            $0.prefAddress = 0
        }
        guard case let .bzImage(bz2) = aligned else { return XCTFail("not a bzImage") }
        XCTAssertEqual(try bz2.memoryEnd(loadAddress: 0x10_0000), 0x110_0000)
    }

    func testInitSizeOverflowIsAnError() throws {
        let kernel = try image {
            $0.prefAddress = 0xFFFF_FFFF_FFF0_0000
            $0.initSize = 0x20_0000
        }
        assertThrows(.sizeOverflow(detail: "runtime start 0xfffffffffff00000 + init_size 0x200000")) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        }
    }

    func testCommandLineLimits() throws {
        let kernel = try image { $0.cmdlineSize = 16 }
        let map = GuestMemoryMap(ramBytes: 8 * mib)
        let error = BootError.cmdlineTooLong(length: 17, limit: 16)
        assertThrows(error) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "console=ttyS0 abc", vcpus: 1,
                                 memoryMap: map, into: TestMemory.flat(8 * mib))
        }
        XCTAssertEqual(error.description, "kernel command line is 17 bytes, the kernel accepts at most 16")
        let memory = TestMemory.flat(8 * mib)
        try memory.writeBytes([UInt8](repeating: 0xEE, count: 32), at: GuestAddress(0x2_0000))
        let result = try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "console=ttyS0 ab", vcpus: 1,
                                          memoryMap: map, into: memory)
        XCTAssertEqual(result.cmdlineLength, 16)
        XCTAssertEqual(try memory.bytes(0x2_0000, 18), Array("console=ttyS0 ab".utf8) + [0, 0xEE])
        assertThrows(.cmdlineContainsNUL(offset: 3)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "abc\0def", vcpus: 1, memoryMap: map,
                                 into: TestMemory.flat(8 * mib))
        }
        // UTF-8 bytes count, not characters: 16 characters, 18 bytes.
        assertThrows(.cmdlineTooLong(length: 18, limit: 16)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "root=/dev/vda é¿", vcpus: 1,
                                 memoryMap: map, into: TestMemory.flat(8 * mib))
        }
    }

    func testHugeCmdlineSizeIsCappedByTheSpaceBeforeTheMPTable() throws {
        let kernel = try image { $0.cmdlineSize = 0xFFFF_FFFF }
        let limit = Int(0x9_FC00 - 0x2_0000) - 1
        let long = String(repeating: "a", count: limit + 1)
        assertThrows(.cmdlineTooLong(length: limit + 1, limit: limit)) {
            try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: long, vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        }
    }

    func testEmptyInitrdIsNoInitrd() throws {
        let memory = TestMemory.flat(8 * mib)
        let result = try LinuxLoader.load(kernel: try image(), initrd: [], cmdline: "", vcpus: 1,
                                          memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: memory)
        XCTAssertNil(result.initrdRange)
        XCTAssertEqual(try memory.u32(0x7000 + 0x218), 0)
        XCTAssertEqual(try memory.u32(0x7000 + 0x21C), 0)
        XCTAssertTrue(result.summary.contains("initrd: none"))
    }

    func testVCPUCountLimits() throws {
        for bad in [0, -1, 255, 1000] {
            assertThrows(.invalidVCPUCount(bad)) {
                try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: bad,
                                     memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
            }
        }
        XCTAssertEqual(BootError.invalidVCPUCount(255).description,
                       "cannot boot with 255 vCPUs: the MP table describes 1 to 254")
        let result = try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: 254,
                                          memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: TestMemory.flat(8 * mib))
        XCTAssertEqual(result.vcpus, 254)
    }

    func testWriteIntoAHoleNamesWhatFailed() throws {
        // The map says 8 MiB but only the first 4 MiB are backed: the initramfs lands in the hole.
        let memory = try TestMemory.withHoles([(0, 4 * mib)])
        assertThrows(.guestMemory(what: "initramfs at 0x7fc000",
                                  .outOfRange(address: 0x7F_C000, length: 0x3005))) {
            try LinuxLoader.load(kernel: try image(), initrd: initrd, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: memory)
        }
    }

    func testBootStructuresAreWritten() throws {
        let memory = TestMemory.flat(8 * mib)
        _ = try LinuxLoader.load(kernel: try image(), initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: memory)
        XCTAssertEqual(try memory.bytes(0x500, 48), BootGDT.bytes)
        XCTAssertEqual(try memory.u64(0x510), 0x00AF_9B00_0000_FFFF)
        XCTAssertEqual(try memory.u64(0x9000), 0xA003)
        XCTAssertEqual(try memory.bytes(0x9000, 0x6000), PageTables.bytes)
        XCTAssertEqual(try memory.bytes(0x9_FC00, 4), Array("_MP_".utf8))
    }
}

final class RSDPHandoffTests: XCTestCase {
    let mib = TestMemory.mib

    func testZeroPageCarriesRSDPAddress() throws {
        let memory = TestMemory.flat(8 * mib)
        _ = try LinuxLoader.load(kernel: try KernelImage.parse(BzImageBuilder().build()), initrd: nil, cmdline: "",
                                 vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 8 * mib), rsdpAddress: 0xE0000,
                                 into: memory)
        XCTAssertEqual(try memory.u64(0x7000 + 0x70), 0xE0000)   // boot_params.acpi_rsdp_addr
    }

    func testPVHStartInfoCarriesRSDPAddress() throws {
        let memory = TestMemory.flat(24 * mib)
        _ = try LinuxLoader.load(kernel: try KernelImage.parse(ELFBuilder().build()), initrd: nil, cmdline: "",
                                 vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 24 * mib), rsdpAddress: 0xE0000,
                                 into: memory)
        XCTAssertEqual(try memory.u64(0x6000 + 32), 0xE0000)     // hvm_start_info.rsdp_paddr
    }

    func testWithoutACPIBothAreZero() throws {
        let memory = TestMemory.flat(8 * mib)
        _ = try LinuxLoader.load(kernel: try KernelImage.parse(BzImageBuilder().build()), initrd: nil, cmdline: "",
                                 vcpus: 1, memoryMap: GuestMemoryMap(ramBytes: 8 * mib), into: memory)
        XCTAssertEqual(try memory.u64(0x7000 + 0x70), 0)
    }
}
