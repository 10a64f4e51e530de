import XCTest
import GuestMemory
@testable import Boot

/// Little-endian byte helpers for building images in tests.
extension Array where Element == UInt8 {
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { raw in
            for i in 0..<raw.count { self[offset + i] = raw[i] }
        }
    }

    func le<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        Swift.withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}

/// A synthetic bzImage with a boot protocol 2.15 header, built field by field
/// from boot.rst's offset table.
struct BzImageBuilder {
    var version: UInt16 = 0x020F
    var setupSects: UInt8 = 4
    var loadflags: UInt8 = 0x01                 // LOADED_HIGH
    var xloadflags: UInt16 = 0x03               // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    var jump: UInt8 = 0x6A                      // header ends at 0x26C, as in Linux 6.x
    var kernelAlignment: UInt32 = 0x20_0000
    var relocatable: UInt8 = 1
    var cmdlineSize: UInt32 = 0x7FF
    var initrdAddrMax: UInt32 = 0x7FFF_FFFF
    var prefAddress: UInt64 = 0x20_0000
    var initSize: UInt32 = 0x10_0000
    var payload: [UInt8] = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
    var syssize: UInt32?                        // nil: payload.count / 16
    var bootFlag: UInt16 = 0xAA55
    var magic: UInt32 = 0x5372_6448             // "HdrS"

    var setupSize: Int { (Int(setupSects == 0 ? 4 : setupSects) + 1) * 512 }

    func build() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: setupSize)
        b[0] = 0x4D; b[1] = 0x5A                // "MZ" like an EFI-stub bzImage
        b[0x1F1] = setupSects
        b.put(syssize ?? UInt32(payload.count / 16), at: 0x1F4)
        b.put(UInt16(0xFFFF), at: 0x1FA)        // vid_mode "normal"
        b.put(bootFlag, at: 0x1FE)
        b[0x200] = 0xEB
        b[0x201] = jump
        b.put(magic, at: 0x202)
        b.put(version, at: 0x206)
        b[0x211] = loadflags
        b.put(UInt32(0x10_0000), at: 0x214)     // code32_start
        b.put(initrdAddrMax, at: 0x22C)
        b.put(kernelAlignment, at: 0x230)
        b[0x234] = relocatable
        b[0x235] = 21                           // min_alignment
        b.put(xloadflags, at: 0x236)
        b.put(cmdlineSize, at: 0x238)
        b.put(prefAddress, at: 0x258)
        b.put(initSize, at: 0x260)
        b.put(UInt32(0x1234), at: 0x264)        // handover_offset
        b.put(UInt32(0x5678), at: 0x268)        // kernel_info_offset
        return b + payload
    }
}

/// A synthetic ELF64 x86-64 executable: header, program headers, one PT_NOTE
/// (optional), the segment data, and (optionally) a section header table
/// describing the notes as SHT_NOTE.
struct ELFBuilder {
    struct Segment {
        var paddr: UInt64
        var data: [UInt8]
        var memsz: UInt64
    }
    struct Note {
        var name: [UInt8]
        var type: UInt32
        var desc: [UInt8]
    }

    var elfClass: UInt8 = 2
    var machine: UInt16 = 62
    var type: UInt16 = 2
    var segments: [Segment] = [
        Segment(paddr: 0x100_0000, data: (0..<0x300).map { UInt8(truncatingIfNeeded: $0 ^ 0x5A) }, memsz: 0x2000),
        Segment(paddr: 0x100_4000, data: [0xC3, 0xC3, 0xC3, 0xC3], memsz: 0x1000),
    ]
    var notes: [Note] = [ELFBuilder.pvhNote(0x100_0010)]
    /// Describe the notes only in the section header table, not in a PT_NOTE.
    var notesOnlyInSections = false

    static func pvhNote(_ entry: UInt32) -> Note {
        Note(name: Array("Xen\0".utf8), type: 18, desc: .le(entry))
    }

    static func pvhNote64(_ entry: UInt64) -> Note {
        Note(name: Array("Xen\0".utf8), type: 18, desc: .le(entry))
    }

