import Foundation
import TOMLKit

/// The schema: tables and their keys, in the order issues are reported.
enum Schema {
    static let tables: [(name: String, keys: [String])] = [
        ("machine", ["vcpus", "memory"]),
        ("kernel", ["path", "initramfs", "cmdline"]),
        ("serial", ["mode", "path"]),
        ("run", ["timeout"]),
    ]

    static func keys(of table: String) -> [String] {
        tables.first { $0.name == table }?.keys ?? []
    }

    /// vCPUs: xAPIC IDs are 8 bits and 0xFF is the broadcast ID (Intel SDM
    /// Vol. 3A, "Local APIC ID"), so 0...254 are usable.
    static let vcpuRange = 1...254
    /// Below 16 MiB a kernel with an initramfs does not come up; above 1 TiB
    /// is beyond what this VMM's memory map is meant for.
    static let minMemory: UInt64 = 16 << 20
    static let maxMemory: UInt64 = 1 << 40
    /// KVM_SET_USER_MEMORY_REGION needs page-multiple sizes
    /// (Documentation/virt/kvm/api.rst); x86 pages are 4 KiB.
    static let pageSize: UInt64 = 4096
    /// Linux x86 COMMAND_LINE_SIZE is 2048 including the NUL
    /// (arch/x86/include/asm/setup.h).
    static let maxCmdlineBytes = 2047
    static let serialModes = ["terminal", "file", "off"]
}

/// Collects values and issues while walking a parsed TOML table, then
/// applies overrides and checks files on the final values.
struct Builder {
    struct Located {
        var path: String    // absolute
        var keyPath: String // where it came from, for messages
    }

    let base: String
    var issues: [ConfigIssue] = []
    var vcpus = VMConfig.defaultVCPUs
    var memoryBytes = VMConfig.defaultMemoryBytes
    var kernel: Located?
    var initramfs: Located?
    var cmdline = VMConfig.defaultCmdline
    var serial: SerialConfig = .terminal
    var timeoutSeconds: Double?

    init(base: String) {
        self.base = base
    }

    mutating func issue(_ keyPath: String, _ message: String) {
        issues.append(ConfigIssue(keyPath: keyPath, message: message))
    }

    // MARK: The file

    mutating func readFile(_ root: TOMLTable) {
        let known = Set(Schema.tables.map(\.name))
        for (name, keys) in Schema.tables {
            guard let value = root[name] else { continue }
            guard value.type == .table, let table = value.table else {
                issue(KeyPath.quote(name), "expected a table, got \(Self.describe(value.type))")
                continue
            }
            switch name {
            case "machine": readMachine(table)
            case "kernel": readKernel(table)
            case "serial": readSerial(table)
            default: readRun(table)
            }
            for key in Self.keys(of: table) where !keys.contains(key) {
                issue(KeyPath.join(name, key), "unknown key" + Suggest.forKey(key, inTable: name))
            }
        }
        for key in Self.keys(of: root) where !known.contains(key) {
            let isTable = root[key]?.type == .table
            issue(KeyPath.quote(key), (isTable ? "unknown table" : "unknown key") + Suggest.forRootKey(key))
        }
    }

    private mutating func readMachine(_ t: TOMLTable) {
        if let v = t["vcpus"] {
            if v.type == .int, let n = v.int {
                if let m = Check.vcpus(n) { issue("machine.vcpus", m) } else { vcpus = n }
            } else {
                issue("machine.vcpus", "expected an integer, got \(Self.describe(v.type))")
            }
        }
        if let v = t["memory"] {
            let result: Result<UInt64, Check.Failure>
            if v.type == .string, let s = v.string {
                result = Check.memory(s)
            } else if v.type == .int, let n = v.int {
                result = Check.memory(bytes: n)
            } else {
                result = .failure(Check.Failure("expected a size such as \"512M\" or an integer number of bytes, got \(Self.describe(v.type))"))
            }
            switch result {
            case let .success(bytes): memoryBytes = bytes
            case let .failure(f): issue("machine.memory", f.message)
            }
        }
    }

