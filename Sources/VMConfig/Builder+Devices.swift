import Bits
import FoundationEssentials
import HostSys
import TOMLKit

/// `[[disk]]`, `[[net]]`, `[rng]`, `[[passthrough]]`, and the checks
/// between entries.
extension Builder {
    mutating func readDisk(_ t: TOMLTable, keyPath: String) {
        let pathPath = keyPath + ".path"
        var image: Located?
        if let s = string(t, "path", pathPath) {
            if let passed = PassedDescriptor.parse(s) {
                // An image a launcher opened: checked when it is taken.
                switch passed {
                case .success: image = Located(path: s, keyPath: pathPath)
                case let .failure(p): issue(pathPath, p.description)
                }
            } else if let m = Check.nonEmptyPath(s) { issue(pathPath, m) } else {
                image = Located(path: Paths.absolute(s, relativeTo: base), keyPath: pathPath)
            }
        } else if t["path"] == nil {
            issue(pathPath, "required")
        }
        var readOnly: Bool? = false
        if t["read_only"] != nil { readOnly = bool(t, "read_only", keyPath + ".read_only") }
        let cache = choice(t, "cache", keyPath, default: DiskCache.writeback)
        let aio = choice(t, "aio", keyPath, default: DiskAIO.ioUring)
        let queues = optionalCount(t, "queues", keyPath, in: Schema.diskQueueRange)
        let iommu = iommuKey(t, keyPath: keyPath)
        if let image, let readOnly, let cache, let iommu, let aio, let queues {
            disks.append(Disk(image: image, readOnly: readOnly, cache: cache, queues: queues, aio: aio, iommu: iommu))
        }
    }

    /// An optional integer key within `range`: `.some(nil)` when absent,
    /// `.some(n)` for a valid one, nil after an issue.
    mutating func optionalCount(_ t: TOMLTable, _ key: String, _ keyPath: String, in range: ClosedRange<Int>) -> Int?? {
        guard let v = t[key] else { return .some(nil) }
        let path = keyPath + "." + key
        guard v.type == .int, let n = v.int else {
            issue(path, "expected an integer, got \(Self.describe(v.type))")
            return nil
        }
        guard range.contains(n) else {
            issue(path, "\(n) is out of range (\(range.lowerBound) to \(range.upperBound))")
            return nil
        }
        return .some(n)
    }

