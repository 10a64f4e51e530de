import GuestMemory
import XCTest
@testable import Boot

final class BzImageParseTests: XCTestCase {
    func testParsesAValidBzImage() throws {
        let builder = BzImageBuilder()
        let bytes = builder.build()
        guard case let .bzImage(image) = try KernelImage.parse(bytes) else { return XCTFail("not a bzImage") }
        XCTAssertEqual(image.protocolVersion, 0x020F)
        XCTAssertEqual(image.setupSectors, 4)
        XCTAssertEqual(image.payloadOffset, 2560)
        XCTAssertEqual(image.payloadSize, 4096)
        XCTAssertEqual(image.syssize, 256)
        XCTAssertEqual(image.loadFlags, 0x01)
        XCTAssertEqual(image.xloadFlags, 0x03)
        XCTAssertEqual(image.kernelAlignment, 0x20_0000)
        XCTAssertTrue(image.relocatable)
        XCTAssertEqual(image.cmdlineSize, 0x7FF)
        XCTAssertEqual(image.initrdAddrMax, 0x7FFF_FFFF)
        XCTAssertEqual(image.prefAddress, 0x20_0000)
        XCTAssertEqual(image.initSize, 0x10_0000)
        // Header is [0x1F1, 0x202 + 0x6A) = 123 bytes, exactly struct setup_header.
        XCTAssertEqual(image.setupHeader.count, 123)
        XCTAssertEqual(image.setupHeader, Array(bytes[0x1F1..<0x26C]))
        XCTAssertEqual(image.payload.bytes, builder.payload)
        XCTAssertEqual(try KernelImage.parse(bytes).loadedBytes, 4096)
    }

    func testSetupSectsZeroMeansFour() throws {
        var builder = BzImageBuilder()
        builder.setupSects = 0
        guard case let .bzImage(image) = try KernelImage.parse(builder.build()) else { return XCTFail("not a bzImage") }
        XCTAssertEqual(image.setupSectors, 4)
        XCTAssertEqual(image.payloadOffset, 5 * 512)
    }

    func testLargerSetupMovesThePayload() throws {
        var builder = BzImageBuilder()
        builder.setupSects = 39
        guard case let .bzImage(image) = try KernelImage.parse(builder.build()) else { return XCTFail("not a bzImage") }
        XCTAssertEqual(image.payloadOffset, 40 * 512)
        XCTAssertEqual(image.payload.bytes, builder.payload)
    }

    func testEmptyFile() {
        assertThrows(.emptyImage) { try KernelImage.parse([]) }
        XCTAssertEqual(BootError.emptyImage.description, "kernel image is empty (0 bytes)")
    }

    func testTruncatedAtSeveralOffsets() {
        let bytes = BzImageBuilder().build()
        // Before the signatures: the "MZ" start says it was a bzImage.
        assertThrows(.truncated(what: "bzImage boot_flag and \"HdrS\" signature", offset: 0x1FE, length: 8,
                                fileSize: 0x100)) { try KernelImage.parse(Array(bytes[..<0x100])) }
        // Signatures present, header fields cut off.
        assertThrows(.truncated(what: "bzImage setup header", offset: 0x1F1, length: 0x73, fileSize: 0x210)) {
            try KernelImage.parse(Array(bytes[..<0x210]))
        }
        // Header complete, setup code cut off.
        assertThrows(.truncated(what: "real-mode setup code (4 setup sectors + boot sector)", offset: 0, length: 2560,
                                fileSize: 0x800)) { try KernelImage.parse(Array(bytes[..<0x800])) }
        // Setup complete, protected-mode kernel cut off.
        let cut = BootError.truncated(what: "protected-mode kernel (syssize 0x100 paragraphs)", offset: 2560,
                                      length: 4096, fileSize: 2660)
        assertThrows(cut) { try KernelImage.parse(Array(bytes[..<2660])) }
        XCTAssertEqual(cut.description, "kernel image is truncated: protected-mode kernel (syssize 0x100 paragraphs) "
            + "needs bytes [0xa00, 0x1a00) but the file is only 2660 bytes")
        // One byte short.
        assertThrows(.truncated(what: "protected-mode kernel (syssize 0x100 paragraphs)", offset: 2560, length: 4096,
                                fileSize: UInt64(bytes.count - 1))) { try KernelImage.parse(Array(bytes.dropLast())) }
    }

