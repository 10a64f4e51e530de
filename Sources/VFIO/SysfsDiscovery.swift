import FoundationEssentials

/// A member of an IOMMU group and the driver it is bound to.
public struct GroupMember: Codable, Equatable, Sendable {
    public let bdf: String
    public let driver: String?
    public let isBridge: Bool

    public init(bdf: String, driver: String?, isBridge: Bool) {
        self.bdf = bdf
        self.driver = driver
        self.isBridge = isBridge
    }

    /// Drivers that may keep a group member while the group is assigned:
    /// VFIO's own, and those that set `driver_managed_dma` (pci-stub,
    /// pcieport for bridges), so the IOMMU core lets userspace own the group.
    public static let compatibleDrivers: Set<String> = ["vfio-pci", "pci-stub", "pcieport"]

    /// The group viability rule, member by member: bound to no driver, to a
    /// vfio driver (vfio-pci or a vendor variant `*-vfio-pci`), to pci-stub, or
    /// a PCI-to-PCI bridge (class 0x0604, whatever drives it). Anything else is
    /// a host driver doing DMA through the same IOMMU context as our device.
    public var allowsAssignment: Bool {
        guard let driver else { return true }
        return isBridge || Self.compatibleDrivers.contains(driver) || driver.hasSuffix("vfio-pci")
    }
}

/// The IOMMU a device sits behind, as sysfs shows it.
public struct HostIOMMU: Codable, Equatable, Sendable {
    /// `dmar0`, `ivhd0`, ...
    public let name: String
    public let info: IOMMUHardwareInfo
    /// Snoop control (VT-d ECAP.SC) or the equivalent; nil: unknown.
    public let canEnforceSnoop: Bool?
}

/// Everything `swiftvmm devices` says about one host PCI device.
public struct HostPCIDevice: Codable, Equatable, Sendable {
    public let bdf: String
    public let vendorID: UInt16?
    public let deviceID: UInt16?
    public let classCode: UInt32?
    public let driver: String?
    public let iommuGroup: Int?
    /// The other members of the group.
    public let groupPeers: [GroupMember]
    public let viable: Bool
    /// Why it is or is not assignable, with the fix.
    public let viability: String
    /// `/dev/vfio/devices/vfioN` when bound to vfio-pci on a cdev kernel.
    public let cdev: String?
    public let iommu: HostIOMMU?
    /// PCIe Device Control bit 11; nil when it could not be read.
    public let noSnoopEnabled: Bool?
    public let noSnoopNote: String?
    /// What assigning this device would do to the guest's WBINVD.
    public let wbinvdMustFlush: Bool
    public let wbinvd: String

    public var isBridge: Bool { classCode.map { $0 >> 8 == SysfsDiscovery.bridgeClass } ?? false }
}

/// Reads host PCI devices, IOMMU groups and IOMMUs from sysfs under `root`
/// (`/sys` on a real host; tests build a fake tree in a temporary directory).
/// Every value read is treated as untrusted text.
public struct SysfsDiscovery: Sendable {
    public let root: String
    /// Class code 0x0604xx: PCI-to-PCI bridge (PCI Code and ID Assignment 1.12, 1.7).
    static let bridgeClass: UInt32 = 0x0604

    public init(root: String = "/sys") {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
    }

    var devicesDir: String { "\(root)/bus/pci/devices" }
    func deviceDir(_ bdf: String) -> String { "\(devicesDir)/\(bdf)" }

