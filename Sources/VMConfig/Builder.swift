import FoundationEssentials
import HostSys
import TOMLKit

/// Collects values and issues while walking a parsed TOML table, then
/// applies overrides and checks files on the final values.
struct Builder {
    struct Located {
        var path: String    // absolute
        var keyPath: String // where it came from, for messages
    }

    struct Disk {
        var image: Located
        var readOnly: Bool
        var cache: DiskCache
        var queues: Int?
        var aio: DiskAIO
        var iommu: Bool
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
    var disks: [Disk] = []
    var nets: [NetConfig] = []
    var virtioConsole: SerialConfig = .off
    var virtioConsoleIOMMU = true
    var rng = false
    var rngIOMMU = true
    var viommu: VIOMMUConfig?
    var hugePages = false
    var pciMMIO64Size = Schema.defaultPCIMMIO64Size
    /// Where `memoryBytes` was last set (for the hugepages multiple check).
    var memoryKeyPath = "machine.memory"
    /// Valid `[[passthrough]]` entries, then `--passthrough` ones.
    var passthrough: [PassthroughConfig] = []
    /// For duplicate checks: the key path that named each device first
    /// (`passthrough[0].device` or `--passthrough`), by normalized name.
    var seenPassthrough: [String: String] = [:]
    /// `--passthrough` values given (valid or not), for the PCI slot count.
    var passthroughOverrides = 0
    /// Valid `[[vfio_user]]` entries, then `--vfio-user` ones.
    var vfioUser: [VFIOUserConfig] = []
    /// Socket paths named so far, by absolute path: where.
    var seenVFIOUser: [String: String] = [:]
    /// `--vfio-user` values given (valid or not), for the PCI slot count.
    var vfioUserOverrides = 0
    /// Entries of each array table in the file, valid or not.
    var entryCounts: [String: Int] = [:]
    /// For duplicate checks across `[[net]]` entries: the index that has
    /// each TAP name and each MAC.
    var seenTaps: [String: Int] = [:]
    var seenMACs: [[UInt8]: (index: Int, explicit: Bool)] = [:]

    init(base: String) {
        self.base = base
    }

    mutating func issue(_ keyPath: String, _ message: String) {
        issues.append(ConfigIssue(keyPath: keyPath, message: message))
    }

    // MARK: The file

    mutating func readFile(_ root: TOMLTable) {
        let known = Set(Schema.tables.map(\.name))
        for (name, shape, keys) in Schema.tables {
            guard let value = root[name] else { continue }
            switch shape {
            case .table:
                guard value.type == .table, let table = value.table else {
                    issue(KeyPath.quote(name), "expected a table, got \(Self.describe(value.type))")
                    continue
                }
                switch name {
                case "machine": readMachine(table)
                case "kernel": readKernel(table)
                case "serial": serial = readOutput(table, name: "serial", defaultMode: "terminal") ?? serial
                case "console":
                    virtioConsole = readOutput(table, name: "console", defaultMode: "off") ?? virtioConsole
                    if let b = bool(table, "iommu", "console.iommu") { virtioConsoleIOMMU = b }
                case "rng": readRNG(table)
                case "run": readRun(table)
                case "viommu": readVIOMMU(table)
                default: assertionFailure("table \(name) has no reader")
                }
                unknownKeys(table, keys: keys, table: name, keyPath: KeyPath.quote(name))
            case .arrayOfTables:
                guard value.type == .array, let array = value.array else {
                    issue(KeyPath.quote(name), "expected an array of tables ([[\(name)]])")
                    continue
                }
                entryCounts[name] = array.count
                for index in array.indices {
                    let element = array[index]
                    let keyPath = "\(KeyPath.quote(name))[\(index)]"
                    guard element.type == .table, let table = element.table else {
                        issue(keyPath, "expected a table, got \(Self.describe(element.type))")
                        continue
                    }
                    switch name {
                    case "disk": readDisk(table, keyPath: keyPath)
                    case "net": readNet(table, index: index, keyPath: keyPath)
                    case "passthrough": readPassthrough(table, keyPath: keyPath)
                    case "vfio_user": readVFIOUser(table, keyPath: keyPath)
                    default: assertionFailure("array table \(name) has no reader")
                    }
                    unknownKeys(table, keys: keys, table: name, keyPath: keyPath)
                }
            }
        }
        for key in Self.keys(of: root) where !known.contains(key) {
            let v = root[key]
            let isTable = v?.type == .table || (v?.array.map { !$0.isEmpty && $0.allSatisfy { $0.type == .table } } ?? false)
            issue(KeyPath.quote(key), (isTable ? "unknown table" : "unknown key") + Suggest.forRootKey(key))
        }
    }