    func testTrailingBytesAfterSyssizeAreIgnored() throws {
        let builder = BzImageBuilder()
        guard case let .bzImage(image) = try KernelImage.parse(builder.build() + [1, 2, 3, 4]) else {
            return XCTFail("not a bzImage")
        }
        XCTAssertEqual(image.payloadSize, 4096)
    }

    func testGarbageIsNotAKernel() {
        assertThrows(.notAKernel(detail: "boot_flag at 0x1fe is 0x4141 (want 0xaa55), header at 0x202 is "
                + "0x41414141 (want 0x53726448 \"HdrS\")")) {
            try KernelImage.parse([UInt8](repeating: 0x41, count: 4096))
        }
        assertThrows(.notAKernel(detail: "the file is only 10 bytes; a bzImage header needs 518")) {
            try KernelImage.parse(Array("#!/bin/sh\n".utf8))
        }
        XCTAssertEqual(BootError.notAKernel(detail: "x").description,
                       "not a kernel: no bzImage signature and not an ELF file (x)")
    }

    func testSignatureNeedsBothBootFlagAndHdrS() {
        var builder = BzImageBuilder()
        builder.magic = 0x5372_6449
        assertThrows(.notAKernel(detail: "boot_flag at 0x1fe is 0xaa55 (want 0xaa55), header at 0x202 is "
                + "0x53726449 (want 0x53726448 \"HdrS\")")) { try KernelImage.parse(builder.build()) }
        builder = BzImageBuilder()
        builder.bootFlag = 0
        XCTAssertThrowsError(try KernelImage.parse(builder.build())) { error in
            guard case .notAKernel = error as? BootError else { return XCTFail("\(error)") }
        }
    }

    func testProtocol205IsTooOld() {
        var builder = BzImageBuilder()
        builder.version = 0x0205
        assertThrows(.protocolTooOld(version: 0x0205)) { try KernelImage.parse(builder.build()) }
        XCTAssertEqual(BootError.protocolTooOld(version: 0x0205).description,
                       "bzImage boot protocol 2.05 is too old: at least 2.06 is required")
    }

    func testWithoutXLFKernel64() {
        var builder = BzImageBuilder()
        builder.xloadflags = 0x02
        assertThrows(.not64BitCapable(detail: "xloadflags 0x2 lacks XLF_KERNEL_64 (bit 0): no 64-bit entry point "
                + "at 0x200 (a 32-bit kernel?)")) { try KernelImage.parse(builder.build()) }
    }

    func testProtocolBeforeXloadflagsCannotProve64Bit() {
        var builder = BzImageBuilder()
        builder.version = 0x020B
        assertThrows(.not64BitCapable(detail: "boot protocol 2.11 predates xloadflags (2.12), so XLF_KERNEL_64 "
                + "cannot be checked")) { try KernelImage.parse(builder.build()) }
    }

    func testZImageIsRejected() {
        var builder = BzImageBuilder()
        builder.loadflags = 0
        assertThrows(.invalidImage(detail: "loadflags LOADED_HIGH (bit 0) is clear: a zImage loads at 0x10000 "
                + "and is not supported")) { try KernelImage.parse(builder.build()) }
    }

    func testShortOrNegativeHeaderLength() {
        var builder = BzImageBuilder()
        builder.jump = 0x10
        assertThrows(.invalidImage(detail: "setup header ends at 0x212 (jump byte 0x10 at 0x201), before init_size "
                + "at 0x260")) { try KernelImage.parse(builder.build()) }
        builder.jump = 0x80                      // -128: points before 0x202
        assertThrows(.invalidImage(detail: "setup header ends at 0x182 (jump byte 0x80 at 0x201), before init_size "
                + "at 0x260")) { try KernelImage.parse(builder.build()) }
    }

    func testHeaderCopyIsCappedAt144Bytes() throws {
        var builder = BzImageBuilder()
        builder.jump = 0x7F                      // 0x281 = 0x1F1 + 144
        guard case let .bzImage(image) = try KernelImage.parse(builder.build()) else { return XCTFail("not a bzImage") }
        XCTAssertEqual(image.setupHeader.count, 144)
    }

