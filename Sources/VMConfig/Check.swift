import Bits

/// Value checks shared by config keys and command-line overrides. Each
/// returns the message that follows the key path.
enum Check {
    struct Failure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    static func vcpus(_ n: Int) -> String? {
        Schema.vcpuRange.contains(n) ? nil
            : "\(n) is out of range (\(Schema.vcpuRange.lowerBound) to \(Schema.vcpuRange.upperBound))"
    }

    static func vcpus(text: String) -> Result<Int, Failure> {
        guard let n = Int(text) else { return .failure(Failure("\(KeyPath.quoteValue(text)) is not an integer")) }
        if let m = vcpus(n) { return .failure(Failure(m)) }
        return .success(n)
    }

    static func memory(_ text: String) -> Result<UInt64, Failure> {
        switch Units.parseSize(text) {
        case .malformed:
            return .failure(Failure("\(KeyPath.quoteValue(text)) is not a size (use e.g. 512M, 2G)"))
        case .overflow:
            return .failure(Failure("\(KeyPath.quoteValue(text)) is more than the maximum \(Units.formatSize(Schema.maxMemory))"))
        case let .value(bytes):
            return memory(bytes: bytes, shown: KeyPath.quoteValue(text))
        }
    }

    static func memory(bytes n: Int) -> Result<UInt64, Failure> {
        guard let bytes = UInt64(exactly: n) else {
            return .failure(Failure("\(n) is less than the minimum \(Units.formatSize(Schema.minMemory))"))
        }
        return memory(bytes: bytes, shown: "\(n)")
    }

    private static func memory(bytes: UInt64, shown: String) -> Result<UInt64, Failure> {
        if bytes < Schema.minMemory {
            return .failure(Failure("\(shown) is less than the minimum \(Units.formatSize(Schema.minMemory))"))
        }
        if bytes > Schema.maxMemory {
            return .failure(Failure("\(shown) is more than the maximum \(Units.formatSize(Schema.maxMemory))"))
        }
        if bytes % Schema.pageSize != 0 {
            return .failure(Failure("\(shown) is not a multiple of 4K (the page size)"))
        }
        return .success(bytes)
    }

    static func nonEmptyPath(_ s: String) -> String? {
        s.isEmpty ? "must not be empty" : nil
    }

    static func cmdline(_ s: String) -> String? {
        let n = s.utf8.count
        return n > Schema.maxCmdlineBytes
            ? "is \(n) bytes long; Linux takes at most \(Schema.maxCmdlineBytes) (COMMAND_LINE_SIZE)"
            : nil
    }

    static func timeout(_ text: String) -> Result<Double, Failure> {
        switch Units.parseDurationMillis(text) {
        case .malformed:
            return .failure(Failure("\(KeyPath.quoteValue(text)) is not a duration (use e.g. 90s, 5m, 1h, 250ms)"))
        case .overflow:
            return .failure(tooLong(KeyPath.quoteValue(text)))
        case let .value(ms):
            return timeout(millis: ms, shown: KeyPath.quoteValue(text))
        }
    }

    static func timeout(seconds n: Int) -> Result<Double, Failure> {
        guard n > 0 else { return .failure(notPositive("\(n)")) }
        let (ms, o) = UInt64(n).multipliedReportingOverflow(by: 1000)
        return o ? .failure(tooLong("\(n)")) : timeout(millis: ms, shown: "\(n)")
    }

    private static func timeout(millis: UInt64, shown: String) -> Result<Double, Failure> {
        guard millis > 0 else { return .failure(notPositive(shown)) }
        guard millis <= ConfigLoader.maxDurationMillis else { return .failure(tooLong(shown)) }
        return .success(Double(millis) / 1000)
    }

    private static func notPositive(_ shown: String) -> Failure {
        Failure("\(shown) is not more than 0 (leave run.timeout out for no limit)")
    }

    private static func tooLong(_ shown: String) -> Failure {
        Failure("\(shown) is longer than the maximum \(Units.formatMillis(ConfigLoader.maxDurationMillis))")
    }
}

