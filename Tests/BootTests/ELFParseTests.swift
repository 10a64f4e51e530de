import XCTest
@testable import Boot

final class ELFParseTests: XCTestCase {
    func parseELF(_ builder: ELFBuilder) throws -> ELFKernel {
        guard case let .elf(elf) = try KernelImage.parse(builder.build()) else {
            throw XCTSkip("unreachable: not parsed as ELF")
        }
        return elf
    }

    func testParsesPVHKernelWith4ByteNote() throws {
        let builder = ELFBuilder()
        let elf = try parseELF(builder)
        XCTAssertEqual(elf.pvhEntry, 0x100_0010)
        XCTAssertEqual(elf.elfEntry, 0xFFFF_FFFF_8100_0000)
        XCTAssertEqual(elf.segments.map(\.physicalAddress), [0x100_0000, 0x100_4000])
        XCTAssertEqual(elf.segments.map(\.fileSize), [0x300, 4])
        XCTAssertEqual(elf.segments.map(\.memorySize), [0x2000, 0x1000])
        XCTAssertEqual(elf.segments[0].data.bytes, builder.segments[0].data)
        XCTAssertEqual(elf.lowestAddress, 0x100_0000)
        XCTAssertEqual(elf.highestEnd, 0x100_5000)
        XCTAssertEqual(try KernelImage.parse(builder.build()).loadedBytes, 0x304)
    }

    func testEightByteNoteDescriptor() throws {
        var builder = ELFBuilder()
        builder.notes = [ELFBuilder.pvhNote64(0x100_4002)]
        XCTAssertEqual(try parseELF(builder).pvhEntry, 0x100_4002)
    }

    func testNoteAfterOtherNotes() throws {
        var builder = ELFBuilder()
        builder.notes = [
            .init(name: Array("GNU\0".utf8), type: 3, desc: [UInt8](repeating: 0xAB, count: 20)),
            .init(name: Array("Linux\0".utf8), type: 0x100, desc: [1, 2, 3]),
            .init(name: Array("Xen\0".utf8), type: 6, desc: Array("linux\0".utf8)),   // XEN_ELFNOTE_GUEST_OS
            ELFBuilder.pvhNote(0x100_0100),
        ]
        XCTAssertEqual(try parseELF(builder).pvhEntry, 0x100_0100)
    }

    func testSegmentsAreSortedByAddress() throws {
        var builder = ELFBuilder()
        builder.segments.reverse()
        XCTAssertEqual(try parseELF(builder).segments.map(\.index), [1, 0])
    }

    func testNoteOnlyInSectionHeaders() throws {
        var builder = ELFBuilder()
        builder.notesOnlyInSections = true
        XCTAssertEqual(try parseELF(builder).pvhEntry, 0x100_0010)
    }

    func testWithoutPVHNote() {
        var builder = ELFBuilder()
        builder.notes = [.init(name: Array("GNU\0".utf8), type: 3, desc: [1, 2, 3, 4])]
        assertThrows(.noPVHEntry) { try KernelImage.parse(builder.build()) }
        builder.notes = []
        assertThrows(.noPVHEntry) { try KernelImage.parse(builder.build()) }
        XCTAssertEqual(BootError.noPVHEntry.description,
                       "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build with CONFIG_PVH=y")
    }

    func testXenNoteWithWrongNameIsNotPVH() {
        var builder = ELFBuilder()
        builder.notes = [.init(name: Array("Xem\0".utf8), type: 18, desc: .le(UInt32(0x100_0010)))]
        assertThrows(.noPVHEntry) { try KernelImage.parse(builder.build()) }
    }