    private mutating func readKernel(_ t: TOMLTable) {
        if let s = string(t, "path", "kernel.path") {
            if let m = Check.nonEmptyPath(s) { issue("kernel.path", m) } else {
                kernel = Located(path: Paths.absolute(s, relativeTo: base), keyPath: "kernel.path")
            }
        }
        if let s = string(t, "initramfs", "kernel.initramfs") {
            if let m = Check.nonEmptyPath(s) { issue("kernel.initramfs", m) } else {
                initramfs = Located(path: Paths.absolute(s, relativeTo: base), keyPath: "kernel.initramfs")
            }
        }
        if let s = string(t, "cmdline", "kernel.cmdline") {
            if let m = Check.cmdline(s) { issue("kernel.cmdline", m) } else { cmdline = s }
        }
    }

    private mutating func readSerial(_ t: TOMLTable) {
        var mode: String? = "terminal"
        if let s = string(t, "mode", "serial.mode") {
            if Schema.serialModes.contains(s) {
                mode = s
            } else {
                issue("serial.mode", "\(KeyPath.quoteValue(s)) is not one of \(Schema.serialModes.joined(separator: ", "))")
                mode = nil
            }
        } else if t["mode"] != nil {
            mode = nil // wrong type, reported
        }
        let pathValue = t["path"]
        let path = string(t, "path", "serial.path")
        switch mode {
        case "file":
            guard let p = path else {
                if pathValue == nil { issue("serial.path", "required when mode = \"file\"") }
                return
            }
            if let m = Check.nonEmptyPath(p) { issue("serial.path", m); return }
            serial = .file(Paths.absolute(p, relativeTo: base))
        case let m?:
            serial = m == "off" ? .off : .terminal
            if pathValue != nil { issue("serial.path", "only used with mode = \"file\" (mode is \"\(m)\")") }
        case nil:
            break
        }
    }

    private mutating func readRun(_ t: TOMLTable) {
        guard let v = t["timeout"] else { return }
        let result: Result<Double, Check.Failure>
        if v.type == .string, let s = v.string {
            result = Check.timeout(s)
        } else if v.type == .int, let n = v.int {
            result = Check.timeout(seconds: n)
        } else {
            result = .failure(Check.Failure("expected a duration such as \"60s\" or an integer number of seconds, got \(Self.describe(v.type))"))
        }
        switch result {
        case let .success(s): timeoutSeconds = s
        case let .failure(f): issue("run.timeout", f.message)
        }
    }

    /// The string at `key`, or nil if absent or not a string (reported).
    private mutating func string(_ t: TOMLTable, _ key: String, _ keyPath: String) -> String? {
        guard let v = t[key] else { return nil }
        guard v.type == .string, let s = v.string else {
            issue(keyPath, "expected a string, got \(Self.describe(v.type))")
            return nil
        }
        return s
    }

    /// The table's keys, each once. (The TOMLKit iterator force-unwraps
    /// lookups; going through `keys` and optional subscripts does not.)
    static func keys(of t: TOMLTable) -> [String] {
        var seen = Set<String>()
        return t.keys.filter { seen.insert($0).inserted }.sorted()
    }

    static func describe(_ type: TOMLType) -> String {
        switch type {
        case .int: return "an integer"
        case .double: return "a float"
        case .string: return "a string"
        case .bool: return "a boolean"
        case .table: return "a table"
        case .array: return "an array"
        case .date: return "a date"
        case .time: return "a time"
        case .dateTime: return "a date-time"
        }
    }

    // MARK: Overrides