    /// The BDFs of every PCI device, sorted.
    public func deviceAddresses() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: devicesDir)) ?? []).sorted()
    }

    /// Number of IOMMU groups the kernel made (`/sys/kernel/iommu_groups`).
    public func iommuGroupCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/kernel/iommu_groups")) ?? []).count
    }

    /// Every device, described.
    public func devices() -> [HostPCIDevice] { deviceAddresses().map { describe($0) } }

    // MARK: - Reading one device

    func text(_ path: String) -> String? {
        guard let d = FileManager.default.contents(atPath: path) else { return nil }
        let t = String(decoding: d, as: UTF8.self)
        guard let first = t.firstIndex(where: { !$0.isWhitespace }),
              let last = t.lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(t[first...last])
    }

    /// The last path component of a symlink's target (driver, iommu_group, iommu).
    func linkName(_ path: String) -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) else { return nil }
        return target.split(separator: "/").last.map(String.init)
    }

    static func parseHex(_ s: String?) -> UInt64? {
        guard var s = s?.lowercased() else { return nil }
        if s.hasPrefix("0x") { s.removeFirst(2) }
        guard !s.isEmpty, s.count <= 16 else { return nil }
        return UInt64(s, radix: 16)
    }

    public func driver(_ bdf: String) -> String? { linkName("\(deviceDir(bdf))/driver") }

    public func iommuGroup(_ bdf: String) -> Int? { linkName("\(deviceDir(bdf))/iommu_group").flatMap { Int($0) } }

    func classCode(_ bdf: String) -> UInt32? {
        Self.parseHex(text("\(deviceDir(bdf))/class")).flatMap { UInt32(exactly: $0) }
    }

    /// The other members of `bdf`'s group and their drivers.
    public func groupPeers(_ bdf: String) -> [GroupMember] {
        let dir = "\(deviceDir(bdf))/iommu_group/devices"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        return names.filter { $0 != bdf }.map { peer in
            GroupMember(
                bdf: peer,
                driver: linkName("\(dir)/\(peer)/driver"),
                isBridge: Self.parseHex(text("\(dir)/\(peer)/class")).map { $0 >> 8 == UInt64(Self.bridgeClass) } ?? false)
        }
    }

    /// `/dev/vfio/devices/vfioN` from `BDF/vfio-dev/vfioN`.
    public func cdev(_ bdf: String) -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(deviceDir(bdf))/vfio-dev")) ?? []
        guard let n = names.filter({ $0.hasPrefix("vfio") && Int($0.dropFirst(4)) != nil }).sorted().first else { return nil }
        return "/dev/vfio/devices/\(n)"
    }

    /// The PCI address of VFIO device cdev `path` (`/dev/vfio/devices/vfioN`):
    /// `/sys/class/vfio-dev/vfioN/device` links to the PCI device. Nil when
    /// the name is not `vfioN` or sysfs has no such cdev.
    public func bdf(forCdev path: String) -> String? {
        guard let name = path.split(separator: "/").last.map(String.init),
              name.hasPrefix("vfio"), name.count > 4, Int(name.dropFirst(4)) != nil,
              let bdf = linkName("\(root)/class/vfio-dev/\(name)/device"),
              FileManager.default.fileExists(atPath: deviceDir(bdf)) else { return nil }
        return bdf
    }

    /// The PCI address of the VFIO cdev whose device number is major:minor
    /// (a descriptor passed as "fd:N"): `/sys/dev/char/M:m` links to its
    /// `vfio-dev/vfioN`. Nil when that is not a VFIO cdev.
    public func bdf(forCharDevice major: UInt32, minor: UInt32) -> String? {
        guard let name = linkName("\(root)/dev/char/\(major):\(minor)") else { return nil }
        return bdf(forCdev: name)
    }

    /// "01:00.0" -> "0000:01:00.0" (domain 0 when omitted), lowercased;
    /// anything else is returned unchanged.
    public static func normalizeBDF(_ s: String) -> String {
        let t = s.lowercased()
        return t.split(separator: ":").count == 2 ? "0000:" + t : t
    }

    /// The IOMMU behind `bdf` (`BDF/iommu` -> `.../iommu/dmar0`), with its
    /// registers: VT-d publishes `intel-iommu/{cap,ecap}` in hex.
    public func iommu(_ bdf: String) -> HostIOMMU? {
        let link = "\(deviceDir(bdf))/iommu"
        guard let name = linkName(link) else { return nil }
        let info: IOMMUHardwareInfo
        if let ecap = Self.parseHex(text("\(link)/intel-iommu/ecap")) {
            let cap = Self.parseHex(text("\(link)/intel-iommu/cap")) ?? 0
            info = .intelVTd(flags: 0, capReg: cap, ecapReg: ecap)
        } else if FileManager.default.fileExists(atPath: "\(link)/amd-iommu") || name.hasPrefix("ivhd") {
            info = .amdVi
        } else {
            info = .none
        }
        return HostIOMMU(name: name, info: info, canEnforceSnoop: info.canEnforceSnoop)
    }

    /// The device's No Snoop bit from `BDF/config`.
    public func noSnoop(_ bdf: String) -> NoSnoopState {
        guard let d = FileManager.default.contents(atPath: "\(deviceDir(bdf))/config") else {
            return .unknown("cannot read \(deviceDir(bdf))/config")
        }
        return PCIConfigParser.noSnoop(config: [UInt8](d))
    }

    /// The commands that rebind `bdf` to vfio-pci.
    public func rebindCommands(_ bdf: String, currentDriver: String?) -> [String] {
        var c = ["echo vfio-pci > \(deviceDir(bdf))/driver_override"]
        if currentDriver != nil { c.append("echo \(bdf) > \(deviceDir(bdf))/driver/unbind") }
        c.append("echo \(bdf) > \(root)/bus/pci/drivers_probe")
        return c
    }

    /// Checks that `bdf` can be assigned now; the error says how to fix it.
    public func checkAssignable(_ bdf: String) throws -> HostPCIDevice {
        guard FileManager.default.fileExists(atPath: deviceDir(bdf)) else { throw VFIOError.deviceNotFound(bdf: bdf) }
        let group = iommuGroup(bdf)
        _ = try validate(bdf, group: group, driver: driver(bdf), peers: group == nil ? [] : groupPeers(bdf))
        return describe(bdf)
    }

    /// Everything known about `bdf`; never throws, records what it could not read.
    public func describe(_ bdf: String) -> HostPCIDevice {
        let dir = deviceDir(bdf)
        let drv = driver(bdf)
        let group = iommuGroup(bdf)
        let peers = group == nil ? [] : groupPeers(bdf)
        let mmu = iommu(bdf)
        let ns = noSnoop(bdf)
        let viable: Bool
        let why: String
        do {
            _ = try validate(bdf, group: group, driver: drv, peers: peers)
            viable = true
            why = "bound to \(drv ?? "vfio-pci"), group \(group.map(String.init) ?? "?") has no host-driver members"
        } catch {
            viable = false
            why = "\(error)"
        }
        let verdict = CoherencyVerdict.decide(
            iommu: mmu?.info ?? .none, hwptEnforcesCoherency: nil,
            deviceNoSnoopEnabled: ns.isEnabled ?? true)
        var note: String?
        if case let .unknown(r) = ns { note = r } else if ns == .noPCIeCapability { note = "conventional PCI device: no PCIe capability" }
        return HostPCIDevice(
            bdf: bdf,
            vendorID: Self.parseHex(text("\(dir)/vendor")).flatMap { UInt16(exactly: $0) },
            deviceID: Self.parseHex(text("\(dir)/device")).flatMap { UInt16(exactly: $0) },
            classCode: classCode(bdf),
            driver: drv,
            iommuGroup: group,
            groupPeers: peers,
            viable: viable,
            viability: why,
            cdev: cdev(bdf),
            iommu: mmu,
            noSnoopEnabled: ns.isEnabled,
            noSnoopNote: note,
            wbinvdMustFlush: verdict.mustFlush,
            wbinvd: verdict.text)
    }

    private func validate(_ bdf: String, group: Int?, driver drv: String?, peers: [GroupMember]) throws -> Bool {
        guard let group else { throw VFIOError.noIOMMUGroup(bdf: bdf) }
        guard drv == "vfio-pci" || (drv?.hasSuffix("vfio-pci") ?? false) else {
            throw VFIOError.notBoundToVFIO(bdf: bdf, driver: drv, commands: rebindCommands(bdf, currentDriver: drv))
        }
        let blockers = peers.filter { !$0.allowsAssignment }
        guard blockers.isEmpty else { throw VFIOError.groupNotViable(bdf: bdf, group: group, blockers: blockers) }
        guard cdev(bdf) != nil else { throw VFIOError.noCdev(bdf: bdf) }
        return true
    }
}