    /// A string key naming one of `E`'s cases: `fallback` when absent, nil
    /// after an issue (a wrong type, or a name that is not a case, which the
    /// issue lists).
    mutating func choice<E: RawRepresentable & CaseIterable>(_ t: TOMLTable, _ key: String, _ keyPath: String,
                                                             default fallback: E) -> E? where E.RawValue == String {
        let path = keyPath + "." + key
        guard let s = string(t, key, path) else { return t[key] == nil ? fallback : nil }
        if let e = E(rawValue: s) { return e }
        issue(path, "\(KeyPath.quoteValue(s)) is not one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
        return nil
    }

    mutating func readNet(_ t: TOMLTable, index: Int, keyPath: String) {
        let tapPath = keyPath + ".tap"
        let macPath = keyPath + ".mac"
        var tap: String?
        if let s = string(t, "tap", tapPath) {
            if case let .failure(p)? = PassedDescriptor.parse(s) {
                issue(tapPath, p.description)
            } else if !PassedDescriptor.isPassed(s), let m = Check.interfaceName(s) {
                issue(tapPath, m)
            } else if let earlier = seenTaps[s] {
                issue(tapPath, "duplicate of net[\(earlier)].tap")
            } else {
                seenTaps[s] = index
                tap = s
            }
        } else if t["tap"] == nil {
            issue(tapPath, "required")
        }

        var mac: [UInt8]?
        let explicit = t["mac"] != nil
        if let s = string(t, "mac", macPath) {
            switch Check.mac(s) {
            case let .success(bytes): mac = bytes
            case let .failure(f): issue(macPath, f.message)
            }
        } else if !explicit {
            mac = MAC.defaultAddress(index: index)
        }
        if let bytes = mac, let earlier = seenMACs[bytes] {
            let shown = MAC.format(bytes)
            switch (explicit, earlier.explicit) {
            case (true, true):
                issue(macPath, "duplicate of net[\(earlier.index)].mac")
            case (true, false):
                issue(macPath, "\(shown) is the default MAC of net[\(earlier.index)] (set net[\(earlier.index)].mac to use it here)")
            default:
                issue(macPath, "the default \(shown) is a duplicate of net[\(earlier.index)].mac; set this one")
            }
            mac = nil
        } else if let bytes = mac {
            seenMACs[bytes] = (index, explicit)
        }

        var vhost: Bool? = true
        if t["vhost"] != nil { vhost = bool(t, "vhost", keyPath + ".vhost") }
        let queues = optionalCount(t, "queues", keyPath, in: Schema.netQueueRange)
        let iommu = iommuKey(t, keyPath: keyPath)
        if let tap, let mac, let iommu, let vhost, let queues {
            nets.append(NetConfig(tap: tap, mac: mac, iommu: iommu, vhost: vhost, queues: queues))
        }
    }

    mutating func readRNG(_ t: TOMLTable) {
        if let b = bool(t, "enabled", "rng.enabled") { rng = b }
        if let b = bool(t, "iommu", "rng.iommu") { rngIOMMU = b }
    }

    /// A device table's `iommu` key: true when absent, nil after an issue.
    mutating func iommuKey(_ t: TOMLTable, keyPath: String) -> Bool? {
        t["iommu"] == nil ? true : bool(t, "iommu", keyPath + ".iommu")
    }

    /// `[viommu]`: `enabled` (default true: the table asks for a vIOMMU),
    /// `max_domains`, `max_mappings` (per domain), `poll_us`.
    mutating func readVIOMMU(_ t: TOMLTable) {
        var c = VIOMMUConfig()
        var ok = true
        let keys: [(String, ClosedRange<Int>, WritableKeyPath<VIOMMUConfig, Int>)] = [
            ("max_domains", VIOMMUConfig.domainRange, \.maxDomains),
            ("max_mappings", VIOMMUConfig.mappingRange, \.maxMappingsPerDomain),
            ("poll_us", VIOMMUConfig.pollRange, \.pollMicroseconds),
        ]
        for (key, range, field) in keys {
            guard let v = t[key] else { continue }
            let keyPath = "viommu." + key
            guard v.type == .int, let n = v.int else {
                issue(keyPath, "expected an integer, got \(Self.describe(v.type))")
                ok = false
                continue
            }
            guard range.contains(n) else {
                issue(keyPath, "\(n) is out of range (\(range.lowerBound)...\(range.upperBound))")
                ok = false
                continue
            }
            c[keyPath: field] = n
        }
        var enabled: Bool? = true
        if t["enabled"] != nil { enabled = bool(t, "enabled", "viommu.enabled") }
        if ok, enabled == true { viommu = c }
    }

    /// `iommu = false` asks to leave a device outside a vIOMMU; without one
    /// the key would silently mean nothing, so say so.
    mutating func checkIOMMUKeys() {
        guard viommu == nil else { return }
        var off: [String] = []
        for (i, d) in disks.enumerated() where !d.iommu { off.append("disk[\(i)].iommu") }
        for (i, n) in nets.enumerated() where !n.iommu { off.append("net[\(i)].iommu") }
        for (i, p) in passthrough.enumerated() where !p.iommu { off.append("passthrough[\(i)].iommu") }
        if !virtioConsoleIOMMU { off.append("console.iommu") }
        if !rngIOMMU { off.append("rng.iommu") }
        for k in off { issue(k, "false only has a meaning with a vIOMMU ([viommu] or --viommu)") }
    }

    mutating func readPassthrough(_ t: TOMLTable, keyPath: String) {
        let devicePath = keyPath + ".device"
        var device: PassthroughConfig.Device?
        if let s = string(t, "device", devicePath) {
            device = passthroughDevice(s, keyPath: devicePath)
        } else if t["device"] == nil {
            issue(devicePath, "required (a host PCI address such as \"0000:03:00.0\" or a VFIO cdev path)")
        }
        let bars = readBARs(t, keyPath: keyPath + ".bars")
        let iommu = iommuKey(t, keyPath: keyPath)
        if let device, let bars, let iommu {
            passthrough.append(PassthroughConfig(device: device, barAddresses: bars, iommu: iommu))
        }
    }

    /// A `--passthrough` value, checked like a `device` key.
    mutating func addPassthroughOverride(_ s: String) {
        passthroughOverrides += 1
        if let d = passthroughDevice(s, keyPath: "--passthrough") {
            passthrough.append(PassthroughConfig(device: d))
        }
    }

    /// The device named by `s`, or nil after reporting why not (including
    /// a device named before, compared after normalization, so "03:00.0"
    /// and "0000:03:00.0" are the same).
    private mutating func passthroughDevice(_ s: String, keyPath: String) -> PassthroughConfig.Device? {
        switch Check.passthroughDevice(s) {
        case let .failure(f):
            issue(keyPath, f.message)
            return nil
        case let .success(d):
            return claim(PassthroughConfig(device: d).description, keyPath: keyPath, in: \.seenPassthrough) ? d : nil
        }
    }

    /// Records that `keyPath` names `name`; false, after reporting it, when an
    /// earlier key (or this same one) named it already.
    private mutating func claim(_ name: String, keyPath: String, in seen: WritableKeyPath<Builder, [String: String]>) -> Bool {
        if let earlier = self[keyPath: seen][name] {
            issue(keyPath, earlier == keyPath ? "\(name) is given twice" : "\(name) is a duplicate of \(earlier)")
            return false
        }
        self[keyPath: seen][name] = keyPath
        return true
    }

    mutating func readVFIOUser(_ t: TOMLTable, keyPath: String) {
        let socketPath = keyPath + ".socket"
        var socket: String?
        if let s = string(t, "socket", socketPath) {
            socket = vfioUserSocket(s, keyPath: socketPath, relativeTo: base)
        } else if t["socket"] == nil {
            issue(socketPath, "required (the path of the vfio-user server's listening socket)")
        }
        var dma: VFIOUserConfig.DMA? = .fd
        if let s = string(t, "dma", keyPath + ".dma") {
            dma = VFIOUserConfig.DMA(rawValue: s)
            if dma == nil { issue(keyPath + ".dma", "expected \"fd\" (guest RAM passed to the server) or \"message\" (every transfer checked by the VMM), got \"\(s)\"") }
        } else if t["dma"] != nil {
            dma = nil
        }
        let bars = readBARs(t, keyPath: keyPath + ".bars")
        if let socket, let dma, let bars {
            vfioUser.append(VFIOUserConfig(socket: socket, dma: dma, barAddresses: bars))
        }
    }

    /// A `--vfio-user` value, checked like a `socket` key.
    mutating func addVFIOUserOverride(_ s: String, relativeTo cwd: String) {
        vfioUserOverrides += 1
        if let socket = vfioUserSocket(s, keyPath: "--vfio-user", relativeTo: cwd) {
            vfioUser.append(VFIOUserConfig(socket: socket))
        }
    }

    /// The socket path made absolute, or nil after reporting why not
    /// (empty, too long for a UNIX socket address, named before).
    private mutating func vfioUserSocket(_ s: String, keyPath: String, relativeTo dir: String) -> String? {
        if let m = Check.nonEmptyPath(s) {
            issue(keyPath, m)
            return nil
        }
        let path = Paths.absolute(s, relativeTo: dir)
        guard path.utf8.count <= Schema.maxSocketPath else {
            issue(keyPath, "\(path) is \(path.utf8.count) bytes; a UNIX socket path holds at most \(Schema.maxSocketPath)")
            return nil
        }
        return claim(path, keyPath: keyPath, in: \.seenVFIOUser) ? path : nil
    }

    /// `bars = { 2 = 0x1000000000 }`: [:] when absent, nil after an issue.
    private mutating func readBARs(_ t: TOMLTable, keyPath: String) -> [Int: UInt64]? {
        guard let v = t["bars"] else { return [:] }
        guard v.type == .table, let table = v.table else {
            issue(keyPath, "expected a table of BAR index = guest address (e.g. bars = { 2 = 0x1000000000 }), "
                + "got \(Self.describe(v.type))")
            return nil
        }
        var bars: [Int: UInt64] = [:]
        var ok = true
        for key in Self.keys(of: table) {
            let entryPath = keyPath + "." + KeyPath.quote(key)
            var index: Int?
            switch Check.barIndex(key) {
            case let .success(n): index = n
            case let .failure(f): issue(entryPath, f.message); ok = false
            }
            guard let value = table[key] else { continue }
            guard value.type == .int, let n = value.int else {
                issue(entryPath, "expected an integer address (e.g. 0x1000000000), got \(Self.describe(value.type))")
                ok = false
                continue
            }
            switch Check.barAddress(n) {
            case let .success(a): if let index { bars[index] = a }
            case let .failure(f): issue(entryPath, f.message); ok = false
            }
        }
        return ok ? bars : nil
    }

    /// The boolean at `key`, or nil if absent or not a boolean (reported).
    mutating func bool(_ t: TOMLTable, _ key: String, _ keyPath: String) -> Bool? {
        guard let v = t[key] else { return nil }
        guard v.type == .bool, let b = v.bool else {
            issue(keyPath, "expected a boolean, got \(Self.describe(v.type))")
            return nil
        }
        return b
    }

    // MARK: Limits across entries

    /// Every virtio device and every assigned host device is a PCI
    /// function 0 on bus 0, and the root bus hands out slots 1...31
    /// (Sources/PCI/README.md, "Slots"). Reported once, on the first entry
    /// (disks, then nets, console, rng, passthrough devices from the file,
    /// then `--passthrough` ones, then the vIOMMU) that does not fit.
    mutating func checkPCISlots() {
        let nDisks = entryCounts["disk"] ?? 0
        let nNets = entryCounts["net"] ?? 0
        let hasConsole = virtioConsole != .off
        let nFilePassthrough = entryCounts["passthrough"] ?? 0
        let nPassthrough = nFilePassthrough + passthroughOverrides
        let nFileVFIOUser = entryCounts["vfio_user"] ?? 0
        let nVFIOUser = nFileVFIOUser + vfioUserOverrides
        let virtio = nDisks + nNets + (hasConsole ? 1 : 0) + (rng ? 1 : 0)
        let total = virtio + nPassthrough + nVFIOUser + (viommu != nil ? 1 : 0)
        guard total > Schema.pciSlots else { return }
        let first = Schema.pciSlots // 0-based index of the first device without a slot
        let keyPath: String
        if first < nDisks {
            keyPath = "disk[\(first)]"
        } else if first < nDisks + nNets {
            keyPath = "net[\(first - nDisks)]"
        } else if hasConsole && first == nDisks + nNets {
            keyPath = "console"
        } else if first < virtio {
            keyPath = "rng"
        } else if first - virtio < nFilePassthrough {
            keyPath = "passthrough[\(first - virtio)]"
        } else if first - virtio < nPassthrough {
            keyPath = "--passthrough"
        } else if first - virtio - nPassthrough < nFileVFIOUser {
            keyPath = "vfio_user[\(first - virtio - nPassthrough)]"
        } else if first - virtio - nPassthrough < nVFIOUser {
            keyPath = "--vfio-user"
        } else {
            keyPath = "viommu" // the vIOMMU goes after every other device
        }
        var parts: [String] = []
        if nDisks > 0 { parts.append("\(nDisks) disk\(nDisks == 1 ? "" : "s")") }
        if nNets > 0 { parts.append("\(nNets) net\(nNets == 1 ? "" : "s")") }
        if hasConsole { parts.append("the console") }
        if rng { parts.append("the rng") }
        if nPassthrough > 0 { parts.append("\(nPassthrough) passthrough device\(nPassthrough == 1 ? "" : "s")") }
        if nVFIOUser > 0 { parts.append("\(nVFIOUser) vfio-user device\(nVFIOUser == 1 ? "" : "s")") }
        if viommu != nil { parts.append("the vIOMMU") }
        let list = parts.count > 1 ? parts.dropLast().joined(separator: ", ") + " and " + parts[parts.count - 1] : parts.joined()
        issue(keyPath, "no PCI slot left: \(list) need \(total) slots, and PCI bus 0 has \(Schema.pciSlots)")
    }

    /// `machine.hugepages` maps RAM in 2 MiB pages, so RAM must be a
    /// multiple of 2 MiB (reported on `machine.memory` or `--memory`).
    mutating func checkHugePages() {
        guard hugePages, memoryBytes % Schema.hugePageSize != 0 else { return }
        issue(memoryKeyPath, "\(Units.formatSize(memoryBytes)) is not a multiple of "
            + "\(Units.formatSize(Schema.hugePageSize)), which machine.hugepages = true needs (2 MiB pages)")
    }

    // MARK: Files used twice

    /// Refuses a writable disk image used twice (two virtio-blk devices
    /// caching the same blocks corrupt it), two console outputs into one
    /// file, and an output file that is an input (it would be truncated).
    /// Paths are compared as written (made absolute); with `checkFiles`,
    /// existing files are compared by device and inode, which also catches
    /// symlinks and hard links.
    mutating func checkSharedFiles(checkFiles: Bool) {
        var firstWithID: [String: Int] = [:]
        for (i, d) in disks.enumerated() {
            let id = Self.identity(d.image.path, checkFiles: checkFiles)
            guard let j = firstWithID[id] else {
                firstWithID[id] = i
                continue
            }
            if !d.readOnly || !disks[j].readOnly {
                issue(d.image.keyPath, "same image as \(disks[j].image.keyPath); a disk that is written "
                    + "must not be shared (read_only = true on both to share it)")
            }
        }

        var outputs: [Located] = []
        if case let .file(p) = serial { outputs.append(Located(path: p, keyPath: "serial.path")) }
        if case let .file(p) = virtioConsole { outputs.append(Located(path: p, keyPath: "console.path")) }
        let inputs = [kernel, initramfs].compactMap { $0 } + disks.map(\.image)
        let inputIDs = inputs.map { Self.identity($0.path, checkFiles: checkFiles) }
        for (n, out) in outputs.enumerated() {
            let id = Self.identity(out.path, checkFiles: checkFiles)
            if let k = inputIDs.firstIndex(of: id) {
                issue(out.keyPath, "same file as \(inputs[k].keyPath), which would be truncated")
            } else if let earlier = outputs[..<n].first(where: { Self.identity($0.path, checkFiles: checkFiles) == id }) {
                issue(out.keyPath, "same file as \(earlier.keyPath)")
            }
        }
    }

    /// "dev:ino" of an existing file when `checkFiles`, else the path.
    private static func identity(_ path: String, checkFiles: Bool) -> String {
        guard checkFiles else { return path }
        guard let st = HostFiles.status(path) else { return path }
        return "\(st.device):\(st.inode)"
    }
}