    static func pad4(_ bytes: [UInt8]) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
    }

    func noteBytes() -> [UInt8] {
        var out: [UInt8] = []
        for note in notes {
            out += .le(UInt32(note.name.count)) + .le(UInt32(note.desc.count)) + .le(note.type)
            out += Self.pad4(note.name) + Self.pad4(note.desc)
        }
        return out
    }

    func build() -> [UInt8] {
        let notes = noteBytes()
        let hasNotePhdr = !notes.isEmpty && !notesOnlyInSections
        let phnum = segments.count + (hasNotePhdr ? 1 : 0)
        let phoff = 64
        let notesOffset = phoff + 56 * phnum
        var dataOffset = (notesOffset + notes.count + 15) & ~15
        var out = [UInt8](repeating: 0, count: dataOffset)
        out[0] = 0x7F; out[1] = 0x45; out[2] = 0x4C; out[3] = 0x46
        out[4] = elfClass
        out[5] = 1                               // ELFDATA2LSB
        out[6] = 1                               // EV_CURRENT
        out.put(type, at: 16)
        out.put(machine, at: 18)
        out.put(UInt32(1), at: 20)
        out.put(UInt64(0xFFFF_FFFF_8100_0000), at: 24)  // e_entry (virtual)
        out.put(UInt64(phoff), at: 32)
        out.put(UInt16(64), at: 52)
        out.put(UInt16(56), at: 54)
        out.put(UInt16(phnum), at: 56)
        out.put(UInt16(64), at: 58)
        for (i, byte) in notes.enumerated() { out[notesOffset + i] = byte }

        var ph = phoff
        for segment in segments {
            out.put(UInt32(1), at: ph)           // PT_LOAD
            out.put(UInt32(7), at: ph + 4)       // RWX
            out.put(UInt64(dataOffset), at: ph + 8)
            out.put(segment.paddr | 0xFFFF_FFFF_8000_0000, at: ph + 16)
            out.put(segment.paddr, at: ph + 24)
            out.put(UInt64(segment.data.count), at: ph + 32)
            out.put(segment.memsz, at: ph + 40)
            out.put(UInt64(0x1000), at: ph + 48)
            out += segment.data
            dataOffset += segment.data.count
            ph += 56
        }
        if hasNotePhdr {
            out.put(UInt32(4), at: ph)           // PT_NOTE
            out.put(UInt64(notesOffset), at: ph + 8)
            out.put(UInt64(notes.count), at: ph + 32)
            out.put(UInt64(notes.count), at: ph + 40)
            out.put(UInt64(4), at: ph + 48)
        }
        if notesOnlyInSections {
            // Section 0 is the null section; section 1 the SHT_NOTE.
            let shoff = (out.count + 7) & ~7
            out += [UInt8](repeating: 0, count: shoff - out.count + 128)
            out.put(UInt64(shoff), at: 40)
            out.put(UInt16(2), at: 60)
            out.put(UInt32(7), at: shoff + 64 + 4)
            out.put(UInt64(notesOffset), at: shoff + 64 + 24)
            out.put(UInt64(notes.count), at: shoff + 64 + 32)
        }
        return out
    }
}

enum TestMemory {
    static let mib: UInt64 = 1 << 20

    /// Guest memory backing exactly `[0, size)`.
    static func flat(_ size: UInt64) -> ArrayGuestMemory {
        ArrayGuestMemory(size: Int(size))
    }

    /// Low RAM of `map` backed only in the given ranges (holes elsewhere).
    static func withHoles(_ ranges: [(UInt64, UInt64)]) throws -> ArrayGuestMemory {
        try ArrayGuestMemory(regions: ranges.map { (base: $0.0, size: Int($0.1 - $0.0)) })
    }
}

extension GuestMemoryAccess {
    func bytes(_ address: UInt64, _ count: Int) throws -> [UInt8] {
        try readBytes(at: GuestAddress(address), count: count)
    }

    func u8(_ address: UInt64) throws -> UInt8 { try readInteger(UInt8.self, at: GuestAddress(address)) }
    func u16(_ address: UInt64) throws -> UInt16 { try readInteger(UInt16.self, at: GuestAddress(address)) }
    func u32(_ address: UInt64) throws -> UInt32 { try readInteger(UInt32.self, at: GuestAddress(address)) }
    func u64(_ address: UInt64) throws -> UInt64 { try readInteger(UInt64.self, at: GuestAddress(address)) }
}

/// Runs `body`, expecting it to throw exactly `expected`.
func assertThrows<T>(_ expected: BootError, file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected \(expected), got success", file: file, line: line)
    } catch let error as BootError {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}
