import Foundation
import GuestMemory
import TestFakes
import XCTest
@testable import Boot

/// newc archives built by hand (the layout of buffer-format.rst), and what
/// `Initramfs.validate` says about them and about things that are not one.
final class InitramfsTests: XCTestCase {
    /// One newc entry: header, NUL-terminated name padded to 4, data padded to 4.
    static func entry(_ name: String, _ data: [UInt8] = [], magic: String = "070701", nameSize: Int? = nil,
                      fileSize: Int? = nil) -> [UInt8] {
        let nameBytes = Array(name.utf8) + [0]
        let fields = [1, 0o100644, 0, 0, 1, 0, fileSize ?? data.count, 0, 0, 0, 0, nameSize ?? nameBytes.count, 0]
        var out = Array(magic.utf8)
        for f in fields { out += Array(String(format: "%08X", f).utf8) }
        out += nameBytes
        while out.count % 4 != 0 { out.append(0) }
        out += data
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    static func archive(_ files: [(String, [UInt8])]) -> [UInt8] {
        files.flatMap { entry($0.0, $0.1) } + entry("TRAILER!!!")
    }

    func detail(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let got = try Initramfs.validate(bytes)
            XCTFail("accepted: \(got)", file: file, line: line)
            return ""
        } catch let BootError.invalidInitramfs(detail) {
            return detail
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return ""
        }
    }

    func testArchivesOneAfterAnotherWithZeroPadding() throws {
        let first = Self.archive([("init", Array("#!/bin/sh\n".utf8)), ("bin", []), ("bin/busybox", [1, 2, 3])])
        XCTAssertEqual(try Initramfs.validate(first), [.cpio(entries: 3)])
        // A microcode archive, padding, then a compressed one: as Debian's initrds are.
        let gz: [UInt8] = [0x1F, 0x8B, 0x08, 0x00] + [UInt8](repeating: 0xAB, count: 100)
        let both = first + [UInt8](repeating: 0, count: 512) + gz
        XCTAssertEqual(try Initramfs.validate(both), [.cpio(entries: 3), .compressed("gzip")])
        XCTAssertEqual(try Initramfs.validate(both).map(\.description), ["cpio (3 entries)", "gzip-compressed cpio"])
        XCTAssertEqual(try Initramfs.validate(first + first), [.cpio(entries: 3), .cpio(entries: 3)])
        for (magic, name) in [([0x28, 0xB5, 0x2F, 0xFD], "zstd"), ([0xFD, 0x37, 0x7A, 0x58], "xz"),
                              ([0x42, 0x5A, 0x68, 0x39], "bzip2"), ([0x5D, 0x00, 0x00, 0x80], "lzma"),
                              ([0x02, 0x21, 0x4C, 0x18], "lz4"), ([0x89, 0x4C, 0x5A, 0x4F], "lzo")] as [([UInt8], String)] {
            XCTAssertEqual(try Initramfs.validate(magic + [1, 2, 3]), [.compressed(name)])
        }
        // The checksum variant, and an archive that ends at an entry without a trailer.
        XCTAssertEqual(try Initramfs.validate(Self.entry("a", [7], magic: "070702")), [.cpio(entries: 1)])
        XCTAssertEqual(try Initramfs.validate([]), [])
        XCTAssertEqual(try Initramfs.validate([0, 0, 0, 0]), [])
    }

