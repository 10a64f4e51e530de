import FoundationEssentials
import HostSys
import TOMLKit

/// Loads and validates VM configs (schema: `configs/README.md`).
///
/// Every problem is reported, each with its key path, in schema order; a
/// config is returned only when there are none. Relative paths in a file are
/// relative to the file's directory; relative paths in overrides are relative
/// to `relativeTo` (the current directory by default).
public enum ConfigLoader {
    /// Config files larger than this are refused unread: a config is a few
    /// hundred bytes, and a device node (e.g. /dev/zero) must not be slurped.
    static let maxConfigBytes = 1 << 20

    /// Loads, validates and applies `overrides`; throws every problem at once.
    public static func load(path: String,
                            overrides: ConfigOverrides = ConfigOverrides(),
                            relativeTo cwd: String = FileManager.default.currentDirectoryPath,
                            checkFiles: Bool = true) throws(ConfigError) -> VMConfig {
        switch loadResult(path: path, overrides: overrides, relativeTo: cwd, checkFiles: checkFiles) {
        case let .success(c): return c
        case let .failure(e): throw e
        }
    }

    /// `load` as a `Result`. Overrides replace config values before the
    /// required-key and file checks, so `--kernel x` works with a config
    /// whose own kernel is missing or not built yet.
    public static func loadResult(path: String,
                                  overrides: ConfigOverrides = ConfigOverrides(),
                                  relativeTo cwd: String = FileManager.default.currentDirectoryPath,
                                  checkFiles: Bool = true) -> Result<VMConfig, ConfigError> {
        let absolute = Paths.absolute(path, relativeTo: cwd)
        switch readConfigFile(absolute) {
        case let .failure(message):
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: "", message: message.text)], configPath: absolute))
        case let .success(text):
            return parse(text, baseDirectory: Paths.directory(of: absolute), configPath: absolute,
                         overrides: overrides, overridesRelativeTo: cwd, checkFiles: checkFiles)
        }
    }

    /// Parses and validates config text. Relative paths are resolved against
    /// `baseDirectory`; with `checkFiles` false, files are not looked at.
    public static func parse(_ text: String, baseDirectory: String, checkFiles: Bool = true) -> Result<VMConfig, ConfigError> {
        parse(text, baseDirectory: baseDirectory, configPath: "", overrides: ConfigOverrides(),
              overridesRelativeTo: baseDirectory, checkFiles: checkFiles)
    }

    /// `parse` with command-line overrides (key paths `--kernel` etc.).
    public static func parse(_ text: String, baseDirectory: String, configPath: String = "",
                             overrides: ConfigOverrides, overridesRelativeTo: String,
                             checkFiles: Bool = true) -> Result<VMConfig, ConfigError> {
        let base = Paths.absolute(".", relativeTo: baseDirectory)
        let errorPath = configPath.isEmpty ? nil : configPath
        if let problem = textProblem(text) {
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: "", message: problem)], configPath: errorPath))
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            let at = e.source.begin
            let issue = ConfigIssue(keyPath: "", message: "TOML syntax error at line \(at.line), column \(at.column): \(e.description)")
            return .failure(ConfigError(issues: [issue], configPath: errorPath))
        } catch {
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: "", message: "TOML syntax error: \(error)")], configPath: errorPath))
        }

        var b = Builder(base: base)
        b.readFile(root)
        b.apply(overrides, relativeTo: Paths.absolute(".", relativeTo: overridesRelativeTo))
        return b.finish(configPath: configPath, checkFiles: checkFiles)
    }

    private struct ReadFailure: Error { let text: String }

    private static func readConfigFile(_ path: String) -> Result<String, ReadFailure> {
        guard let st = HostFiles.status(path) else { return .failure(ReadFailure(text: "\(path): no such file")) }
        if st.kind == .directory { return .failure(ReadFailure(text: "\(path): is a directory, not a config file")) }
        guard HostFiles.isReadable(path) else {
            return .failure(ReadFailure(text: "\(path): not readable (permission denied)"))
        }
        let data: [UInt8]
        do {
            data = try HostFiles.readPrefix(path, upTo: maxConfigBytes + 1)
        } catch {
            return .failure(ReadFailure(text: "\(path): cannot read: \(error)"))
        }
        guard data.count <= maxConfigBytes else {
            return .failure(ReadFailure(text: "\(path): larger than \(Units.formatSize(UInt64(maxConfigBytes))), not a config file"))
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            return .failure(ReadFailure(text: "\(path): not UTF-8 text"))
        }
        return .success(text)
    }

    /// TOMLKit hands the text to toml++ as a C string and gets strings back
    /// the same way, so a NUL would silently cut the document or a value
    /// short. Refuse NULs, raw or escaped.
    static func textProblem(_ text: String) -> String? {
        if let problem = keyParserTraps(text) { return problem }
        var line = 1
        var previous: Character = " "
        let escapes = ["\\u0000", "\\U00000000"]
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            if c == "\0" { return "line \(line): the file contains a NUL byte" }
            if c == "\\" && previous != "\\" {
                let rest = text[index...]
                if escapes.contains(where: { rest.hasPrefix($0) }) {
                    return "line \(line): NUL characters (\\u0000) are not supported"
                }
            }
            if c == "\n" || c == "\r\n" { line += 1 }
            previous = (c == "\\" && previous == "\\") ? " " : c
            index = text.index(after: index)
        }
        return nil
    }

    /// TOML allows non-ASCII text only inside strings and comments (bare keys
    /// are A-Z a-z 0-9 _ -). toml++, under TOMLKit, aborts the process (an
    /// assertion in its key parser) on a non-ASCII character where a bare key
    /// goes, e.g. `[é]`, and on a table header that starts with a character no
    /// key starts with, e.g. `[,]`: the fuzzer found both. So such text is refused here,
    /// with its place, before the parser sees it. Strings and comments are
    /// followed as TOML writes them: basic and literal, single- and multi-line
    /// (a closing delimiter may follow up to two quotes of the content).
    /// toml++ also aborts (an assertion in its value parser) on a `}` where an
    /// array's next value goes, e.g. `device = [}`: refused here too.
    static func keyParserTraps(_ text: String) -> String? {
        enum State { case normal, comment, basic, literal, multiBasic, multiLiteral }
        let b = Array(text.utf8)
        var state = State.normal
        var line = 1, lineStart = 0, i = 0
        // Brackets and braces open outside strings: "[" an array, "h" a table
        // header's bracket, "{" an inline table. A "[" with nothing open and
        // only blanks before it on its line starts a table header.
        var open: [UInt8] = []
        // Inside an array, right after its "[" or a ",": a value goes here
        // (blanks, line breaks and comments may come first).
        var arrayValueNext = false
        /// The 1-based column of byte `j` on the current line, in characters.
        func column(_ j: Int) -> Int { String(decoding: b[lineStart..<j], as: UTF8.self).count + 1 }
        func isKeyStart(_ c: UInt8) -> Bool {
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
                || c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") || c == UInt8(ascii: "]")
        }
        func quotes(_ q: UInt8, at j: Int) -> Int {
            var n = 0
            while j + n < b.count, b[j + n] == q { n += 1 }
            return n
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\n") {
                line += 1; lineStart = i + 1
                if state == .comment || state == .basic || state == .literal { state = .normal }
                i += 1
                continue
            }
            switch state {
            case .normal:
                if c >= 0x80 {
                    return "line \(line), column \(column(i)): a non-ASCII character outside a string or comment "
                        + "(keys without quotes use only A-Z a-z 0-9 _ -; quote the key or the value)"
                }
                var header = false
                if c == UInt8(ascii: "["), open.isEmpty, b[lineStart..<i].allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                    header = true
                    // toml++ also aborts on a header whose first key character
                    // is none a key may start with ("[,]", "[=]").
                    var j = i + 1
                    if j < b.count, b[j] == UInt8(ascii: "[") { j += 1 }
                    while j < b.count, b[j] == 0x20 || b[j] == 0x09 { j += 1 }
                    if j < b.count, b[j] < 0x80, !isKeyStart(b[j]) {
                        return "line \(line), column \(column(j)): a table header must start with a key "
                            + "(A-Z a-z 0-9 _ - or a quoted key)"
                    }
                }
                if c == 0x20 || c == 0x09 || c == 0x0D || c == UInt8(ascii: "#") {
                    // Blanks and comments: what comes next is still what came before.
                } else if arrayValueNext && c == UInt8(ascii: "}") {
                    return "line \(line), column \(column(i)): \"}\" where an array's next value goes "
                        + "(an array ends with \"]\")"
                } else {
                    switch c {
                    case UInt8(ascii: "["):
                        open.append(header || open.last == UInt8(ascii: "h") ? UInt8(ascii: "h") : c)
                        arrayValueNext = open.last == UInt8(ascii: "[")
                    case UInt8(ascii: "{"):
                        open.append(c); arrayValueNext = false
                    case UInt8(ascii: "]"), UInt8(ascii: "}"):
                        _ = open.popLast(); arrayValueNext = false
                    case UInt8(ascii: ","):
                        arrayValueNext = open.last == UInt8(ascii: "[")
                    default:
                        arrayValueNext = false
                    }
                }
                if c == UInt8(ascii: "#") { state = .comment }
                else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
                    let n = quotes(c, at: i)
                    if n >= 3 {
                        state = c == UInt8(ascii: "\"") ? .multiBasic : .multiLiteral
                        i += 3
                        continue
                    }
                    // "" and '' are empty strings; one quote opens a string.
                    if n == 2 { i += 2; continue }
                    state = c == UInt8(ascii: "\"") ? .basic : .literal
                }
            case .comment:
                break
            case .basic:
                if c == UInt8(ascii: "\\"), i + 1 < b.count, b[i + 1] != UInt8(ascii: "\n") { i += 2; continue }
                if c == UInt8(ascii: "\"") { state = .normal }
            case .literal:
                if c == UInt8(ascii: "'") { state = .normal }
            case .multiBasic, .multiLiteral:
                let q = state == .multiBasic ? UInt8(ascii: "\"") : UInt8(ascii: "'")
                if state == .multiBasic, c == UInt8(ascii: "\\"), i + 1 < b.count, b[i + 1] != UInt8(ascii: "\n") {
                    i += 2
                    continue
                }
                if c == q {
                    let n = quotes(q, at: i)
                    if n >= 3 { state = .normal }
                    i += n
                    continue
                }
            }
            i += 1
        }
        return nil
    }
}