    private mutating func unknownKeys(_ t: TOMLTable, keys: [String], table: String, keyPath: String) {
        for key in Self.keys(of: t) where !keys.contains(key) {
            issue(keyPath + "." + KeyPath.quote(key), "unknown key" + Suggest.forKey(key, inTable: table))
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
        if let b = bool(t, "hugepages", "machine.hugepages") { hugePages = b }
        if let v = t["pci_mmio64_size"] {
            let key = "machine.pci_mmio64_size"
            guard v.type == .string, let s = v.string else {
                issue(key, "expected a size such as \"64G\", got \(Self.describe(v.type))")
                return
            }
            switch Units.parseSize(s) {
            case let .value(n) where n > 0 && UInt64(n) % Schema.pciMMIO64Granule == 0 && UInt64(n) <= Schema.maxPCIMMIO64Size:
                pciMMIO64Size = UInt64(n)
            case .value, .overflow:
                issue(key, "\(KeyPath.quoteValue(s)) must be a whole number of GiB between 1G and \(Units.formatSize(Schema.maxPCIMMIO64Size)) (the window starts on a 1 GiB boundary)")
            case .malformed:
                issue(key, "\(KeyPath.quoteValue(s)) is not a size (use e.g. 64G)")
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

    /// `[serial]` or `[console]`: the destination, or nil after an issue.
    private mutating func readOutput(_ t: TOMLTable, name: String, defaultMode: String) -> SerialConfig? {
        let modePath = KeyPath.join(name, "mode")
        let pathPath = KeyPath.join(name, "path")
        var mode: String? = defaultMode
        if let s = string(t, "mode", modePath) {
            if Schema.outputModes.contains(s) {
                mode = s
            } else {
                issue(modePath, "\(KeyPath.quoteValue(s)) is not one of \(Schema.outputModes.joined(separator: ", "))")
                mode = nil
            }
        } else if t["mode"] != nil {
            mode = nil // wrong type, reported
        }
        let pathValue = t["path"]
        let path = string(t, "path", pathPath)
        switch mode {
        case "file":
            guard let p = path else {
                if pathValue == nil { issue(pathPath, "required when mode = \"file\"") }
                return nil
            }
            if let m = Check.nonEmptyPath(p) { issue(pathPath, m); return nil }
            return .file(Paths.absolute(p, relativeTo: base))
        case let m?:
            if pathValue != nil {
                issue(pathPath, "only used with mode = \"file\" (mode is \"\(m)\")")
                return nil
            }
            return m == "off" ? .off : .terminal
        case nil:
            return nil
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
    mutating func string(_ t: TOMLTable, _ key: String, _ keyPath: String) -> String? {
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
            case let .success(n):
                memoryBytes = n
                memoryKeyPath = "--memory"
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
        for s in o.passthrough { addPassthroughOverride(s) }
        for s in o.vfioUser { addVFIOUserOverride(s, relativeTo: cwd) }
        if o.viommu && viommu == nil { viommu = VIOMMUConfig() }
    }

    // MARK: Result

    mutating func finish(configPath: String, checkFiles: Bool) -> Result<VMConfig, ConfigError> {
        if kernel == nil && !issues.contains(where: { $0.keyPath == "kernel.path" || $0.keyPath == "--kernel" }) {
            issue("kernel.path", "required")
        }
        checkPCISlots()
        checkHugePages()
        checkIOMMUKeys()
        checkSharedFiles(checkFiles: checkFiles)
        if checkFiles {
            if let k = kernel, let m = Paths.inputFileProblem(k.path, allowEmpty: false) { issue(k.keyPath, m) }
            if let i = initramfs, let m = Paths.inputFileProblem(i.path) { issue(i.keyPath, m) }
            if case let .file(p) = serial, let m = Paths.outputFileProblem(p) { issue("serial.path", m) }
            if case let .file(p) = virtioConsole, let m = Paths.outputFileProblem(p) { issue("console.path", m) }
            for (i, u) in vfioUser.enumerated() {
                if let m = Paths.socketProblem(u.socket) { issue(seenVFIOUser[u.socket] ?? "vfio_user[\(i)].socket", m) }
            }
            for d in disks {
                if !PassedDescriptor.isPassed(d.image.path),
                   let m = Paths.diskImageProblem(d.image.path, readOnly: d.readOnly) { issue(d.image.keyPath, m) }
            }
        }
        guard issues.isEmpty, let k = kernel else {
            return .failure(ConfigError(issues: issues, configPath: configPath.isEmpty ? nil : configPath))
        }
        return .success(VMConfig(vcpus: vcpus, memoryBytes: memoryBytes, kernelPath: k.path,
                                 initramfsPath: initramfs?.path, cmdline: cmdline, serial: serial,
                                 timeoutSeconds: timeoutSeconds,
                                 disks: disks.map {
                                     DiskConfig(path: $0.image.path, readOnly: $0.readOnly, cache: $0.cache, iommu: $0.iommu,
                                                queues: $0.queues, aio: $0.aio)
                                 },
                                 nets: nets, virtioConsole: virtioConsole, virtioConsoleIOMMU: virtioConsoleIOMMU,
                                 rng: rng, rngIOMMU: rngIOMMU, viommu: viommu,
                                 passthrough: passthrough, vfioUser: vfioUser, hugePages: hugePages,
                                 pciMMIO64Size: pciMMIO64Size, configPath: configPath))
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
        b.hugePages = hugePages
        b.memoryKeyPath = "machine.memory"
        b.entryCounts = ["disk": disks.count, "net": nets.count, "passthrough": passthrough.count, "vfio_user": vfioUser.count]
        b.virtioConsole = virtioConsole
        b.rng = rng
        b.viommu = viommu
        b.passthrough = passthrough
        for (i, p) in passthrough.enumerated() where b.seenPassthrough[p.description] == nil {
            b.seenPassthrough[p.description] = "passthrough[\(i)].device"
        }
        b.vfioUser = vfioUser
        for (i, u) in vfioUser.enumerated() where b.seenVFIOUser[u.socket] == nil {
            b.seenVFIOUser[u.socket] = "vfio_user[\(i)].socket"
        }
        b.apply(overrides, relativeTo: Paths.absolute(".", relativeTo: directory))
        let newKernel = b.kernel
        let newInitramfs = b.initramfs
        if !overrides.passthrough.isEmpty || !overrides.vfioUser.isEmpty || (overrides.viommu && viommu == nil) { b.checkPCISlots() }
        if overrides.memory != nil { b.checkHugePages() }
        if checkFiles {
            for u in b.vfioUser.dropFirst(vfioUser.count) {
                if let m = Paths.socketProblem(u.socket) { b.issue("--vfio-user", m) }
            }
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
        c.passthrough = b.passthrough
        c.vfioUser = b.vfioUser
        c.viommu = b.viommu
        if let k = newKernel { c.kernelPath = k.path }
        if let i = newInitramfs { c.initramfsPath = i.path }
        return .success(c)
    }

    /// `applying` with the overrides as arguments, throwing every problem.
    public func overriding(kernel: String? = nil, initramfs: String? = nil, cmdline: String? = nil,
                           memory: String? = nil, vcpus: String? = nil, passthrough: [String] = [],
                           viommu: Bool = false, vfioUser: [String] = [],
                           relativeTo directory: String = FileManager.default.currentDirectoryPath,
                           checkFiles: Bool = true) throws(ConfigError) -> VMConfig {
        let o = ConfigOverrides(kernel: kernel, initramfs: initramfs, cmdline: cmdline, memory: memory, vcpus: vcpus,
                                 passthrough: passthrough, viommu: viommu, vfioUser: vfioUser)
        switch applying(o, relativeTo: directory, checkFiles: checkFiles) {
        case let .success(c): return c
        case let .failure(e): throw e
        }
    }
}