    func testZeroSyssize() {
        var builder = BzImageBuilder()
        builder.syssize = 0
        assertThrows(.invalidImage(detail: "syssize is 0: no protected-mode kernel")) {
            try KernelImage.parse(builder.build())
        }
    }

    func testHugeSyssizeIsTruncationNotOverflow() {
        var builder = BzImageBuilder()
        builder.syssize = 0xFFFF_FFFF
        assertThrows(.truncated(what: "protected-mode kernel (syssize 0xffffffff paragraphs)", offset: 2560,
                                length: 0xF_FFFF_FFF0, fileSize: 2560 + 4096)) { try KernelImage.parse(builder.build()) }
    }

    func testRelocatableKernelNeedsPowerOfTwoAlignment() {
        var builder = BzImageBuilder()
        builder.kernelAlignment = 0x30_0000
        assertThrows(.invalidImage(detail: "kernel_alignment 0x300000 of a relocatable kernel is not a power of two")) {
            try KernelImage.parse(builder.build())
        }
        builder.kernelAlignment = 0
        XCTAssertThrowsError(try KernelImage.parse(builder.build()))
        builder.relocatable = 0                  // not relocatable: alignment unused
        XCTAssertNoThrow(try KernelImage.parse(builder.build()))
    }

    /// The lab kernel, when this machine has it: a real bzImage must parse
    /// and its numbers must match what `xxd` shows in its header.
    func testRealLabKernelWhenPresent() throws {
        // ../shared beside the repository (SWIFTVMM_SHARED elsewhere), as scripts/assets finds it.
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shared = ProcessInfo.processInfo.environment["SWIFTVMM_SHARED"] ?? repo.deletingLastPathComponent().appendingPathComponent("shared").path
        let path = shared + "/lab/bzImage-6.12.117-lab-iommufd"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw XCTSkip("lab kernel not present at \(path); the synthetic images cover the parser")
        }
        guard case let .bzImage(image) = try KernelImage.parse([UInt8](data)) else { return XCTFail("not a bzImage") }
        XCTAssertEqual(image.protocolVersion, 0x020F)
        XCTAssertEqual(image.setupSectors, 39)
        XCTAssertEqual(image.payloadSize, UInt64(data.count - 40 * 512))
        XCTAssertEqual(image.prefAddress, 0x100_0000)
        XCTAssertEqual(image.kernelAlignment, 0x20_0000)
        XCTAssertEqual(image.initSize, 0x24D_1000)
        XCTAssertEqual(image.cmdlineSize, 0x7FF)
        // Runs at 16 MiB (LOAD_PHYSICAL_ADDR) and needs init_size from there.
        XCTAssertEqual(try image.memoryEnd(loadAddress: 0x10_0000), 0x100_0000 + 0x24D_1000)

        // Loads into 128 MiB (backed only where the loader writes) ...
        let mib = TestMemory.mib
        let memory = try TestMemory.withHoles([(0, 12 * mib), (120 * mib, 128 * mib)])
        let result = try LinuxLoader.load(kernel: .bzImage(image), initrd: [0x30, 0x37, 0x30, 0x37],
                                          cmdline: "console=ttyS0", vcpus: 2,
                                          memoryMap: GuestMemoryMap(ramBytes: 128 * mib), into: memory)
        XCTAssertEqual(result.entryPoint, 0x10_0200)
        XCTAssertEqual(try memory.bytes(0x10_0000, 64), Array(data[(40 * 512)..<(40 * 512 + 64)]))
        XCTAssertEqual(try memory.u16(0x7000 + 0x206), 0x020F)
        // ... and not into 32 MiB.
        assertThrows(.memoryTooSmall(needed: 0x34D_1000, available: 32 * mib)) {
            try LinuxLoader.load(kernel: .bzImage(image), initrd: nil, cmdline: "", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 32 * mib), into: memory)
        }
        XCTAssertEqual(BootError.memoryTooSmall(needed: 0x34D_1000, available: 32 * mib).description,
                       "memory too small for kernel (needs 53 MiB of low RAM, guest has 32 MiB below 0x2000000)")
    }
}