    func testBadNoteDescriptorSize() {
        var builder = ELFBuilder()
        builder.notes = [.init(name: Array("Xen\0".utf8), type: 18, desc: [0x10, 0x00])]
        assertThrows(.invalidPVHNote(detail: "descriptor is 2 bytes, expected 4 or 8")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testEntryOutsideSegments() {
        var builder = ELFBuilder()
        builder.notes = [ELFBuilder.pvhNote(0x100_3000)]        // in the gap between the segments
        assertThrows(.invalidPVHNote(detail: "entry 0x1003000 is not inside any PT_LOAD segment")) {
            try KernelImage.parse(builder.build())
        }
        builder.notes = [ELFBuilder.pvhNote64(0x1_0000_0010)]
        assertThrows(.invalidPVHNote(detail: "entry 0x100000010 is above 4 GiB; PVH starts in 32-bit mode")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testSegmentInReservedLowMemory() {
        var builder = ELFBuilder()
        builder.segments[0].paddr = 0x9_0000
        builder.notes = [ELFBuilder.pvhNote(0x100_4000)]
        let error = BootError.segmentInReservedLowMemory(index: 0, start: 0x9_0000, end: 0x9_2000)
        assertThrows(error) { try KernelImage.parse(builder.build()) }
        XCTAssertEqual(error.description, "ELF PT_LOAD segment 0 at [0x90000, 0x92000) overlaps the reserved low "
            + "memory below 0x100000 (boot structures, EBDA, BIOS area)")
    }

    func testFileSizeLargerThanMemorySize() {
        var builder = ELFBuilder()
        builder.segments[1].memsz = 2
        assertThrows(.invalidImage(detail: "PT_LOAD segment 1 has p_filesz 0x4 larger than p_memsz 0x2")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testOverlappingSegments() {
        var builder = ELFBuilder()
        builder.segments[1].paddr = 0x100_1000
        assertThrows(.invalidImage(detail: "PT_LOAD segments 0 [0x1000000, 0x1002000) and 1 [0x1001000, 0x1002000) "
                + "overlap")) { try KernelImage.parse(builder.build()) }
    }

    func testSegmentAddressOverflow() {
        var builder = ELFBuilder()
        builder.segments[1].paddr = 0xFFFF_FFFF_FFFF_F000
        builder.segments[1].memsz = 0x2000
        assertThrows(.sizeOverflow(detail: "PT_LOAD segment 1 at 0xfffffffffffff000 + p_memsz 0x2000")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testSegmentDataPastEndOfFile() {
        var bytes = ELFBuilder().build()
        // Program header 1's p_filesz (at 64 + 56 + 32) claims 1 MiB.
        bytes.put(UInt64(0x10_0000), at: 64 + 56 + 32)
        bytes.put(UInt64(0x10_0000), at: 64 + 56 + 40)
        let offset = bytes.le(UInt64.self, at: 64 + 56 + 8)
        assertThrows(.truncated(what: "PT_LOAD segment 1 data", offset: offset, length: 0x10_0000,
                                fileSize: UInt64(bytes.count))) { try KernelImage.parse(bytes) }
    }

    func testProgramHeaderTablePastEndOfFile() {
        var bytes = ELFBuilder().build()
        bytes.put(UInt16(200), at: 56)           // e_phnum
        assertThrows(.truncated(what: "ELF program header table (200 entries)", offset: 64, length: 200 * 56,
                                fileSize: UInt64(bytes.count))) { try KernelImage.parse(bytes) }
    }

    func testTruncatedELFHeader() {
        let bytes = Array(ELFBuilder().build()[..<30])
        assertThrows(.truncated(what: "ELF header", offset: 0, length: 64, fileSize: 30)) {
            try KernelImage.parse(bytes)
        }
    }

    func testWrongClassMachineAndType() {
        var builder = ELFBuilder()
        builder.elfClass = 1
        assertThrows(.invalidImage(detail: "ELF class 1 is not ELFCLASS64 (2): only a 64-bit vmlinux boots")) {
            try KernelImage.parse(builder.build())
        }
        builder = ELFBuilder()
        builder.machine = 183                    // EM_AARCH64
        assertThrows(.invalidImage(detail: "ELF machine 183 is not x86-64 (EM_X86_64, 62)")) {
            try KernelImage.parse(builder.build())
        }
        builder = ELFBuilder()
        builder.type = 3                         // ET_DYN
        assertThrows(.invalidImage(detail: "ELF type 3 is not an executable (ET_EXEC, 2)")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testNoLoadSegments() {
        var builder = ELFBuilder()
        builder.segments = []
        assertThrows(.invalidImage(detail: "ELF file has no non-empty PT_LOAD segments")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testNoteRunningPastItsSegmentStopsTheWalk() {
        var bytes = ELFBuilder().build()
        // The note header sits right after the program headers (64 + 3 * 56).
        bytes.put(UInt32(0xFFFF_FFF0), at: 64 + 3 * 56)   // namesz
        assertThrows(.noPVHEntry) { try KernelImage.parse(bytes) }
    }
}