    mutating func apply(_ o: ConfigOverrides, relativeTo cwd: String) {
        if let s = o.vcpus {
            switch Check.vcpus(text: s) {
            case let .success(n): vcpus = n
            case let .failure(f): issue("--vcpus", f.message)
            }
        }
        if let s = o.memory {
            switch Check.memory(s) {
            case let .success(n): memoryBytes = n
            case let .failure(f): issue("--memory", f.message)
            }
        }
        if let s = o.kernel {
            if let m = Check.nonEmptyPath(s) { issue("--kernel", m) } else {
                kernel = Located(path: Paths.absolute(s, relativeTo: cwd), keyPath: "--kernel")
            }
        }
        if let s = o.initramfs {
            if let m = Check.nonEmptyPath(s) { issue("--initramfs", m) } else {
                initramfs = Located(path: Paths.absolute(s, relativeTo: cwd), keyPath: "--initramfs")
            }
        }
        if let s = o.cmdline {
            if let m = Check.cmdline(s) { issue("--cmdline", m) } else { cmdline = s }
        }
    }

    // MARK: Result

    mutating func finish(configPath: String, checkFiles: Bool) -> Result<VMConfig, ConfigError> {
        if kernel == nil && !issues.contains(where: { $0.keyPath == "kernel.path" || $0.keyPath == "--kernel" }) {
            issue("kernel.path", "required")
        }
        if checkFiles {
            if let k = kernel, let m = Paths.inputFileProblem(k.path, allowEmpty: false) { issue(k.keyPath, m) }
            if let i = initramfs, let m = Paths.inputFileProblem(i.path) { issue(i.keyPath, m) }
            if case let .file(p) = serial, let m = Paths.outputFileProblem(p) { issue("serial.path", m) }
        }
        guard issues.isEmpty, let k = kernel else {
            return .failure(ConfigError(issues: issues, configPath: configPath.isEmpty ? nil : configPath))
        }
        return .success(VMConfig(vcpus: vcpus, memoryBytes: memoryBytes, kernelPath: k.path,
                                 initramfsPath: initramfs?.path, cmdline: cmdline, serial: serial,
                                 timeoutSeconds: timeoutSeconds, configPath: configPath))
    }
}

extension VMConfig {
    /// This config with command-line overrides applied and checked the same
    /// way as config keys (key paths `--kernel`, `--memory`, ...). Relative
    /// paths are relative to `directory`. Only overridden files are checked.
    public func applying(_ overrides: ConfigOverrides,
                         relativeTo directory: String = FileManager.default.currentDirectoryPath,
                         checkFiles: Bool = true) -> Result<VMConfig, ConfigError> {
        var b = Builder(base: directory)
        b.vcpus = vcpus
        b.memoryBytes = memoryBytes
        b.cmdline = cmdline
        b.serial = serial
        b.timeoutSeconds = timeoutSeconds
        b.apply(overrides, relativeTo: Paths.absolute(".", relativeTo: directory))
        let newKernel = b.kernel
        let newInitramfs = b.initramfs
        if checkFiles {
            if let k = newKernel, let m = Paths.inputFileProblem(k.path, allowEmpty: false) { b.issue(k.keyPath, m) }
            if let i = newInitramfs, let m = Paths.inputFileProblem(i.path) { b.issue(i.keyPath, m) }
        }
        guard b.issues.isEmpty else {
            return .failure(ConfigError(issues: b.issues, configPath: configPath.isEmpty ? nil : configPath))
        }
        var c = self
        c.vcpus = b.vcpus
        c.memoryBytes = b.memoryBytes
        c.cmdline = b.cmdline
        if let k = newKernel { c.kernelPath = k.path }
        if let i = newInitramfs { c.initramfsPath = i.path }
        return .success(c)
    }

    /// `applying` with the overrides as arguments, throwing every problem.
    public func overriding(kernel: String? = nil, initramfs: String? = nil, cmdline: String? = nil,
                           memory: String? = nil, vcpus: String? = nil,
                           relativeTo directory: String = FileManager.default.currentDirectoryPath,
                           checkFiles: Bool = true) throws(ConfigError) -> VMConfig {
        let o = ConfigOverrides(kernel: kernel, initramfs: initramfs, cmdline: cmdline, memory: memory, vcpus: vcpus)
        switch applying(o, relativeTo: directory, checkFiles: checkFiles) {
        case let .success(c): return c
        case let .failure(e): throw e
        }
    }
}