extension Check {
    /// A TAP interface name as Linux takes it: 1...15 bytes (IFNAMSIZ is 16
    /// with the NUL, include/uapi/linux/if.h), not "." or ".." (dev_valid_name
    /// in net/core/dev.c). Linux also refuses "/", ":" and white space; this
    /// keeps to the portable set A-Z a-z 0-9 _ . - (no "%d" templates either:
    /// the device is opened by name, not created under a generated one).
    static func interfaceName(_ s: String) -> String? {
        if s.isEmpty { return "must not be empty" }
        if let bad = s.unicodeScalars.first(where: { !isInterfaceNameScalar($0) }) {
            return "\(KeyPath.quoteValue(s)) contains \(KeyPath.quoteValue(String(bad))); "
                + "interface names use only A-Z, a-z, 0-9, _, . and -"
        }
        let n = s.utf8.count
        if n > Schema.maxInterfaceNameBytes {
            return "\(KeyPath.quoteValue(s)) is \(n) characters long; interface names have at most "
                + "\(Schema.maxInterfaceNameBytes) (IFNAMSIZ is 16 with the NUL)"
        }
        if s == "." || s == ".." { return "\(KeyPath.quoteValue(s)) is not a valid interface name" }
        return nil
    }

    private static func isInterfaceNameScalar(_ u: Unicode.Scalar) -> Bool {
        (u >= "a" && u <= "z") || (u >= "A" && u <= "Z") || (u >= "0" && u <= "9") || u == "_" || u == "." || u == "-"
    }

    /// A guest MAC: six hex pairs, unicast and not zero (a station address
    /// as Linux's is_valid_ether_addr, include/linux/etherdevice.h, wants).
    static func mac(_ text: String) -> Result<[UInt8], Failure> {
        let shown = KeyPath.quoteValue(text)
        guard let bytes = MAC.parse(text) else {
            return .failure(Failure("\(shown) is not a MAC address (six hex pairs separated by colons, "
                + "e.g. \"52:54:00:12:34:56\")"))
        }
        if MAC.isMulticast(bytes) { return .failure(Failure("\(shown) is a multicast address")) }
        if MAC.isZero(bytes) { return .failure(Failure("\(shown) is the all-zero address")) }
        return .success(bytes)
    }
}

/// Key paths as TOML writes them: bare keys joined with dots, other keys quoted.
enum KeyPath {
    static func join(_ parts: String...) -> String {
        parts.map(quote).joined(separator: ".")
    }

    static func quote(_ key: String) -> String {
        let bare = !key.isEmpty && key.unicodeScalars.allSatisfy {
            ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || $0 == "_" || $0 == "-"
        }
        return bare ? key : quoteValue(key)
    }

    /// A string as a TOML basic string, for messages.
    static func quoteValue(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

/// "did you mean ...?" for unknown keys.
enum Suggest {
    /// For an unknown key in `table`: a close key of that table, else the
    /// same key in another table (`machine.path` -> `kernel.path`). From a
    /// `[[disk]]`/`[[net]]` entry only the other array table is suggested,
    /// and only if the key is its own (`disk[0].tap` -> `tap in [[net]]`,
    /// but nothing for `net[0].path`).
    static func forKey(_ key: String, inTable table: String) -> String {
        if let near = nearest(key, among: Schema.keys(of: table)) { return " (did you mean \(near)?)" }
        let owners = Schema.tables.filter { $0.name != table && $0.keys.contains(key.lowercased()) }
        guard let other = owners.first else { return "" }
        if Schema.shape(of: table) == .arrayOfTables && (owners.count > 1 || other.shape != .arrayOfTables) {
            return ""
        }
        return " (did you mean \(place(key.lowercased(), in: other.name))?)"
    }

    /// For an unknown top-level key: a close table name, else a table that
    /// has this key (`vcpus = 2` at the top -> `machine.vcpus`).
    static func forRootKey(_ key: String) -> String {
        if let near = nearest(key, among: Schema.tables.map(\.name)) { return " (did you mean \(Schema.header(near))?)" }
        if let owner = Schema.tables.first(where: { $0.keys.contains(key.lowercased()) }) {
            return " (did you mean \(place(key.lowercased(), in: owner.name))?)"
        }
        return ""
    }

    /// `kernel.path`, or `tap in [[net]]` for array tables.
    private static func place(_ key: String, in table: String) -> String {
        Schema.shape(of: table) == .arrayOfTables ? "\(key) in \(Schema.header(table))" : "\(table).\(key)"
    }

    /// The candidate closest to `key` by edit distance, if close enough:
    /// at most 1 edit for short keys, 2 for keys of 6 or more characters.
    static func nearest(_ key: String, among candidates: [String]) -> String? {
        let k = Array(key.lowercased())
        guard !k.isEmpty, k.count <= 64 else { return nil }
        let limit = k.count >= 6 ? 2 : 1
        var best: (String, Int)?
        for c in candidates {
            let d = distance(k, Array(c))
            if d <= limit && d < (best?.1 ?? Int.max) { best = (c, d) }
        }
        return best?.0
    }

    /// Levenshtein distance.
    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}
