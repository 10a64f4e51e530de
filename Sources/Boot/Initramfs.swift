/// What the kernel unpacks from an initramfs (Documentation/driver-api/
/// early-userspace/buffer-format.rst, init/initramfs.c): cpio archives in the
/// "newc" format ("070701", or "070702" with checksums), each possibly
/// compressed, one after another, with zero bytes between them. An archive
/// starts on a 4-byte boundary of the file. Uncompressed archives are walked
/// entry by entry; a compressed one is recognised by its magic, as the kernel
/// does (lib/decompress.c), and, since its length is only known once
/// decompressed, taken to run to the end of the file.
public enum Initramfs {
    public enum Archive: Equatable, Sendable, CustomStringConvertible {
        /// An uncompressed cpio archive with this many entries (the trailer
        /// not counted).
        case cpio(entries: Int)
        /// A compressed archive: gzip, bzip2, lzma, xz, lzo, lz4 or zstd.
        case compressed(String)

        public var description: String {
            switch self {
            case let .cpio(n): return "cpio (\(n) entr\(n == 1 ? "y" : "ies"))"
            case let .compressed(name): return "\(name)-compressed cpio"
            }
        }
    }

    /// The first two bytes of each format the kernel can decompress
    /// (lib/decompress.c `compressed_formats`).
    static let compressionMagics: [(magic: [UInt8], name: String)] = [
        ([0x1F, 0x8B], "gzip"), ([0x1F, 0x9E], "gzip"), ([0x42, 0x5A], "bzip2"), ([0x5D, 0x00], "lzma"),
        ([0xFD, 0x37], "xz"), ([0x89, 0x4C], "lzo"), ([0x02, 0x21], "lz4"), ([0x28, 0xB5], "zstd"),
    ]

    /// newc header: magic[6] then 13 fields of 8 hex digits.
    static let headerSize = 110
    static let fieldNames = ["ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
                             "rdevmajor", "rdevminor", "namesize", "check"]
    /// The kernel ignores names longer than PATH_MAX.
    static let maxNameSize = 4096
    static let trailer = Array("TRAILER!!!".utf8) + [0]

    /// The archives in `bytes`, in order. Throws `BootError.invalidInitramfs`
    /// naming the byte offset and what is wrong there: neither cpio nor a
    /// known compression, an old cpio format, a broken or truncated entry.
    /// An empty file holds no archive (the kernel boots without one).
    public static func validate(_ bytes: [UInt8]) throws -> [Archive] {
        var archives: [Archive] = []
        var at = 0
        while at < bytes.count {
            if bytes[at] == 0 { at += 1; continue }
            if bytes[at] == UInt8(ascii: "0") && at % 4 == 0 {
                let (entries, end) = try walkCPIO(bytes, from: at)
                archives.append(.cpio(entries: entries))
                at = end
                continue
            }
            if let m = compressionMagics.first(where: { bytes[at...].starts(with: $0.magic) }) {
                archives.append(.compressed(m.name))
                return archives
            }
            let first = bytes[at..<min(at + 6, bytes.count)].map { hex2($0) }.joined(separator: " ")
            throw BootError.invalidInitramfs(detail: "byte \(at) starts with \(first): neither a cpio archive "
                + "(\"070701\", on a 4-byte boundary) nor a compressed one (gzip, bzip2, lzma, xz, lzo, lz4, zstd)")
        }
        return archives
    }

    /// Walks one newc archive from `start` to just past its trailer (or to the
    /// end of the file, at an entry boundary): its entry count and end.
    static func walkCPIO(_ bytes: [UInt8], from start: Int) throws -> (entries: Int, end: Int) {
        var at = start
        var entries = 0
        while at < bytes.count {
            func bad(_ what: String) -> BootError {
                .invalidInitramfs(detail: "cpio entry \(entries + 1) at byte \(at): \(what)")
            }
            guard bytes.count - at >= headerSize else {
                throw bad("the \(headerSize)-byte header is cut off by the end of the file (\(bytes.count) bytes)")
            }
            let magic = String(decoding: bytes[at..<(at + 6)], as: UTF8.self)
            if magic == "070707" {
                throw bad("old portable cpio format (\"070707\"); the kernel reads only newc: make it with cpio -H newc")
            }
            guard magic == "070701" || magic == "070702" else {
                throw bad("no cpio magic (want \"070701\" or \"070702\")")
            }
            var fields: [UInt64] = []
            for (i, name) in fieldNames.enumerated() {
                let o = at + 6 + 8 * i
                guard let v = UInt64(String(decoding: bytes[o..<(o + 8)], as: UTF8.self), radix: 16) else {
                    throw bad("header field \(name) is not 8 hexadecimal digits")
                }
                fields.append(v)
            }
            let nameSize = Int(fields[11]), fileSize = Int(fields[6])
            guard nameSize >= 1, nameSize <= maxNameSize else {
                throw bad("name size \(nameSize) (1 to \(maxNameSize), with its NUL)")
            }
            let nameStart = at + headerSize
            guard bytes.count - nameStart >= nameSize else { throw bad("the name is cut off by the end of the file") }
            let name = Array(bytes[nameStart..<(nameStart + nameSize)])
            guard name.last == 0 else { throw bad("the name does not end with a NUL byte") }
            let dataStart = align4(nameStart + nameSize)
            guard fileSize == 0 || (dataStart <= bytes.count && bytes.count - dataStart >= fileSize) else {
                let shown = String(decoding: name.dropLast(), as: UTF8.self)
                throw bad("\"\(shown)\" has \(fileSize) bytes of data, past the end of the file (\(bytes.count) bytes)")
            }
            let next = min(align4(dataStart + fileSize), bytes.count)
            if name == trailer { return (entries, next) }
            entries += 1
            at = next
        }
        return (entries, bytes.count)
    }

    static func align4(_ n: Int) -> Int { (n + 3) & ~3 }
    static func hex2(_ b: UInt8) -> String { b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16) }
}