    func testWhatIsWrongIsNamedWithItsOffset() {
        XCTAssertEqual(detail([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]),
                       "byte 0 starts with 01 02 03 04 05 06: neither a cpio archive (\"070701\", on a 4-byte boundary) "
                       + "nor a compressed one (gzip, bzip2, lzma, xz, lzo, lz4, zstd)")
        // A cpio archive must start on a 4-byte boundary, as the kernel requires.
        XCTAssertTrue(detail([0] + Self.archive([("a", [])])).hasPrefix("byte 1 starts with 30 37 30 37 30 31"))
        let valid = Self.archive([("a", [1])])
        XCTAssertTrue(detail(valid + [0x55]).hasPrefix("byte \(valid.count) starts with 55"))
        XCTAssertTrue(detail(Self.entry("x", magic: "070707")).contains("old portable cpio format"))
        XCTAssertTrue(detail(Self.entry("x", magic: "070799")).hasPrefix("cpio entry 1 at byte 0: no cpio magic"))
        XCTAssertTrue(detail(Array(Self.entry("x").prefix(60))).contains("header is cut off"))
        let second = Self.entry("a", [1, 2, 3, 4])
        XCTAssertEqual(detail(second + Self.entry("big", fileSize: 1 << 20)),
                       "cpio entry 2 at byte \(second.count): \"big\" has 1048576 bytes of data, past the end of the file "
                       + "(\(second.count + 116) bytes)")
        XCTAssertTrue(detail(Self.entry("x", nameSize: 0)).contains("name size 0"))
        XCTAssertTrue(detail(Self.entry("x", nameSize: 5000)).contains("name size 5000"))
        XCTAssertTrue(detail(Self.entry("abc", nameSize: 3)).contains("does not end with a NUL"))
        var notHex = Self.entry("x")
        notHex[6 + 8 * 6] = UInt8(ascii: "g")
        XCTAssertTrue(detail(notHex).contains("header field filesize is not 8 hexadecimal digits"))
    }

    /// Random and mutated archives: an answer or a `BootError` naming an
    /// offset, never a trap; and the mutations reach every kind of answer.
    func testMutatedArchivesNeverTrap() {
        var rng = SplitMix64(seed: 0xC910_0701)
        let seed = Self.archive([("init", Array(repeating: 0x41, count: 37)), ("dev", []), ("etc/x", [1, 2])])
        var accepted = 0, refused = 0
        for i in 0..<3000 {
            var input: [UInt8]
            if i % 3 == 0 {
                input = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                input = seed
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    input[Int.random(in: 0..<input.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                if i % 3 == 2 { input = Array(input.prefix(Int.random(in: 0...input.count, using: &rng))) }
            }
            do { _ = try Initramfs.validate(input); accepted += 1 } catch let BootError.invalidInitramfs(detail) {
                XCTAssertTrue(detail.hasPrefix("byte ") || detail.hasPrefix("cpio entry "), detail)
                refused += 1
            } catch {
                XCTFail("unexpected error \(error)")
            }
        }
        XCTAssertGreaterThan(accepted, 50)
        XCTAssertGreaterThan(refused, 1000)
    }

    /// The memory `swiftvmm check` loads into: RAM's layout, nothing kept.
    func testDiscardingMemoryHasRAMsLayoutAndKeepsNothing() throws {
        let map = GuestMemoryMap(ramBytes: 64 << 20)
        let m = DiscardingGuestMemory(map: map)
        XCTAssertTrue(m.contains(GuestAddress(0), length: 64 << 20))
        XCTAssertFalse(m.contains(GuestAddress((64 << 20) - 4), length: 8))
        XCTAssertFalse(m.contains(GuestAddress(UInt64.max - 2), length: 8))
        try [UInt8](repeating: 0xFF, count: 16).withUnsafeBytes { try m.write($0, at: GuestAddress(0x1000)) }
        var back = [UInt8](repeating: 1, count: 16)
        try back.withUnsafeMutableBytes { try m.read(into: $0, at: GuestAddress(0x1000)) }
        XCTAssertEqual(back, [UInt8](repeating: 0, count: 16))
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 16).withUnsafeBytes {
            try m.write($0, at: GuestAddress((64 << 20) - 8))
        })
        // The loader refuses, in it, what it refuses in real RAM.
        let image = try KernelImage.parse(BzImageBuilder().build())
        XCTAssertNoThrow(try LinuxLoader.load(kernel: image, initrd: [1, 2, 3], cmdline: "console=ttyS0", vcpus: 2,
                                              memoryMap: map, into: m))
        let small = GuestMemoryMap(ramBytes: 512 << 10)
        XCTAssertThrowsError(try LinuxLoader.load(kernel: image, initrd: nil, cmdline: "", vcpus: 1, memoryMap: small,
                                                  into: DiscardingGuestMemory(map: small)))
    }
}
